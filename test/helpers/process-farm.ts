/**
 * A farm of real processes for end-to-end tests and benchmarks: one `master run` and any number
 * of `slave run`, started through the package's bins exactly as an operator would
 * (`master init-ca`, `master run`, `master token create`, `slave enroll`, `slave run`), on
 * 127.0.0.1 with ports the OS picks once and keeps across master restarts (so slaves reconnect
 * to the same address).
 *
 * What it gives a test:
 * - `ProcessFarm.start()`, `farm.addSlave()`, readiness from log lines and from `slave.status`;
 * - `farm.call()`: an admin RPC connection (the identity `master init-ca` wrote to DIR/admin),
 *   re-opened on demand after a master restart;
 * - `farm.submit()`, `farm.waitJob()`, `farm.waitJobs()`;
 * - `farm.killMaster()` (SIGKILL) and `farm.restartMaster()`, `slave.kill()`, `slave.restart()`;
 * - `TcpProxy`: a cuttable TCP hop between a slave and the master (the slave's `--master`
 *   points at it), to drop a slave's connection without touching either process;
 * - `farm.stop()`: ends every process it started, by pid, then every job process left behind
 *   (found by its working directory inside the farm's temp dir: a SIGKILLed slave leaves its
 *   job's process group running), then removes the temp dir.
 *
 * Every wait is bounded; a timeout error carries the tail of the process's output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, rmSync, type WriteStream } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PkiRegistry, issueIdentity, loadCa, loadIdentity } from '../../pki/index.js';
import { connectRpc, mutualTlsClientOptions, type MethodName, type ParamsOf, type ResultOf, type RpcPeer } from '../../protocol/index.js';
import { findCgroupPlace, sweepCgroups } from '../../slave/executor/index.js';
import { binPath, runBin } from './procs.js';

/** What a client submits (`job.submit` params). */
export type NewJob = ParamsOf<'job.submit'>['job'];
/** A job as the master shows it. */
export type JobView = ResultOf<'job.get'>['job'];
/** `job.get`: the job, its attempts and why it waits. */
export type JobDetail = ResultOf<'job.get'>;
export type JobState = JobView['state'];

/** The states a job never leaves. */
export const FINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'timed_out', 'cancelled'];

/** Polls `cond` every `everyMs` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, cond: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v !== undefined && v !== false) return v;
      lastErr = undefined;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    }
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * One long-running bin (`master run`, `slave run`). Output goes to a log file in the farm dir
 * (kept for a failing test's post-mortem) and is scanned line by line for `waitForLine`; only a
 * bounded tail stays in memory, so a chatty process costs nothing.
 */
export class FarmProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private tailText = '';
  private partial = '';
  private lines = 0;
  private waiters: Array<{ re: RegExp; fromLine: number; resolve: (m: RegExpMatchArray) => void }> = [];
  private readonly seen: string[] = [];
  private readonly logFile: WriteStream;

  /**
   * @param keepLines how many recent lines `waitForLine` can still match after they arrived
   *   (a waiter registered later sees them). Default 2,000.
   */
  /**
   * @param argv what node runs: a script (e.g. `binPath('slave')`) and its arguments.
   */
  constructor(
    readonly label: string,
    argv: string[],
    logPath: string,
    env: NodeJS.ProcessEnv = {},
    private readonly keepLines = 2000,
  ) {
    this.logFile = createWriteStream(logPath, { flags: 'a' });
    this.child = spawn(process.execPath, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer) => {
      this.logFile.write(d);
      const s = d.toString();
      this.tailText = (this.tailText + s).slice(-8192);
      const parts = (this.partial + s).split('\n');
      this.partial = parts.pop() ?? '';
      for (const line of parts) this.onLine(line);
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        if (this.partial) this.onLine(this.partial);
        this.logFile.end();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last few KiB of output, for error messages. */
  tail(): string {
    return this.tailText;
  }

  /** Number of lines seen so far: pass it to `waitForLine` to match only newer lines. */
  get lineCount(): number {
    return this.lines;
  }

  private onLine(line: string): void {
    this.lines++;
    this.seen.push(line);
    if (this.seen.length > this.keepLines) this.seen.shift();
    this.waiters = this.waiters.filter((w) => {
      if (this.lines <= w.fromLine) return true;
      const m = line.match(w.re);
      if (m) w.resolve(m);
      return !m;
    });
  }

  /**
   * Resolves with the first line (numbered above `fromLine`, default: any still kept) matching
   * `re`; rejects after `timeoutMs` or when the process exits first.
   */
  waitForLine(re: RegExp, timeoutMs = 20_000, fromLine = 0): Promise<RegExpMatchArray> {
    const firstKept = this.lines - this.seen.length;
    for (let i = Math.max(0, fromLine - firstKept); i < this.seen.length; i++) {
      const m = this.seen[i]!.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${re}; output tail:\n${this.tail()}`));
      }, timeoutMs);
      const done = (m: RegExpMatchArray) => {
        clearTimeout(t);
        resolve(m);
      };
      this.waiters.push({ re, fromLine, resolve: done });
      void this.exited.then(({ code, signal }) => {
        if (!this.waiters.some((w) => w.resolve === done)) return;
        clearTimeout(t);
        reject(new Error(`${this.label} exited (code ${String(code)}, signal ${String(signal)}) while waiting for ${re}; output tail:\n${this.tail()}`));
      });
    });
  }

  /** Sends `signal` by pid and waits for the exit; SIGKILL after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.running) return this.exited;
    const t = setTimeout(() => killPid(this.pid, 'SIGKILL'), timeoutMs);
    killPid(this.pid, signal);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/** Options of a process farm; all optional. */
export interface ProcessFarmOptions {
  /** Extra flags for `master run` (e.g. a short slave grace period), kept across restarts. Default none. */
  masterArgs?: string[];
  /** Extra environment for every process. Default none. */
  env?: NodeJS.ProcessEnv;
  /** Node flags for master and slaves, before the script (e.g. `--cpu-prof`). Default none. */
  nodeArgs?: string[];
  /**
   * BUILDER_LOG_LEVEL of master and slaves. Default `info`: the master's ports are read from its
   * "master listening" line. Above info, ports are picked before the start and readiness is an
   * RPC answer.
   */
  logLevel?: string;
  /** Bound on start-up steps (init-ca, listening, a slave connecting). Default 30 s. */
  startTimeoutMs?: number;
  /** RPC request timeout of the admin connection. Default 30 s. */
  requestTimeoutMs?: number;
  /**
   * Copy a master dir made once per test process by `master init-ca` (CA, server certificate,
   * admin identity, empty registry) instead of running `master init-ca` for this farm: saves the
   * RSA key generation, about 3 s a farm on a loaded machine. Each farm still gets its own copy.
   * Default false.
   */
  shareCa?: boolean;
}

/** The shared `master init-ca` output (see `shareCa`), made on first use, removed at exit. */
let sharedCa: Promise<string> | undefined;

function sharedCaDir(timeoutMs: number): Promise<string> {
  sharedCa ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'builder-farm-ca-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const master = join(dir, 'master');
    const init = await runBin('master', ['init-ca', '--dir', master, '--hostname', '127.0.0.1', '--hostname', 'localhost'], { timeoutMs });
    if (init.code !== 0) throw new Error(`master init-ca failed (${String(init.code)}): ${init.stderr}`);
    return master;
  })().catch((e: unknown) => {
    sharedCa = undefined;
    throw e;
  });
  return sharedCa;
}

/** One slave of the farm. */
export interface SlaveSpec {
  /** Slave name (its certificate's CN). */
  name: string;
  /** Channels it subscribes to. Default `['main']`. */
  channels?: string[];
  /** Architectures it runs. Default `['x86_64']`. */
  arches?: string[];
  /** Slots. Default 1. */
  capacity?: number;
  /** Extra flags for `slave run`. */
  args?: string[];
  /**
   * How it gets its identity: `cli` runs `master token create` and `slave enroll` (what an
   * operator does; the master rate-limits enrollments to a burst of 5 per address), `direct`
   * issues the certificate from the CA files (fast, for many slaves). Default `cli`.
   */
  enroll?: 'cli' | 'direct';
  /** Connect through a cuttable {@link TcpProxy} instead of straight to the master. Default false. */
  viaProxy?: boolean;
  /** Wait until the master lists it as connected in `slave.status` (else: its "connected to master" info line). Default true. */
  waitSubscribed?: boolean;
}

/** A running (or stopped) slave process of the farm. */
export class FarmSlave {
  process: FarmProcess | undefined;
  private starts = 0;

  constructor(
    private readonly farm: ProcessFarm,
    readonly spec: Required<Omit<SlaveSpec, 'args'>> & { args: string[] },
    /** The slave's data dir (identity, work dirs, spool, its own records). */
    readonly dir: string,
    /** Where it connects: the master or its proxy. */
    readonly masterAddress: string,
    readonly proxy: TcpProxy | undefined,
  ) {}

  get name(): string {
    return this.spec.name;
  }

  get pid(): number {
    if (!this.process) throw new Error(`slave ${this.name} is not running`);
    return this.process.pid;
  }

  /** Starts `slave run` and waits until it is connected (and, by default, subscribed). */
  async start(): Promise<void> {
    if (this.process?.running) throw new Error(`slave ${this.name} already runs`);
    const s = this.spec;
    // BUILDER_FARM_SLAVE_NODE_ARGS: extra node flags for the slaves only (e.g. `--cpu-prof
    // --cpu-prof-dir=/tmp/p`, which NODE_OPTIONS refuses), to profile a slave during a bench run.
    const extra = (process.env.BUILDER_FARM_SLAVE_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    const args = [...this.farm.nodeArgs, ...extra, binPath('slave'), 'run', '--dir', this.dir, '--master', this.masterAddress, '--channels', s.channels.join(','), '--arch', s.arches.join(','), '--capacity', String(s.capacity), ...s.args];
    this.process = new FarmProcess(`slave ${s.name}`, args, join(this.farm.root, `slave-${s.name}.${++this.starts}.log`), this.farm.env);
    if (s.waitSubscribed) {
      const proc = this.process;
      let exited = false;
      // The exit promise resolves (never rejects) so that a later exit is not an unhandled rejection.
      const first = await Promise.race([
        waitFor(
          `slave ${s.name} connected`,
          async () => !exited && (await this.farm.call('slave.status', {})).slaves.some((x) => x.name === s.name && x.connected),
          this.farm.startTimeoutMs,
          50,
        ),
        proc.exited.then(() => {
          exited = true;
          return 'exited' as const;
        }),
      ]);
      if (first === 'exited') throw new Error(`slave ${s.name} exited during start-up; output tail:\n${proc.tail()}`);
    } else await this.process.waitForLine(/connected to master/, this.farm.startTimeoutMs);
  }

  /** SIGKILL, by pid; resolves once the process is gone. Its jobs' process groups keep running. */
  async kill(): Promise<void> {
    await this.process?.stop('SIGKILL');
  }

  /** Stops with `signal` (SIGTERM: the slave drains first) and waits up to `timeoutMs`, then SIGKILL. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
    return this.process?.stop(signal, timeoutMs);
  }

  /** Starts a new `slave run` on the same dir (after `kill()` or `stop()`). */
  async restart(): Promise<void> {
    if (this.process?.running) await this.stop('SIGKILL');
    await this.start();
  }
}

/**
 * A TCP hop on 127.0.0.1 that copies bytes both ways between its clients and `target`. `cut()`
 * drops every connection and refuses new ones until `restore()`; the port stays the same.
 * It never reads the bytes (TLS goes through end to end).
 */
export class TcpProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  /** Connections accepted so far. */
  accepted = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  /** Listens (on `port`, or an OS-picked one the first time). */
  async listen(): Promise<number> {
    const server = net.createServer((client) => {
      this.accepted++;
      const upstream = net.connect(this.target.port, this.target.host);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
    return this.port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Destroys every connection (both halves, no FIN handshake) and stops listening. */
  async cut(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const sock of this.sockets) sock.destroy();
    this.sockets.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  /** Listens again on the same port. */
  async restore(): Promise<void> {
    if (!this.server) await this.listen();
  }

  async close(): Promise<void> {
    await this.cut();
  }
}

/**
 * A master and its slaves as real processes in a temp dir. Create with {@link ProcessFarm.start};
 * always `await farm.stop()` (in `afterEach`).
 */
export class ProcessFarm {
  master!: FarmProcess;
  mainPort = 0;
  enrollPort = 0;
  readonly slaves = new Map<string, FarmSlave>();
  readonly env: NodeJS.ProcessEnv;
  readonly nodeArgs: readonly string[];
  readonly startTimeoutMs: number;
  private peer: RpcPeer | undefined;
  private connecting: Promise<RpcPeer> | undefined;
  private masterStarts = 0;
  private readonly proxies: TcpProxy[] = [];
  private stopped = false;

  private constructor(
    /** The farm's temp dir: master dir, slave dirs, process logs. */
    readonly root: string,
    /** The master's data dir (`master init-ca --dir`). */
    readonly masterDir: string,
    private readonly opts: ProcessFarmOptions,
  ) {
    this.env = { BUILDER_LOG_LEVEL: opts.logLevel ?? 'info', ...opts.env };
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.nodeArgs = opts.nodeArgs ?? [];
  }

  /** `master init-ca` in a fresh temp dir (or a copy of a shared one), then `master run` on OS-picked ports. */
  static async start(opts: ProcessFarmOptions = {}): Promise<ProcessFarm> {
    const root = await mkdtemp(join(tmpdir(), 'builder-farm-'));
    const farm = new ProcessFarm(root, join(root, 'master'), opts);
    try {
      if (opts.shareCa) {
        await cp(await sharedCaDir(farm.startTimeoutMs), farm.masterDir, { recursive: true });
      } else {
        const init = await runBin('master', ['init-ca', '--dir', farm.masterDir, '--hostname', '127.0.0.1', '--hostname', 'localhost'], { timeoutMs: farm.startTimeoutMs });
        if (init.code !== 0) throw new Error(`master init-ca failed (${String(init.code)}): ${init.stderr}`);
      }
      await farm.startMaster();
    } catch (e) {
      await farm.stop();
      throw e;
    }
    return farm;
  }

  /** HOST:PORT of the master's main listener. */
  get masterAddress(): string {
    return `127.0.0.1:${this.mainPort}`;
  }

  /** The admin identity directory written by `master init-ca`. */
  get adminDir(): string {
    return join(this.masterDir, 'admin');
  }

  /** True when the master logs the info line "master listening" (which carries its ports). */
  private get logsInfo(): boolean {
    return ['info', 'debug', 'trace'].includes(String(this.env.BUILDER_LOG_LEVEL));
  }

  private async startMaster(): Promise<void> {
    // A quieter master does not print its ports: pick them here (a small race with other
    // programs taking the port in between, acceptable for a benchmark).
    if (this.mainPort === 0 && !this.logsInfo) [this.mainPort, this.enrollPort] = [await freePort(), await freePort()];
    const listen = `127.0.0.1:${this.mainPort}`;
    const enroll = `127.0.0.1:${this.enrollPort}`;
    const args = [...this.nodeArgs, binPath('master'), 'run', '--dir', this.masterDir, '--listen', listen, '--enroll-listen', enroll, ...(this.opts.masterArgs ?? [])];
    this.master = new FarmProcess('master', args, join(this.root, `master.${++this.masterStarts}.log`), this.env);
    if (!this.logsInfo) {
      const master = this.master;
      let exited = false;
      // The exit promise resolves (never rejects) so that a later exit is not an unhandled rejection.
      const first = await Promise.race([
        waitFor('the master to answer', async () => !exited && (await this.client()) !== undefined, this.startTimeoutMs, 100),
        master.exited.then(() => {
          exited = true;
          return 'exited' as const;
        }),
      ]);
      if (first === 'exited') throw new Error(`the master exited during start-up; output tail:\n${master.tail()}`);
      return;
    }
    const m = await this.master.waitForLine(/"listen":"127\.0\.0\.1:(\d+)","enroll":"127\.0\.0\.1:(\d+)"/, this.startTimeoutMs);
    this.mainPort = Number(m[1]);
    this.enrollPort = Number(m[2]);
  }

  /** SIGKILL the master by pid; resolves once it is gone. The admin connection is dropped. */
  async killMaster(): Promise<void> {
    this.dropClient();
    await this.master.stop('SIGKILL');
  }

  /** SIGTERM the master and wait for its exit. */
  async stopMaster(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.dropClient();
    return this.master.stop('SIGTERM');
  }

  /** Starts `master run` again on the same dir and ports (after kill or stop). */
  async restartMaster(): Promise<void> {
    if (this.master.running) await this.killMaster();
    await this.startMaster();
  }

  /**
   * Gives a slave an identity, starts `slave run`, and waits until it is connected and (by
   * default) listed as connected by `slave.status`.
   */
  async addSlave(spec: SlaveSpec): Promise<FarmSlave> {
    if (this.slaves.has(spec.name)) throw new Error(`slave ${spec.name} exists`);
    const full = {
      name: spec.name,
      channels: spec.channels ?? ['main'],
      arches: spec.arches ?? ['x86_64'],
      capacity: spec.capacity ?? 1,
      args: spec.args ?? [],
      enroll: spec.enroll ?? 'cli',
      viaProxy: spec.viaProxy ?? false,
      waitSubscribed: spec.waitSubscribed ?? true,
    };
    const dir = join(this.root, `slave-${spec.name}`);
    if (full.enroll === 'cli') await this.enrollCli(spec.name, dir);
    else await this.enrollDirect(spec.name, dir);
    let proxy: TcpProxy | undefined;
    if (full.viaProxy) {
      proxy = new TcpProxy({ host: '127.0.0.1', port: this.mainPort });
      await proxy.listen();
      this.proxies.push(proxy);
    }
    const slave = new FarmSlave(this, full, dir, proxy ? proxy.address : this.masterAddress, proxy);
    this.slaves.set(spec.name, slave);
    await slave.start();
    return slave;
  }

  /** `master token create --json` then `slave enroll` with the printed fingerprint. */
  private async enrollCli(name: string, dir: string): Promise<void> {
    const tok = await runBin('master', ['token', 'create', '--dir', this.masterDir, '--ttl', '10m', '--enroll-address', `127.0.0.1:${this.enrollPort}`, '--json'], {
      timeoutMs: this.startTimeoutMs,
    });
    if (tok.code !== 0) throw new Error(`master token create failed: ${tok.stderr}`);
    const t = JSON.parse(tok.stdout) as { token: string; caFingerprint: string };
    const r = await runBin('slave', ['enroll', '--master', `127.0.0.1:${this.enrollPort}`, '--token', t.token, '--ca-fingerprint', t.caFingerprint, '--dir', dir, '--name', name], {
      timeoutMs: this.startTimeoutMs,
    });
    if (r.code !== 0) throw new Error(`slave enroll ${name} failed: ${r.stderr}`);
  }

  /** Issues the slave certificate straight from the CA files (same files as `slave enroll` writes). */
  private async enrollDirect(name: string, dir: string): Promise<void> {
    const ca = await loadCa(this.masterDir);
    const reg = await PkiRegistry.open(ca.paths.registry);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await issueIdentity(ca, reg, { name, role: 'slave', outDir: dir });
    } finally {
      await reg.close();
    }
  }

  /** The admin connection (opened on first use and again after the master restarted). */
  async client(): Promise<RpcPeer> {
    if (this.peer && !this.peer.closed) return this.peer;
    this.connecting ??= (async () => {
      try {
        const id = await loadIdentity(this.adminDir);
        const peer = await connectRpc({
          tls: mutualTlsClientOptions(id, '127.0.0.1', this.mainPort),
          remote: { role: 'master', name: 'master' },
          requestTimeoutMs: this.opts.requestTimeoutMs ?? 30_000,
          maxInFlight: 4096,
        });
        await peer.call('session.hello', { version: '1', software: 'process-farm' });
        this.peer = peer;
        return peer;
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  private dropClient(): void {
    this.peer?.destroy();
    this.peer = undefined;
  }

  /** One call over the admin connection. */
  async call<M extends MethodName>(method: M, params: ParamsOf<M>, opts: { timeoutMs?: number } = {}): Promise<ResultOf<M>> {
    const peer = await this.client();
    return peer.call(method, params, opts);
  }

  /** Submits a job (defaults: channel `main`, arch `x86_64`) and returns it as stored. */
  async submit(job: Partial<NewJob> & Pick<NewJob, 'command'>): Promise<JobView> {
    const r = await this.call('job.submit', { job: { name: 'job', channel: 'main', arch: 'x86_64', ...job } });
    return r.job;
  }

  /** Submits a `/bin/sh` script job. */
  async submitScript(text: string, job: Partial<NewJob> = {}): Promise<JobView> {
    return this.submit({ ...job, command: { kind: 'script', text } });
  }

  /** `job.get`. */
  async getJob(id: number): Promise<JobDetail> {
    return this.call('job.get', { id });
  }

  /** Polls `job.get` until the job is in one of `states` (default: any final state). */
  async waitJob(id: number, states: readonly JobState[] = FINAL_STATES, timeoutMs = 30_000): Promise<JobDetail> {
    let last: JobDetail | undefined;
    try {
      return await waitFor(
        `job ${id} in ${states.join('|')}`,
        async () => {
          last = await this.getJob(id);
          return states.includes(last.job.state) ? last : undefined;
        },
        timeoutMs,
        50,
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; last seen: ${last ? `${last.job.state} (attempt ${last.job.attempt}, waiting: ${String(last.waiting)})` : 'nothing'}`, { cause: e });
    }
  }

  /** Polls until every job in `ids` is in a final state; returns them by id. */
  async waitJobs(ids: readonly number[], timeoutMs = 60_000): Promise<Map<number, JobDetail>> {
    const done = new Map<number, JobDetail>();
    await waitFor(
      `${ids.length} jobs to end`,
      async () => {
        for (const id of ids) {
          if (done.has(id)) continue;
          const d = await this.getJob(id);
          if (FINAL_STATES.includes(d.job.state)) done.set(id, d);
        }
        return done.size === ids.length;
      },
      timeoutMs,
      100,
    ).catch((e: Error) => {
      throw new Error(`${e.message}; ${done.size} of ${ids.length} ended`, { cause: e });
    });
    return done;
  }

  /** Reads an attempt's whole log (records in seq order) once the attempt's log has ended. */
  async readLog(jobId: number, attempt?: number, timeoutMs = 30_000): Promise<ResultOf<'log.read'>['records']> {
    const records: ResultOf<'log.read'>['records'] = [];
    let fromSeq = 1;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.call('log.read', { jobId, ...(attempt ? { attempt } : {}), fromSeq, waitMs: 1000 });
      records.push(...r.records);
      fromSeq = r.nextSeq;
      if (r.ended && r.records.length === 0) return records;
      if (Date.now() > deadline) throw new Error(`log of job ${jobId} did not end within ${timeoutMs} ms (${records.length} records)`);
    }
  }

  /** Polls `slave.status` until `name` is connected. */
  async waitSlaveConnected(name: string, timeoutMs = 20_000): Promise<ResultOf<'slave.status'>['slaves'][number]> {
    return waitFor(
      `slave ${name} connected`,
      async () => {
        const st = await this.call('slave.status', {});
        return st.slaves.find((s) => s.name === name && s.connected);
      },
      timeoutMs,
      50,
    );
  }

  /**
   * Ends everything: the admin connection, the proxies, each slave and the master by pid
   * (SIGKILL: a test that wants a clean stop does it itself), every job process still running
   * under the farm dir, and removes the dir (unless `keepDir`).
   */
  async stop(keepDir = false): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.dropClient();
    await Promise.all(this.proxies.map((p) => p.close()));
    const slaves = [...this.slaves.values()];
    await Promise.all(slaves.map((s) => s.stop('SIGKILL')));
    if (this.master) await this.master.stop('SIGKILL');
    await killProcessesUnder(this.root);
    // The job cgroups the SIGKILLed slaves left (their next start would sweep them; there is none).
    for (const s of slaves) {
      const place = findCgroupPlace(resolve(s.dir, 'work'));
      if (!('why' in place)) await sweepCgroups(place);
    }
    if (!keepDir) await rm(this.root, { recursive: true, force: true });
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * SIGKILLs every process whose working directory is inside `dir`: job processes (the executor
 * runs them in `<slave dir>/work/...`) that outlived a SIGKILLed slave. Returns their pids.
 */
export async function killProcessesUnder(dir: string): Promise<number[]> {
  const killed: number[] = [];
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  for (let round = 0; round < 3; round++) {
    let found = 0;
    for (const e of await readdir('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      const pid = Number(e);
      if (pid === process.pid) continue;
      let cwd: string;
      try {
        cwd = await readlink(`/proc/${e}/cwd`);
      } catch {
        continue;
      }
      // A removed work dir reads as "<path> (deleted)": still under the prefix.
      if (cwd === dir || cwd.startsWith(prefix)) {
        killPid(pid, 'SIGKILL');
        killed.push(pid);
        found++;
      }
    }
    if (found === 0) break;
    await sleep(50);
  }
  return killed;
}
