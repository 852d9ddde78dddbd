/**
 * The machine's ceiling for a farm that starts one process per job: how many `true` processes
 * per second `procs` Node processes (the slaves) can start and reap, `concurrent` at once each,
 * with the slave's spawn options (own process group, stdout and stderr piped), by child_process
 * (`node`, the default) or the slave's native spawner (`native`, native/spawn.c). Nothing else
 * runs: no RPC, no store, no files. Started by bench/jobs/run.ts with IPC:
 *   node dist/bench/jobs/spawn-ceiling.js <count> <concurrent> [node|native]
 * Sends {ready: true}, waits for {go: true} (so Node's start-up is not counted), runs, then sends
 * {done: true, ms}. Exits after that.
 */
import { spawn } from 'node:child_process';
import { nativeSpawn } from '../../slave/executor/native-spawn.js';

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

function once(spawner: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (spawner === 'native') {
      // The attempt ends when the process has exited and both pipes are closed, as in the slave.
      let left = 3;
      const step = (): void => {
        if (--left === 0) resolve();
      };
      const c = nativeSpawn('true', [], { cwd: process.cwd(), env });
      c.stdout.resume();
      c.stderr.resume();
      c.stdout.once('close', step);
      c.stderr.once('close', step);
      c.once('exit', step);
      return;
    }
    const c = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    c.stdout.resume();
    c.stderr.resume();
    c.once('error', reject);
    c.once('close', () => resolve());
  });
}

async function run(count: number, concurrent: number, spawner: string): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrent }, async () => {
      while (next < count) {
        next++;
        await once(spawner);
      }
    }),
  );
  return performance.now() - t0;
}

const [count, concurrent] = process.argv.slice(2, 4).map(Number);
const spawner = process.argv[4] ?? 'node';
if (!Number.isSafeInteger(count) || !Number.isSafeInteger(concurrent) || count! < 1 || concurrent! < 1 || (spawner !== 'node' && spawner !== 'native')) {
  process.stderr.write('usage: spawn-ceiling <count> <concurrent> [node|native]\n');
  process.exit(2);
}
process.once('message', (m: { go?: boolean }) => {
  if (m.go !== true) return;
  run(count!, concurrent!, spawner).then(
    (ms) => process.send?.({ done: true, ms }, () => process.exit(0)),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(1);
    },
  );
});
process.send?.({ ready: true });
