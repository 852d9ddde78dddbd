/**
 * The ceiling of durable job transitions on this machine: no network, no TLS, no RPC, no
 * scheduler, only the master's store (MasterStore, synchronous=FULL, its group commits) running
 * each job's four writes in turn (created, dispatched, running, succeeded), `width` jobs at a
 * time. No farm that keeps every transition in this store can run no-op jobs faster here.
 *
 *   node dist/bench/jobs/store-ceiling.js [jobs=20000] [width=256]
 *
 * Prints (or, started with IPC by bench/jobs/run.ts, sends) {jobs, width, ms, jobsPerS, commits,
 * cpuUsPerJob} (CPU of this process, all threads: node-sqlite3 runs SQLite on libuv's workers).
 * bench/master/store-bench.ts runs the same loop ({@link runStoreJobs}).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MasterStore, type NewJob } from '../../master/store/index.js';

const noop = (i: number): NewJob => ({ name: `noop-${i}`, channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } });

export interface StoreRun {
  jobs: number;
  width: number;
  ms: number;
  jobsPerS: number;
  commits: number;
  cpuUsPerJob: number;
}

/** `n` jobs through `store`, each created, dispatched, started and finished, `width` at a time. */
export async function runStoreJobs(store: MasterStore, n: number, width: number): Promise<StoreRun> {
  let next = 0;
  const c0 = store.commits;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) {
        const j = await store.createJob(noop(next++));
        const d = await store.dispatchJob(j.id, 'w1');
        if (!d.ok) throw new Error(`dispatch of job ${j.id} refused`);
        await store.startJob(j.id, d.job.attempt);
        await store.finishJob(j.id, d.job.attempt, { state: 'succeeded', exitCode: 0 });
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { jobs: n, width, ms: Math.round(ms), jobsPerS: Math.round((n * 1000) / ms), commits: store.commits - c0, cpuUsPerJob: Math.round((cpu.user + cpu.system) / n) };
}

/** A fresh store in a temporary directory for `f`, removed after it. */
export async function withTempStore<T>(synchronous: 'FULL' | 'NORMAL', f: (s: MasterStore) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'builder-bench-store-'));
  const s = await MasterStore.open({ dir, synchronous });
  try {
    return await f(s);
  } finally {
    await s.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const n = Number(process.argv[2] ?? 20_000);
  const width = Number(process.argv[3] ?? 256);
  if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(width) || width < 1) {
    process.stderr.write('usage: store-ceiling [jobs] [width]\n');
    process.exit(2);
  }
  const r = await withTempStore('FULL', (s) => runStoreJobs(s, n, width));
  if (process.send) process.send(r);
  else process.stdout.write(`${JSON.stringify(r)}\n`);
  process.disconnect?.();
}
