/**
 * End-to-end job benchmark of issue 3, Builder side by side with BullMQ in the same run:
 *
 *   npm run build && node dist/bench/jobs/run.js [--jobs 20000] [--slaves 10] [--capacity 5]
 *     [--latency 200] [--queued 100000] [--sim-slaves 1000] [--skip ceiling,floor,store,builder,dispatch,bullmq,sim,queued]
 *     [--out bench/jobs/results.json] [--latency-gap 50] [--settle 20]
 *
 * Idle latency is measured twice, Builder and floor alike: back to back (the next job submitted
 * as the last one ended), and after `--latency-gap` ms of idleness before each submit (the
 * farm's processes and the CPUs have gone quiet: "cold"; 0 skips it). Standalone floor:
 * `node dist/bench/jobs/latency-floor.js [count] [gapMs]`. In the environment, BENCH_SLAVE_ARGS
 * adds `slave run` flags (e.g. `--spawner node`); BENCH_NODE_ARGS passes node flags to master and
 * slaves (e.g. "--cpu-prof --cpu-prof-dir=DIR": they are then stopped with SIGTERM, so that they
 * write their profiles); BENCH_KEEP_DIR=1 keeps the farm's dir (the processes' output, e.g. of
 * --trace-gc) and prints where it is.
 *
 * Builder: a real `master run` and `--slaves` real `slave run` processes of `--capacity` slots
 * (10 x 5 = 50 jobs at once), through the bins as an operator starts them (test/helpers/
 * process-farm.ts), on 127.0.0.1 with mutual TLS. A no-op job is `argv: ['true']`: the slave
 * makes a work dir, starts the process in its own group, streams the (empty) log and reports.
 * 1. idle RSS of the master and of each slave;
 * 2. dispatch latency on an idle farm: one job at a time, queued -> running (the master's own
 *    createdAt and startedAt: startedAt is when the slave accepted the assignment), the client
 *    following each job to its end as `builder observe` does;
 * 3. throughput: `--jobs` jobs submitted by one client with 256 in flight, until every one has
 *    ended (client clock at the first submit to the master's latest endedAt);
 * 4. master RSS with `--queued` jobs queued (a channel no slave serves), and the idle-farm
 *    latency again with that queue;
 * 5. the master alone (phase `dispatch`): a fresh master and one simulated slave process holding
 *    `--slaves` connections of `--capacity` slots that run each job as a no-op taking no time
 *    (bench/jobs/sim-slaves.ts --run): the same latency and throughput measures, with no process
 *    started;
 * 6. a fresh master with `--sim-slaves` slave connections (one simulated process,
 *    bench/jobs/sim-slaves.ts): master RSS.
 * Before Builder, the floor of that latency on this machine: the same path (durable insert,
 * assignment, acceptance, spawn) through the bare parts (latency-floor.ts); and the ceiling of
 * durable transitions: the same number of jobs through the master's store alone, no network
 * (store-ceiling.ts), at the farm's slots and at the submitter's width.
 * BullMQ (devDependency, the queue a Node user picks) on a local redis-server (Debian package,
 * started here on a free port, stopped by pid; no persistence, its usual set-up): the same
 * number of jobs through one Worker with concurrency slots x capacity, producer with 256 adds in
 * flight; a no-op processor, then one that spawns `true` per job (what the Builder slave does).
 * Also no-op: slots x capacity Workers of one slot each (the issue's "50 concurrent workers",
 * read literally), and one Worker on a second redis-server with `appendfsync always` (every
 * write fsynced before redis answers: BullMQ with every transition durable).
 * Latency: processedOn - timestamp of one job at a time on an idle queue.
 */
import { spawn, fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { PkiRegistry, generateRsaKeyPair, loadCa, signPeer } from '../../pki/index.js';
import { latencyFloor } from './latency-floor.js';
import { FINAL_STATES, ProcessFarm, freePort, sleep, waitFor, type JobView } from '../../test/helpers/process-farm.js';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '20000' },
    slaves: { type: 'string', default: '10' },
    capacity: { type: 'string', default: '5' },
    latency: { type: 'string', default: '200' },
    queued: { type: 'string', default: '100000' },
    'sim-slaves': { type: 'string', default: '1000' },
    skip: { type: 'string', default: '' },
    out: { type: 'string', default: 'bench/jobs/results.json' },
    'in-flight': { type: 'string', default: '256' },
    /** Seconds of idleness before the "settled" RSS figures (V8 shrinks its heap after ~10 s idle). */
    settle: { type: 'string', default: '20' },
    /** Milliseconds between one latency job's end and the next submit (0: back to back). */
    'latency-gap': { type: 'string', default: '50' },
  },
});
const N = Number(values.jobs);
const SLAVES = Number(values.slaves);
const CAPACITY = Number(values.capacity);
const LATENCY = Number(values.latency);
const QUEUED = Number(values.queued);
const SIM = Number(values['sim-slaves']);
const IN_FLIGHT = Number(values['in-flight']);
const SETTLE_MS = Number(values.settle) * 1000;
const LATENCY_GAP_MS = Number(values['latency-gap']);
const skip = new Set(values.skip.split(',').filter(Boolean));
const here = fileURLToPath(new URL('.', import.meta.url));
/** What to end if the run is interrupted. */
const cleanups = new Set<() => Promise<void>>();

/** Runs `f` with `cleanup` registered for an interrupt, and always runs `cleanup` after it. */
async function guarded<T>(cleanup: () => Promise<void>, f: () => Promise<T>): Promise<T> {
  cleanups.add(cleanup);
  try {
    return await f();
  } finally {
    cleanups.delete(cleanup);
    await cleanup();
  }
}

/** Resident set size of a process, in MiB (VmRSS). */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : NaN;
}

/** CPU time of a process in ms: its own (user, system) and that of its reaped children (the jobs' processes). USER_HZ is 100 on Linux. */
function cpuMs(pid: number): { user: number; system: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3 (state).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const tick = 10;
  return { user: f[11]! * tick, system: f[12]! * tick, children: (f[13]! + f[14]!) * tick };
}

function cpuOf(pids: number[]): { user: number; system: number; children: number } {
  const t = { user: 0, system: 0, children: 0 };
  for (const pid of pids) {
    const c = cpuMs(pid);
    t.user += c.user;
    t.system += c.system;
    t.children += c.children;
  }
  return t;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function summary(xs: number[]): { n: number; p50: number; p99: number; max: number; mean: number } {
  const s = [...xs].sort((a, b) => a - b);
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return { n: s.length, p50: r2(pct(s, 50)), p99: r2(pct(s, 99)), max: r2(s.at(-1) ?? NaN), mean: r2(s.reduce((a, b) => a + b, 0) / (s.length || 1)) };
}

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Runs `f(i)` for i in [0, n) with `width` in flight. */
async function pool(n: number, width: number, f: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) await f(next++);
    }),
  );
}

function waitMessage<T>(child: ChildProcess, pred: (m: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    const onMsg = (m: T) => {
      if (!pred(m)) return;
      clearTimeout(t);
      child.off('message', onMsg);
      child.off('exit', onExit);
      resolve(m);
    };
    const onExit = (code: number | null) => {
      clearTimeout(t);
      reject(new Error(`${what}: process exited with ${String(code)}`));
    };
    child.on('message', onMsg);
    child.once('exit', onExit);
  });
}

function stopChild(c: ChildProcess | undefined): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    c.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    process.kill(c.pid!, 'SIGTERM');
  });
}

const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100) },
  params: { jobs: N, slaves: SLAVES, capacity: CAPACITY, latencySamples: LATENCY, queued: QUEUED, simSlaves: SIM, submitInFlight: IN_FLIGHT },
};

/** Every job with id in [first, last], via job.list pages (newest first). */
async function listRange(farm: ProcessFarm, first: number, last: number): Promise<JobView[]> {
  const out: JobView[] = [];
  let beforeId = last + 1;
  while (beforeId > first) {
    const { jobs } = await farm.call('job.list', { limit: 10_000, beforeId }, { timeoutMs: 120_000 });
    if (jobs.length === 0) break;
    for (const j of jobs) if (j.id >= first && j.id <= last) out.push(j);
    beforeId = jobs.at(-1)!.id;
  }
  return out;
}

async function builderLatency(farm: ProcessFarm, n: number, channel = 'main', gapMs = 0): Promise<{ queuedToRunning: ReturnType<typeof summary>; queuedToDispatched: ReturnType<typeof summary>; endToEnd: ReturnType<typeof summary> }> {
  const run: number[] = [];
  const disp: number[] = [];
  const e2e: number[] = [];
  for (let i = 0; i < n; i++) {
    if (gapMs > 0) await sleep(gapMs);
    const t0 = Date.now();
    const j = await farm.submit({ name: 'latency', channel, command: { kind: 'argv', argv: ['true'] } });
    // Followed as `builder observe` does (log.read's long poll), not by polling job.get: a poll
    // every 2 ms kept the master busy while it dispatched (a client's load, not the farm's).
    for (let fromSeq = 1; ; ) {
      const r = await farm.call('log.read', { jobId: j.id, fromSeq, waitMs: 30_000 }, { timeoutMs: 35_000 });
      if (r.ended) break;
      fromSeq = r.nextSeq;
    }
    const d = await waitFor(`latency job ${j.id}`, async () => {
      const g = await farm.getJob(j.id);
      return FINAL_STATES.includes(g.job.state) ? g : undefined;
    }, 30_000, 2);
    if (d.job.state !== 'succeeded') throw new Error(`latency job ${j.id}: ${d.job.state} ${String(d.job.reason)}`);
    run.push(d.job.startedAt! - d.job.createdAt);
    disp.push(d.job.dispatchedAt! - d.job.createdAt);
    e2e.push(Date.now() - t0);
  }
  return { queuedToRunning: summary(run), queuedToDispatched: summary(disp), endToEnd: summary(e2e) };
}

/** Warm-up, then the idle latency one job at a time: back to back, and after LATENCY_GAP_MS of idleness. */
async function idleLatency(farm: ProcessFarm, out: Record<string, unknown>, phase: string): Promise<void> {
  await builderLatency(farm, 20);
  out.latencyIdleMs = await builderLatency(farm, LATENCY);
  log(`${phase}: idle latency ${JSON.stringify(out.latencyIdleMs)}`);
  if (LATENCY_GAP_MS > 0) {
    out.latencyGapMs = LATENCY_GAP_MS;
    out.latencyIdleAfterGapMs = await builderLatency(farm, LATENCY, 'main', LATENCY_GAP_MS);
    log(`${phase}: idle latency after ${LATENCY_GAP_MS} ms idle ${JSON.stringify(out.latencyIdleAfterGapMs)}`);
  }
}

/**
 * `N` no-op jobs submitted by one client with IN_FLIGHT in flight, until every one has ended
 * (client clock at the first submit to the master's latest endedAt), with the CPU per job of the
 * master and of `slavePids` (and of the jobs' processes they reaped).
 */
async function throughput(farm: ProcessFarm, slavePids: number[]): Promise<Record<string, unknown>> {
  const cpu0 = { master: cpuMs(farm.master.pid), slaves: cpuOf(slavePids), client: process.cpuUsage() };
  const ids: number[] = new Array<number>(N);
  const t0 = Date.now();
  await pool(N, IN_FLIGHT, async (i) => {
    ids[i] = (await farm.submit({ name: 'noop', channel: 'main', command: { kind: 'argv', argv: ['true'] } })).id;
  });
  const submitMs = Date.now() - t0;
  const first = Math.min(...ids);
  const last = Math.max(...ids);
  await waitFor('the last job to end', async () => FINAL_STATES.includes((await farm.getJob(last)).job.state), 600_000, 50);
  let jobs = await listRange(farm, first, last);
  await waitFor(`all ${N} jobs to end`, async () => {
    if (jobs.every((j) => FINAL_STATES.includes(j.state))) return true;
    jobs = await listRange(farm, first, last);
    return jobs.every((j) => FINAL_STATES.includes(j.state));
  }, 600_000, 500);
  const endAt = Math.max(...jobs.map((j) => j.endedAt ?? 0));
  const states: Record<string, number> = {};
  for (const j of jobs) states[j.state] = (states[j.state] ?? 0) + 1;
  const attempts = jobs.reduce((a, j) => a + j.attempt, 0);
  const totalMs = endAt - t0;
  // CPU per job over the whole run (submits and the client's polling included for the master).
  const m = cpuMs(farm.master.pid);
  const sl = cpuOf(slavePids);
  const cl = process.cpuUsage(cpu0.client);
  const r2 = (x: number) => Math.round((x / N) * 100) / 100;
  return {
    jobs: jobs.length,
    states,
    attempts,
    submitMs,
    submitPerS: Math.round((N / submitMs) * 1000),
    totalMs,
    jobsPerS: Math.round((N / totalMs) * 1000),
    queuedToRunningMs: summary(jobs.map((j) => (j.startedAt ?? NaN) - j.createdAt)),
    cpuMsPerJob: {
      master: r2(m.user + m.system - cpu0.master.user - cpu0.master.system),
      slaves: r2(sl.user + sl.system - cpu0.slaves.user - cpu0.slaves.system),
      slavesUser: r2(sl.user - cpu0.slaves.user),
      slavesSystem: r2(sl.system - cpu0.slaves.system),
      jobProcesses: r2(sl.children - cpu0.slaves.children),
      // This process: the submitting client and its polling (microseconds -> ms).
      client: r2((cl.user + cl.system) / 1000),
    },
  };
}

/**
 * Slave certificates for `count` simulated slaves named `${prefix}-${i}` (one key pair, a
 * certificate per name: issuing 1,000 RSA keys would take minutes), written to `dir`/ids.json
 * for sim-slaves.ts. Returns the file.
 */
async function simIdentities(farm: ProcessFarm, count: number, prefix: string, dir: string): Promise<string> {
  const keys = await generateRsaKeyPair();
  const ca = await loadCa(farm.masterDir);
  const reg = await PkiRegistry.open(ca.paths.registry);
  const slaves: Array<{ name: string; cert: string }> = [];
  try {
    for (let i = 0; i < count; i++) {
      const name = `${prefix}-${i}`;
      slaves.push({ name, cert: (await signPeer(ca, reg, { name, role: 'slave', publicKeyPem: keys.publicKeyPem })).certPem });
    }
  } finally {
    await reg.close();
  }
  const file = join(dir, 'ids.json');
  await writeFile(file, JSON.stringify({ ca: ca.certPem, key: keys.privateKeyPem, slaves }));
  return file;
}

/**
 * The master alone (issue 3: "10 slave connections of capacity 5; a simulated slave process may
 * hold many connections"): a fresh `master run` and one simulated slave process holding SLAVES
 * connections of CAPACITY slots that run each job as a no-op taking no time (sim-slaves.ts
 * --run). The same latency and throughput measures as with real slaves; what they show is the
 * master's and the wire's cost per job, every transition durable, with no process started.
 * The figure to hold against BullMQ's no-op processor.
 */
async function masterAlone(): Promise<void> {
  log(`dispatch: fresh master, one simulated slave process with ${SLAVES} connections x ${CAPACITY} slots running no-op jobs`);
  const farm = await ProcessFarm.start({ logLevel: 'warn', nodeArgs: process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) });
  let child: ChildProcess | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'builder-bench-dispatch-'));
  const out: Record<string, unknown> = {};
  results.masterAlone = out;
  const cleanup = async () => {
    await stopChild(child);
    if (process.env.BENCH_NODE_ARGS) await farm.stopMaster();
    await farm.stop();
    await rm(dir, { recursive: true, force: true });
  };
  await guarded(cleanup, async () => {
    const file = await simIdentities(farm, SLAVES, 'run', dir);
    child = fork(join(here, 'sim-slaves.js'), [file, farm.masterAddress, '--run', '--channel', 'main', '--capacity', String(CAPACITY)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const r = await waitMessage<{ connected: number; failed: number }>(child, (m) => typeof m.connected === 'number', 60_000, 'simulated slaves');
    if (r.connected !== SLAVES) throw new Error(`only ${r.connected} of ${SLAVES} simulated slaves connected`);
    await sleep(SETTLE_MS);
    await idleLatency(farm, out, 'dispatch');
    out.throughput = await throughput(farm, [child.pid!]);
    const c = child;
    const counted = waitMessage<{ finished: number; finishErrors: number }>(c, (m) => typeof m.finished === 'number', 10_000, 'simulated slave counts');
    c.send({ count: true });
    out.simulated = await counted;
    out.masterRssAfterThroughputMiB = rssMiB(farm.master.pid);
    log(`dispatch: throughput ${JSON.stringify(out.throughput)} ${JSON.stringify(out.simulated)}`);
  });
}

async function builder(): Promise<void> {
  log(`builder: master + ${SLAVES} slave processes x ${CAPACITY} slots`);
  // BENCH_NODE_ARGS: node flags for master and slaves (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
  const farm = await ProcessFarm.start({ logLevel: 'warn', nodeArgs: process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) });
  const out: Record<string, unknown> = {};
  results.builder = out;
  // Profiles (--cpu-prof) are written only by a process that exits: SIGTERM first, then the rest.
  const stop = async (): Promise<void> => {
    if (process.env.BENCH_NODE_ARGS) {
      await Promise.all([...farm.slaves.values()].map((sl) => sl.stop('SIGTERM')));
      await farm.stopMaster();
    }
    const keep = process.env.BENCH_KEEP_DIR === '1';
    await farm.stop(keep);
    if (keep) log(`farm dir kept: ${farm.root}`);
  };
  await guarded(stop, async () => {
    await sleep(2000);
    out.masterRssIdleNoSlavesMiB = rssMiB(farm.master.pid);
    // BENCH_SLAVE_ARGS: more `slave run` flags (e.g. "--spawner node" to compare the spawners).
    const slaveArgs = process.env.BENCH_SLAVE_ARGS?.split(' ').filter(Boolean) ?? [];
    out.slaveArgs = slaveArgs;
    for (let i = 0; i < SLAVES; i++) await farm.addSlave({ name: `bench-${i}`, capacity: CAPACITY, enroll: 'direct', channels: ['main'], arches: ['x86_64'], args: slaveArgs });
    await sleep(3000);
    out.masterRssIdleMiB = rssMiB(farm.master.pid);
    const slaveRss = [...farm.slaves.values()].map((s) => rssMiB(s.pid));
    out.slaveRssIdleMiB = { max: Math.max(...slaveRss), min: Math.min(...slaveRss) };
    log(`builder: idle RSS master ${String(out.masterRssIdleMiB)} MiB, slaves ${JSON.stringify(out.slaveRssIdleMiB)}`);
    // The same processes after SETTLE_MS more of idleness: what an idle farm holds once V8's
    // memory reducer has shrunk the heaps grown while starting (both figures are reported).
    await sleep(SETTLE_MS);
    out.settleS = SETTLE_MS / 1000;
    out.masterRssSettledMiB = rssMiB(farm.master.pid);
    const slaveSettled = [...farm.slaves.values()].map((s) => rssMiB(s.pid));
    out.slaveRssSettledMiB = { max: Math.max(...slaveSettled), min: Math.min(...slaveSettled) };
    log(`builder: idle RSS settled (${String(out.settleS)} s more) master ${String(out.masterRssSettledMiB)} MiB, slaves ${JSON.stringify(out.slaveRssSettledMiB)}`);

    await idleLatency(farm, out, 'builder');

    // Throughput.
    out.throughput = await throughput(farm, [...farm.slaves.values()].map((sl) => sl.pid));
    out.masterRssAfterThroughputMiB = rssMiB(farm.master.pid);
    log(`builder: throughput ${JSON.stringify(out.throughput)}`);
    // Idle again after the load: what the daemons hold once their hot paths are optimized.
    await sleep(SETTLE_MS);
    const slaveAfter = [...farm.slaves.values()].map((s) => rssMiB(s.pid));
    out.rssSettledAfterLoadMiB = { master: rssMiB(farm.master.pid), slaves: { max: Math.max(...slaveAfter), min: Math.min(...slaveAfter) } };
    log(`builder: idle RSS ${String(out.settleS)} s after the load ${JSON.stringify(out.rssSettledAfterLoadMiB)}`);

    if (!skip.has('queued')) {
      const tq = Date.now();
      await pool(QUEUED, IN_FLIGHT, async () => {
        await farm.submit({ name: 'parked', channel: 'parked', command: { kind: 'argv', argv: ['true'] } });
      });
      const queuedSubmitMs = Date.now() - tq;
      await sleep(3000);
      out.queued = {
        jobs: QUEUED,
        submitMs: queuedSubmitMs,
        submitPerS: Math.round((QUEUED / queuedSubmitMs) * 1000),
        masterRssMiB: rssMiB(farm.master.pid),
        latencyWithQueueMs: await builderLatency(farm, Math.min(LATENCY, 100)),
      };
      log(`builder: with ${QUEUED} queued ${JSON.stringify(out.queued)}`);
    }
  });
}

async function simSlaves(): Promise<void> {
  log(`builder: fresh master with ${SIM} simulated slave connections`);
  const farm = await ProcessFarm.start({ logLevel: 'warn' });
  let child: ChildProcess | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'builder-bench-sim-'));
  const cleanup = async () => {
    await stopChild(child);
    await farm.stop();
    await rm(dir, { recursive: true, force: true });
  };
  await guarded(cleanup, async () => {
    await sleep(2000);
    const idle = rssMiB(farm.master.pid);
    const file = await simIdentities(farm, SIM, 'sim', dir);
    child = fork(join(here, 'sim-slaves.js'), [file, farm.masterAddress], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const r = await waitMessage<{ connected: number; failed: number }>(child, (m) => typeof m.connected === 'number', 300_000, 'simulated slaves');
    const st = await farm.call('slave.status', {});
    const connected = st.slaves.filter((s) => s.connected).length;
    await sleep(5000);
    const withSlaves = rssMiB(farm.master.pid);
    await sleep(SETTLE_MS);
    results.simSlaves = {
      connections: r.connected,
      failed: r.failed,
      connectedPerMaster: connected,
      masterRssIdleMiB: idle,
      masterRssMiB: withSlaves,
      settleS: SETTLE_MS / 1000,
      masterRssSettledMiB: rssMiB(farm.master.pid),
      simProcessRssMiB: rssMiB(child.pid!),
    };
    log(`sim: ${JSON.stringify(results.simSlaves)}`);
  });
}

/**
 * A redis-server on a free port. `durable`: every write command is in the append-only file and
 * fsynced before redis answers (`appendfsync always`; what "every transition durable" costs
 * BullMQ); otherwise in memory only, BullMQ's usual set-up.
 */
async function startRedis(durable: boolean): Promise<{ port: number; proc: ChildProcess; dir: string }> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'builder-bench-redis-'));
  const persistence = durable ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', dir, '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 10_000);
    const on = (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(t);
        resolve();
      }
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', on);
    proc.once('exit', (c) => reject(new Error(`redis-server exited ${String(c)}: ${out}`)));
  });
  return { port, proc, dir };
}

async function bullmq(): Promise<void> {
  const redis = await startRedis(false);
  let durable: Awaited<ReturnType<typeof startRedis>> | undefined;
  const concurrency = SLAVES * CAPACITY;
  log(`bullmq: redis-server on ${redis.port} (pid ${String(redis.proc.pid)}), worker concurrency ${concurrency}`);
  const out: Record<string, unknown> = { redisVersion: (await new Promise<string>((r) => {
    const c = spawn('redis-server', ['--version']);
    let s = '';
    c.stdout.on('data', (d: Buffer) => (s += d.toString()));
    c.once('exit', () => r(s.trim()));
  })) };
  results.bullmq = out;
  let worker: ChildProcess | undefined;
  const cleanup = async () => {
    await stopChild(worker);
    for (const r of [redis, durable]) {
      if (r === undefined) continue;
      await stopChild(r.proc);
      await rm(r.dir, { recursive: true, force: true });
    }
  };
  await guarded(cleanup, async () => {
    durable = await startRedis(true);
    // One Worker with `concurrency` slots (the fastest set-up); `concurrency` Workers of one slot
    // each (the "50 concurrent workers" read literally); one Worker on the durable redis;
    // all no-op. Then one Worker spawning `true`.
    const variants = [
      { key: 'noop', mode: 'noop', workers: 1, server: redis },
      { key: 'noopWorkers', mode: 'noop', workers: concurrency, server: redis },
      { key: 'noopDurable', mode: 'noop', workers: 1, server: durable },
      { key: 'spawn', mode: 'spawn', workers: 1, server: redis },
    ] as const;
    for (const { key, mode, workers, server } of variants) {
      const name = `bench-${key}`;
      const queue = new Queue(name, { connection: { host: '127.0.0.1', port: server.port } });
      const w = fork(join(here, 'bullmq-worker.js'), [String(server.port), name, String(concurrency), mode, String(workers)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      worker = w;
      try {
        await waitMessage<{ ready?: boolean }>(w, (m) => m.ready === true, 30_000, 'bullmq worker');
        const r: Record<string, unknown> = { workers, concurrencyEach: concurrency / workers, appendfsyncAlways: server === durable };
        out[key] = r;
        await sleep(1000);
        r.workerRssIdleMiB = rssMiB(w.pid!);
        // Latency, one job at a time (after a warm-up).
        const lat: number[] = [];
        for (let i = 0; i < LATENCY + 20; i++) {
          const job = await queue.add('latency', { i });
          const done = await waitFor(`bullmq job ${String(job.id)}`, async () => {
            const j = await queue.getJob(job.id!);
            return j?.finishedOn ? j : undefined;
          }, 30_000, 2);
          if (i >= 20) lat.push(done.processedOn! - done.timestamp);
        }
        r.latencyIdleMs = summary(lat);
        const base = LATENCY + 20;
        const doneMsg = waitMessage<{ completed: number; at: number }>(w, (m) => m.completed === base + N, 600_000, 'bullmq completions');
        w.send({ notifyAt: base + N });
        const t0 = Date.now();
        await pool(N, IN_FLIGHT, async (i) => {
          await queue.add('noop', { i });
        });
        const submitMs = Date.now() - t0;
        const { at } = await doneMsg;
        const totalMs = at - t0;
        r.throughput = { jobs: N, submitMs, submitPerS: Math.round((N / submitMs) * 1000), totalMs, jobsPerS: Math.round((N / totalMs) * 1000) };
        r.workerRssMiB = rssMiB(w.pid!);
        r.redisRssMiB = rssMiB(server.proc.pid!);
        log(`bullmq ${key}: ${JSON.stringify(r)}`);
      } finally {
        await stopChild(w);
        await queue.obliterate({ force: true }).catch(() => undefined);
        await queue.close();
      }
    }
  });
}

/**
 * The same machine's ceiling for one process per job, measured in this run: SLAVES Node
 * processes each start and reap N / SLAVES `true` processes, CAPACITY at once (see
 * spawn-ceiling.ts), with child_process (`spawnCeiling`) and with the slave's native spawner
 * (`spawnCeilingNative`). No farm can run no-op jobs faster than this on this machine.
 */
async function spawnCeiling(spawner: 'node' | 'native'): Promise<void> {
  const per = Math.ceil(N / SLAVES);
  log(`ceiling: ${SLAVES} node processes x ${per} spawns of true, ${CAPACITY} at once each, ${spawner} spawner`);
  const kids = Array.from({ length: SLAVES }, () => fork(join(here, 'spawn-ceiling.js'), [String(per), String(CAPACITY), spawner], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  await guarded(async () => void (await Promise.all(kids.map((k) => stopChild(k)))), async () => {
    await Promise.all(kids.map((k) => waitMessage<{ ready?: boolean }>(k, (m) => m.ready === true, 30_000, 'spawn-ceiling worker')));
    const done = kids.map((k) => waitMessage<{ done?: boolean; ms: number }>(k, (m) => m.done === true, 600_000, 'spawn-ceiling run'));
    const t0 = performance.now();
    for (const k of kids) k.send({ go: true });
    await Promise.all(done);
    const ms = performance.now() - t0;
    const r = { processes: SLAVES, spawnsEach: per, concurrentEach: CAPACITY, totalMs: Math.round(ms), spawnsPerS: Math.round(((per * SLAVES) / ms) * 1000) };
    if (spawner === 'node') results.spawnCeiling = r;
    else results.spawnCeilingNative = r;
    log(`ceiling (${spawner}): ${JSON.stringify(r)}`);
  });
}

/**
 * The ceiling of durable transitions on this machine, measured in this run: `N` jobs through the
 * master's store alone in a child process (store-ceiling.ts), no network, at SLAVES x CAPACITY
 * jobs at a time (the farm's slots) and at IN_FLIGHT (the submitter's width: bigger group
 * commits). No farm keeping every transition in this store runs no-op jobs faster.
 */
async function storeCeiling(): Promise<void> {
  const out: Record<string, unknown> = {};
  results.storeCeiling = out;
  for (const width of [SLAVES * CAPACITY, IN_FLIGHT]) {
    const child = fork(join(here, 'store-ceiling.js'), [String(N), String(width)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await guarded(() => stopChild(child), async () => {
      const r = await waitMessage<{ jobsPerS: number }>(child, (m) => typeof m.jobsPerS === 'number', 600_000, 'store ceiling');
      out[`width${width}`] = r;
      log(`store ceiling: ${JSON.stringify(r)}`);
    });
  }
}

/** The floor of the idle latency on this machine, measured in this run (latency-floor.ts). */
async function latencyFloorPhase(): Promise<void> {
  log(`floor: ${LATENCY} jobs one at a time through the bare parts of the dispatch path`);
  const r = await latencyFloor(LATENCY);
  results.latencyFloorMs = { queuedToRunning: summary(r.ms), queuedToRunningExact: summary(r.exact) };
  log(`floor: ${JSON.stringify(results.latencyFloorMs)}`);
  if (LATENCY_GAP_MS > 0) {
    const g = await latencyFloor(LATENCY, 20, LATENCY_GAP_MS);
    results.latencyFloorAfterGapMs = { gapMs: LATENCY_GAP_MS, queuedToRunning: summary(g.ms), queuedToRunningExact: summary(g.exact) };
    log(`floor: after ${LATENCY_GAP_MS} ms idle ${JSON.stringify(results.latencyFloorAfterGapMs)}`);
  }
}

async function main(): Promise<void> {
  if (!skip.has('ceiling')) {
    await spawnCeiling('node');
    await spawnCeiling('native');
  }
  if (!skip.has('floor')) await latencyFloorPhase();
  if (!skip.has('store')) await storeCeiling();
  if (!skip.has('builder')) await builder();
  if (!skip.has('dispatch')) await masterAlone();
  if (!skip.has('sim')) await simSlaves();
  if (!skip.has('bullmq')) await bullmq();
  results.loadavgAtEnd = loadavg().map((x) => Math.round(x * 100) / 100);
  const text = `${JSON.stringify(results, null, 2)}\n`;
  await writeFile(values.out, text);
  process.stdout.write(text);
}

// On SIGINT/SIGTERM, end what this run started (farms, workers, redis) by pid before leaving.
const onSignal = () => {
  void Promise.allSettled([...cleanups].map((f) => f())).then(() => process.exit(130));
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);
main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
