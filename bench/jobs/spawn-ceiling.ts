/**
 * The machine's ceiling for a farm that starts one process per job: how many `true` processes
 * per second `procs` Node processes (the slaves) can start and reap, `concurrent` at once each,
 * with the slave's spawn options (own process group, stdout and stderr piped). Nothing else runs:
 * no RPC, no store, no files. Started by bench/jobs/run.ts with IPC:
 *   node dist/bench/jobs/spawn-ceiling.js <count> <concurrent>
 * Sends {ready: true}, waits for {go: true} (so Node's start-up is not counted), runs, then sends
 * {done: true, ms}. Exits after that.
 */
import { spawn } from 'node:child_process';

function once(): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    c.stdout.resume();
    c.stderr.resume();
    c.once('error', reject);
    c.once('close', () => resolve());
  });
}

async function run(count: number, concurrent: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrent }, async () => {
      while (next < count) {
        next++;
        await once();
      }
    }),
  );
  return performance.now() - t0;
}

const [count, concurrent] = process.argv.slice(2).map(Number);
if (!Number.isSafeInteger(count) || !Number.isSafeInteger(concurrent) || count! < 1 || concurrent! < 1) {
  process.stderr.write('usage: spawn-ceiling <count> <concurrent>\n');
  process.exit(2);
}
process.once('message', (m: { go?: boolean }) => {
  if (m.go !== true) return;
  run(count!, concurrent!).then(
    (ms) => process.send?.({ done: true, ms }, () => process.exit(0)),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(1);
    },
  );
});
process.send?.({ ready: true });
