/**
 * Master store and scheduler micro-benchmarks (no network):
 *   node dist/bench/master/store-bench.js [--jobs 20000] [--sync FULL|NORMAL|both]
 *
 * 1. store: N jobs x 4 durable transitions (create, dispatch, start, finish), 256 jobs in flight.
 * 2. pipeline: N no-op jobs through store + scheduler with simulated slaves (every transition
 *    durable before the next step), as the master will drive them.
 * 3. dispatch latency on an idle farm: one job at a time, from "queued" durable to "dispatched" durable.
 * 4. scheduler: cost of one finish + one submit (each dispatching one job) with 100 and 100,000 queued.
 */
import { parseArgs } from 'node:util';
import { Scheduler, schedJobOf, type Assignment } from '../../master/scheduler/index.js';
import { type NewJob } from '../../master/store/index.js';
import { runStoreJobs, withTempStore } from '../jobs/store-ceiling.js';

const { values } = parseArgs({ options: { jobs: { type: 'string', default: '20000' }, sync: { type: 'string', default: 'both' } } });
const N = Number(values.jobs);
const syncs = values.sync === 'both' ? (['FULL', 'NORMAL'] as const) : ([values.sync] as ['FULL' | 'NORMAL']);
const noop = (i: number): NewJob => ({ name: `noop-${i}`, channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } });

async function storeOnly(sync: 'FULL' | 'NORMAL'): Promise<void> {
  await withTempStore(sync, async (s) => {
    const r = await runStoreJobs(s, N, 256);
    console.log(`store ${sync}: ${N} jobs x 4 transitions in ${r.ms} ms = ${((4 * N * 1000) / r.ms).toFixed(0)} transitions/s, ${r.jobsPerS} jobs/s; ${r.commits} commits (${((4 * N) / r.commits).toFixed(0)} writes/commit)`);
  });
}

async function pipeline(sync: 'FULL' | 'NORMAL'): Promise<void> {
  await withTempStore(sync, async (store) => {
    const sched = new Scheduler();
    const SLAVES = 4;
    const CAP = 64;
    let done = 0;
    let resolveAll: () => void;
    const all = new Promise<void>((r) => (resolveAll = r));
    const run = async (a: Assignment): Promise<void> => {
      const d = await store.dispatchJob(a.jobId, a.slave);
      if (!d.ok) throw new Error('dispatch refused');
      // The simulated slave accepts and the no-op ends at once.
      await store.startJob(a.jobId, d.job.attempt);
      sched.jobStarted(a.jobId);
      await store.finishJob(a.jobId, d.job.attempt, { state: 'succeeded', exitCode: 0 });
      const r = sched.jobFinished(a.jobId);
      for (const x of r.assignments) void run(x);
      if (++done === N) resolveAll();
    };
    for (let i = 0; i < SLAVES; i++) sched.slaveConnected({ name: `w${i}`, channels: ['stable'], arches: ['x86_64'], capacity: CAP });
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const j = await store.createJob(noop(i));
        for (const a of sched.jobQueued(schedJobOf(j))) void run(a);
      }),
    );
    await all;
    const ms = performance.now() - t0;
    console.log(`pipeline ${sync}: ${N} no-op jobs through store + scheduler (${SLAVES} slaves x ${CAP} slots) in ${ms.toFixed(0)} ms = ${((N * 1000) / ms).toFixed(0)} jobs/s, ${store.commits} commits`);
  });
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function idleLatency(sync: 'FULL' | 'NORMAL'): Promise<void> {
  await withTempStore(sync, async (store) => {
    const sched = new Scheduler();
    sched.slaveConnected({ name: 'w1', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
    const lat: number[] = [];
    const decide: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const j = await store.createJob(noop(i));
      const t0 = performance.now();
      const [a] = sched.jobQueued({ id: j.id, channel: j.channel, arch: j.arch, slots: 1, priority: 0 });
      decide.push(performance.now() - t0);
      const d = await store.dispatchJob(a!.jobId, a!.slave);
      lat.push(performance.now() - t0);
      await store.startJob(j.id, d.ok ? d.job.attempt : 1);
      await store.finishJob(j.id, 1, { state: 'succeeded' });
      sched.jobFinished(j.id);
    }
    console.log(
      `idle dispatch ${sync}: queued-durable -> dispatched-durable p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms; scheduler decision p99 ${(pct(decide, 99) * 1000).toFixed(1)} us`,
    );
  });
}

function schedulerCost(queued: number): void {
  const sched = new Scheduler();
  const channels = ['stable', 'testing', 'nightly'];
  const arches = ['x86_64', 'aarch64', 'any'];
  let id = 1;
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const mk = () => ({ id: id++, channel: channels[rnd(3)]!, arch: arches[rnd(3)]!, slots: 1 + rnd(4), priority: rnd(5) });
  const running: number[] = [];
  for (let i = 0; i < 20; i++) {
    for (const a of sched.slaveConnected({ name: `w${i}`, channels, arches: ['x86_64', 'aarch64'], capacity: 16 })) running.push(a.jobId);
  }
  const initial = Array.from({ length: queued + 400 }, mk);
  for (const a of sched.jobsQueued(initial)) running.push(a.jobId);
  const OPS = 20_000;
  const t0 = performance.now();
  for (let i = 0; i < OPS; i++) {
    const k = rnd(running.length);
    const done = running[k]!;
    running[k] = running[running.length - 1]!;
    running.pop();
    for (const a of sched.jobFinished(done).assignments) running.push(a.jobId);
    for (const a of sched.jobQueued(mk())) running.push(a.jobId);
  }
  const us = ((performance.now() - t0) * 1000) / OPS;
  console.log(`scheduler: ${sched.queuedCount} queued, 20 slaves x 16 slots, 9 classes: ${us.toFixed(1)} us per finish+submit (each dispatching)`);
}

for (const sync of syncs) {
  await storeOnly(sync);
  await pipeline(sync);
  await idleLatency(sync);
}
schedulerCost(100);
schedulerCost(100_000);
