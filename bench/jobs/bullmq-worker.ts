/**
 * The BullMQ side of bench/jobs: one process running N concurrent jobs, the queue a Node user
 * picks. Started by bench/jobs/run.ts with IPC:
 *   node dist/bench/jobs/bullmq-worker.js <redis port> <queue> <concurrency> <noop|spawn> [workers]
 * `workers` (default 1) Worker instances, each with its own Redis connections, share the
 * `concurrency` slots evenly (BullMQ's `concurrency` option): 1 is one Worker running N jobs at
 * once; N is N Workers of one job each (the "50 concurrent workers", read literally).
 * `noop`: the processor returns at once. `spawn`: it runs `true` as a child process and waits
 * for it (what a Builder slave does for a no-op job). Sends {ready} once the worker runs, then
 * {completed: n, at} every time `n` reaches a count the parent asked for with {notifyAt: n}.
 */
import { spawn } from 'node:child_process';
import { Worker } from 'bullmq';

const [portArg, queue, concArg, mode, workersArg] = process.argv.slice(2);
const port = Number(portArg);
const concurrency = Number(concArg);
const workers = Number(workersArg ?? 1);
if (
  !queue ||
  !Number.isInteger(port) ||
  !Number.isInteger(concurrency) ||
  (mode !== 'noop' && mode !== 'spawn') ||
  !Number.isInteger(workers) ||
  workers < 1 ||
  concurrency % workers !== 0
) {
  process.stderr.write('usage: bullmq-worker <port> <queue> <concurrency> <noop|spawn> [workers dividing concurrency]\n');
  process.exit(2);
}

function runTrue(): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn('true', [], { stdio: 'ignore' });
    c.once('error', reject);
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`true exited ${String(code)}`))));
  });
}

let completed = 0;
let notifyAt = Infinity;
const processor = mode === 'noop' ? async () => null : async () => runTrue().then(() => null);
const all = Array.from({ length: workers }, () => {
  const worker = new Worker(queue, processor, { connection: { host: '127.0.0.1', port, maxRetriesPerRequest: null }, concurrency: concurrency / workers });
  worker.on('completed', () => {
    completed++;
    if (completed === notifyAt) process.send?.({ completed, at: Date.now() });
  });
  worker.on('error', (e) => process.stderr.write(`worker error: ${e.message}\n`));
  return worker;
});
process.on('message', (m: { notifyAt?: number }) => {
  if (typeof m.notifyAt === 'number') {
    notifyAt = m.notifyAt;
    if (completed >= notifyAt) process.send?.({ completed, at: Date.now() });
  }
});
const stop = () => {
  Promise.all(all.map((w) => w.close())).then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', stop);
process.once('disconnect', stop);
Promise.all(all.map((w) => w.waitUntilReady())).then(
  () => process.send?.({ ready: true }),
  (e: unknown) => {
    process.stderr.write(`worker: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
