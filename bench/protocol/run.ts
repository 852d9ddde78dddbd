/**
 * The wire benchmark of issue 1 ("Foundation"): Builder's RPC channel against @grpc/grpc-js and
 * raw Node TLS, between two processes over mutual TLS 1.3 on 127.0.0.1.
 *
 *   npm run build && node dist/bench/protocol/run.js [--duration-ms 2500] [--warmup-ms 1000]
 *     [--runs 3] [--stacks builder,grpc,tls] [--workloads rt1,rt64,bulk] [--bulk-in-flight 4]
 *     [--out FILE] [--server-cpu-prof DIR]
 *
 * Each stack's server runs in its own child process (server-<stack>.js); the clients run here.
 * Certificates come from our pki/ at run time: one CA, the master's server certificate for all
 * three servers, one client identity. Runs of the three stacks are interleaved, so that load
 * from other processes on the machine falls on all of them alike; the median of the runs is
 * reported. Every child is killed by pid on the way out, error or not.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PkiRegistry, initCa, issueIdentity, loadCa, loadIdentity } from '../../pki/index.js';
import { EXTRA_STACKS, READY_PREFIX, STACKS, type Stack } from './common.js';
import { connectClient, type BenchClient } from './clients.js';
import { median, runFor, type RunFigure, type Workload } from './measure.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MiB = 1024 * 1024;

const STACK_TITLES: Record<Stack, string> = { builder: 'Builder (RpcPeer)', grpc: 'grpc-js', tls: 'raw TLS', lean: 'prototype (lean-peer)' };

interface Target {
  workload: Workload['id'];
  against: Stack;
  /** Builder's figure over the other stack's must be at least this. */
  ratio: number;
  text: string;
}

const TARGETS: Target[] = [
  { workload: 'rt1', against: 'tls', ratio: 0.75, text: '>= 75% of raw TLS' },
  { workload: 'rt64', against: 'grpc', ratio: 5, text: '>= 5x grpc-js' },
  { workload: 'bulk', against: 'tls', ratio: 0.8, text: '>= 80% of raw TLS' },
];

const { values: args } = parseArgs({
  options: {
    'duration-ms': { type: 'string', default: '2500' },
    'warmup-ms': { type: 'string', default: '1000' },
    runs: { type: 'string', default: '3' },
    stacks: { type: 'string', default: STACKS.join(',') },
    'bulk-in-flight': { type: 'string', default: '4' },
    out: { type: 'string', default: join(ROOT, 'bench', 'protocol', 'results.json') },
    workloads: { type: 'string', default: 'rt1,rt64,bulk' },
    'server-cpu-prof': { type: 'string' },
  },
});

function positiveInt(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
  return n;
}

const durationMs = positiveInt('duration-ms', args['duration-ms']);
const warmupMs = positiveInt('warmup-ms', args['warmup-ms']);
const runs = positiveInt('runs', args.runs);
const bulkInFlight = positiveInt('bulk-in-flight', args['bulk-in-flight']);
const stacks = args.stacks.split(',').map((s) => {
  const known: readonly string[] = [...STACKS, ...EXTRA_STACKS];
  if (!known.includes(s)) throw new Error(`unknown stack ${s}; known: ${known.join(', ')}`);
  return s as Stack;
});

const ALL_WORKLOADS: Workload[] = [
  { id: 'rt1', title: 'Round trips/s, 1 in flight (16 B)', payloadBytes: 16, inFlight: 1, unit: 'calls/s' },
  { id: 'rt64', title: 'Round trips/s, 64 in flight (16 B)', payloadBytes: 16, inFlight: 64, unit: 'calls/s' },
  { id: 'bulk', title: `Bulk MiB/s, 1 MiB params, ${bulkInFlight} in flight`, payloadBytes: MiB, inFlight: bulkInFlight, unit: 'MiB/s' },
];
const WORKLOADS = args.workloads.split(',').map((id) => {
  const w = ALL_WORKLOADS.find((x) => x.id === id);
  if (!w) throw new Error(`unknown workload ${id}; known: ${ALL_WORKLOADS.map((x) => x.id).join(', ')}`);
  return w;
});

/** A server child and its port. */
interface ServerChild {
  stack: Stack;
  child: ChildProcess;
  port: number;
}

const children = new Set<ChildProcess>();
// Last resort if the driver dies between spawn and the finally below.
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) safeKill(c.pid, 'SIGKILL');
});

function safeKill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function startServer(stack: Stack): Promise<ServerChild> {
  const execArgv = args['server-cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['server-cpu-prof'], '--cpu-prof-name', `server-${stack}.cpuprofile`] : [];
  const child = spawn(process.execPath, [...execArgv, join(HERE, `server-${stack}.js`), caDir], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${stack} server did not report its port within 20 s`)), 20_000);
    child.on('error', reject);
    child.on('exit', (code, sig) => reject(new Error(`${stack} server exited early (${code ?? sig})`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith(READY_PREFIX));
      if (line) {
        clearTimeout(timer);
        resolve({ stack, child, port: Number(line.slice(READY_PREFIX.length)) });
      }
    });
  });
}

/** SIGTERM (the child closes and exits, writing its CPU profile if asked), then SIGKILL after a grace period. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (!child.pid) return;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    safeKill(child.pid, 'SIGTERM');
    const grace = new Promise<void>((resolve) => setTimeout(resolve, args['server-cpu-prof'] ? 10_000 : 2_000).unref());
    await Promise.race([exited, grace]);
    if (child.exitCode === null && child.signalCode === null) safeKill(child.pid, 'SIGKILL');
  }
  children.delete(child);
}

const fmt = (w: Workload, v: number) => (w.unit === 'MiB/s' ? v.toFixed(1) : Math.round(v).toLocaleString('en-US'));

const started = performance.now();
const loadStart = os.loadavg();
const caDir = await mkdtemp(join(os.tmpdir(), 'builder-bench-wire-'));
// Interrupted: the 'exit' hook above kills the children; remove the keys here.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    rmSync(caDir, { recursive: true, force: true });
    process.exit(130);
  });
}
const servers: ServerChild[] = [];
const clients = new Map<Stack, BenchClient>();
let exitCode = 0;
try {
  // One CA for all three stacks; the servers use the master's certificate, the client a client identity.
  await initCa({ dir: caDir });
  const ca = await loadCa(caDir);
  const reg = await PkiRegistry.open(ca.paths.registry);
  const idDir = join(caDir, 'bench-client');
  try {
    await issueIdentity(ca, reg, { name: 'bench', role: 'client', outDir: idDir });
  } finally {
    await reg.close();
  }
  const material = await loadIdentity(idDir);

  servers.push(...(await Promise.all(stacks.map((s) => startServer(s)))));
  for (const s of servers) {
    s.child.removeAllListeners('exit');
    clients.set(s.stack, await connectClient(s.stack, s.port, material));
  }

  const pidOf = (s: Stack) => servers.find((x) => x.stack === s)?.child.pid;
  const figures = new Map<string, RunFigure[]>();
  const key = (s: Stack, w: Workload) => `${s}/${w.id}`;
  for (const w of WORKLOADS) {
    const payload = randomBytes(w.payloadBytes);
    for (const s of stacks) await runFor(clients.get(s)!, w, payload, warmupMs, pidOf(s));
    for (let r = 0; r < runs; r++) {
      // Rotate the order each run so that no stack always goes first.
      for (let i = 0; i < stacks.length; i++) {
        const s = stacks[(i + r) % stacks.length]!;
        const f = await runFor(clients.get(s)!, w, payload, durationMs, pidOf(s));
        figures.set(key(s, w), [...(figures.get(key(s, w)) ?? []), f]);
        process.stderr.write(
          `  ${w.id} ${s} run ${r + 1}: ${fmt(w, f.value)} ${w.unit} (CPU client ${f.clientCpuPct}%, server ${f.serverCpuPct ?? '?'}%; ${f.cpuUsPerCall ?? '?'} us/call)\n`,
        );
      }
    }
  }

  const med = (s: Stack, w: Workload) => median((figures.get(key(s, w)) ?? []).map((f) => f.value));
  const lines: string[] = [];
  lines.push(`| Workload | ${stacks.map((s) => STACK_TITLES[s]).join(' | ')} | Target | Builder ratio | Met |`);
  lines.push(`|---|${stacks.map(() => '---:').join('|')}|---|---:|---|`);
  const verdicts: Array<{ workload: string; target: string; ratio: number | null; met: boolean | null }> = [];
  for (const w of WORKLOADS) {
    const t = TARGETS.find((x) => x.workload === w.id)!;
    const have = stacks.includes('builder') && stacks.includes(t.against);
    const ratio = have ? med('builder', w) / med(t.against, w) : null;
    const met = ratio === null ? null : ratio >= t.ratio;
    verdicts.push({ workload: w.id, target: t.text, ratio, met });
    const ratioText = ratio === null ? 'n/a' : t.ratio >= 1 ? `${ratio.toFixed(2)}x` : `${(ratio * 100).toFixed(0)}%`;
    lines.push(`| ${w.title} | ${stacks.map((s) => fmt(w, med(s, w))).join(' | ')} | ${t.text} | ${ratioText} | ${met === null ? 'n/a' : met ? 'yes' : 'NO'} |`);
  }
  // CPU per call (client + server): the cost of the stack itself, which other load on the machine
  // disturbs much less than it disturbs the rates.
  lines.push('');
  lines.push(`| CPU per call, client + server (us, median) | ${stacks.map((s) => STACK_TITLES[s]).join(' | ')} |`);
  lines.push(`|---|${stacks.map(() => '---:').join('|')}|`);
  for (const w of WORKLOADS) {
    const cpu = (s: Stack) => {
      const xs = (figures.get(key(s, w)) ?? []).map((f) => f.cpuUsPerCall).filter((x): x is number => x !== null);
      return xs.length > 0 ? median(xs).toFixed(w.unit === 'MiB/s' ? 0 : 1) : '?';
    };
    lines.push(`| ${w.title} | ${stacks.map(cpu).join(' | ')} |`);
  }
  const table = lines.join('\n');
  const machine = {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    loadavgStart: loadStart.map((x) => x.toFixed(2)),
    loadavgEnd: os.loadavg().map((x) => x.toFixed(2)),
  };
  const totalSeconds = (performance.now() - started) / 1000;
  process.stdout.write(`\n${table}\n\nnproc ${machine.nproc}, ${machine.cpu}, Node ${machine.node}; load average ${machine.loadavgStart.join(' ')} -> ${machine.loadavgEnd.join(' ')}; ${totalSeconds.toFixed(0)} s in all\n`);
  const results = {
    date: new Date().toISOString(),
    command: `node dist/bench/protocol/run.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine,
    settings: { durationMs, warmupMs, runs, bulkInFlight, stacks, echoRule: 'payloads up to 64 KiB are echoed; larger ones are answered with a small ack (seq)' },
    workloads: WORKLOADS.map((w) => ({
      ...w,
      results: Object.fromEntries(stacks.map((s) => [s, { median: med(s, w), runs: figures.get(key(s, w)) }])),
    })),
    targets: verdicts,
    table,
    totalSeconds,
  };
  await writeFile(args.out, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`results written to ${args.out}\n`);
} catch (e) {
  process.stderr.write(`benchmark failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  exitCode = 1;
} finally {
  for (const c of clients.values()) await c.close().catch(() => undefined);
  await Promise.all([...children].map((c) => stopServer(c)));
  await rm(caDir, { recursive: true, force: true });
}
process.exit(exitCode);
