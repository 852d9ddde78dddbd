import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { access } from 'node:fs/promises';
import sqlite3 from 'sqlite3';
import type { ParamsOf, RpcPeer, RpcPeerOptions } from '../../../protocol/index.js';
import { RpcCallError } from '../../../protocol/index.js';
import type { NewJob } from '../../../master/store/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';

export type Assign = ParamsOf<'attempt.assign'>;
export type Cancel = ParamsOf<'attempt.cancel'>;

/** How the test slave answers `attempt.assign`. */
export type AssignMode = 'accept' | 'ignore' | 'refuse';

/**
 * The slave side for master-focused tests: a real RpcPeer over mutual TLS with a certificate
 * from the real enrollment, speaking the catalogue by hand so each test controls every call.
 */
export class TestSlave {
  readonly assigned: Assign[] = [];
  readonly cancels: Cancel[] = [];
  mode: AssignMode = 'accept';
  peer!: RpcPeer;
  private waiters: Array<() => void> = [];

  constructor(
    readonly farm: TestFarm,
    readonly name: string,
    readonly identity: string,
  ) {}

  static async enroll(farm: TestFarm, name: string): Promise<TestSlave> {
    return new TestSlave(farm, name, await farm.enroll(name));
  }

  /** Connects (again) and registers the slave-side handlers. */
  async connect(rpc: RpcPeerOptions = {}): Promise<RpcPeer> {
    this.peer = await this.farm.connect(this.identity, rpc);
    this.peer
      .handle('attempt.assign', (p) => {
        if (this.mode === 'ignore') return new Promise<never>(() => undefined);
        if (this.mode === 'refuse') throw new Error('work dir cannot be made');
        this.assigned.push(p);
        this.notify();
        return { accepted: true as const };
      })
      .handle('attempt.cancel', (p) => {
        this.cancels.push(p);
        this.notify();
        return { found: this.assigned.some((a) => a.jobId === p.jobId && a.attempt === p.attempt) };
      });
    return this.peer;
  }

  async subscribe(o: Partial<ParamsOf<'slave.subscribe'>> = {}) {
    return this.peer.call('slave.subscribe', { channels: ['stable'], arches: ['x86_64'], capacity: 2, draining: false, running: [], ...o });
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `pred` holds (checked on each assign/cancel and every 20 ms). */
  async until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 20);
      });
    }
  }

  async nextAssign(jobId: number, ms = 10_000): Promise<Assign> {
    await this.until(() => this.assigned.some((a) => a.jobId === jobId), `an assignment of job ${jobId} to ${this.name}`, ms);
    return this.assigned.filter((a) => a.jobId === jobId).at(-1)!;
  }

  log(jobId: number, attempt: number, records: ParamsOf<'attempt.log'>['records']) {
    return this.peer.call('attempt.log', { jobId, attempt, records });
  }

  /** Uploads `data` as artifact `path` in chunks. */
  async upload(jobId: number, attempt: number, path: string, data: Buffer, chunk = 64 * 1024): Promise<{ size: number; sha256: string }> {
    const sha256 = sha(data);
    const { offset } = await this.peer.call('artifact.begin', { jobId, attempt, path, size: data.length, sha256 });
    for (let o = offset; o < data.length; o += chunk) {
      await this.peer.call('artifact.chunk', { jobId, attempt, path, offset: o, data: data.subarray(o, Math.min(o + chunk, data.length)) as Uint8Array<ArrayBuffer> });
    }
    return this.peer.call('artifact.finish', { jobId, attempt, path });
  }

  finish(jobId: number, attempt: number, o: Partial<ParamsOf<'attempt.finish'>> = {}) {
    return this.peer.call('attempt.finish', {
      jobId,
      attempt,
      state: 'succeeded',
      exitCode: 0,
      signal: null,
      reason: null,
      setupFailure: false,
      refused: [],
      conflicts: [],
      artifacts: [],
      ...o,
    });
  }
}

export function sha(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

export function job(o: Partial<NewJob> = {}): NewJob {
  return { name: 'hello', channel: 'stable', arch: 'x86_64', command: { kind: 'script', text: 'echo hi' }, ...o };
}

/** A farm with short timeouts for tests, a client identity and an admin identity connected. */
export async function jobFarm(opts: Parameters<typeof startFarm>[0] = {}) {
  const farm = await startFarm({ slaveGraceMs: 1_500, acceptTimeoutMs: 1_000, timeoutMarginMs: 300, cancelTimeoutMs: 2_000, ...opts }, { shareCa: true });
  const client = await farm.connect(await farm.identity('alice', 'client'));
  const admin = await farm.connect(await farm.identity('root', 'admin'));
  return { farm, client, admin };
}

/** Polls job.get until `pred` holds. */
export async function waitJob(client: RpcPeer, id: number, pred: (j: { state: string; attempt: number }) => boolean, what: string, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const r = await client.call('job.get', { id });
    if (pred(r.job)) return r;
    if (Date.now() > end) throw new Error(`timed out waiting for job ${id}: ${what} (state ${r.job.state}, attempt ${r.job.attempt}, reason ${r.job.reason})`);
    await new Promise((res) => setTimeout(res, 25));
  }
}

/** Asserts that `p` rejects with the given BUILDER_ERR_* code (and a message matching `re`). */
export async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<RpcCallError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RpcCallError, `expected an RpcCallError, got ${String(e)}`);
    const data = e.data as { code?: string } | undefined;
    assert.equal(data?.code, code, `expected ${code}, got ${data?.code ?? 'no code'} (${e.message})`);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected a rejection with ${code}`);
}

export function text(records: ReadonlyArray<{ kind: string; data?: Uint8Array }>): string {
  return records.map((r) => (r.kind === 'data' && r.data ? Buffer.from(r.data).toString() : '')).join('');
}

/** Whether a path exists (for files the master removes). */
export const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

/** Polls until `cond` holds, at most `ms`. */
export async function until(what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Uploads `b` as an input file through `client` (input.begin, one chunk, input.finish). */
export async function uploadInputAs(client: RpcPeer, b: Buffer): Promise<void> {
  const h = sha(b);
  const { offset } = await client.call('input.begin', { sha256: h, size: b.length });
  if (offset < b.length) await client.call('input.chunk', { sha256: h, offset, data: b.subarray(offset) as Uint8Array<ArrayBuffer> });
  assert.deepEqual(await client.call('input.finish', { sha256: h }), { size: b.length, sha256: h });
}

/**
 * Takes the database's write lock from a connection of its own (as another process could), so
 * that the master's next commit waits until `release`: the window in which a job is being stored
 * queued, or a start committed, held open on purpose.
 */
export async function writeLock(file: string): Promise<{ release(): Promise<void> }> {
  const db = await new Promise<sqlite3.Database>((resolve, reject) => {
    const d = new sqlite3.Database(file, sqlite3.OPEN_READWRITE, (err) => (err ? reject(err) : resolve(d)));
  });
  const run = (sql: string) => new Promise<void>((resolve, reject) => db.run(sql, (e) => (e ? reject(e) : resolve())));
  db.configure('busyTimeout', 5_000);
  try {
    await run('BEGIN IMMEDIATE');
  } catch (e) {
    await new Promise<void>((r) => db.close(() => r()));
    throw e;
  }
  return {
    async release() {
      try {
        await run('COMMIT');
      } finally {
        await new Promise<void>((r) => db.close(() => r()));
      }
    },
  };
}

/** Runs one statement on the database file from a connection of its own (a trigger that injects a fault, say). */
export function sqlRun(file: string, sql: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, sqlite3.OPEN_READWRITE, (err) => {
      if (err) return reject(err);
      db.run(sql, (e) => db.close(() => (e ? reject(e) : resolve())));
    });
  });
}

/** Slave `name` (enrolled, connected, subscribed with `capacity` slots) running a new job it accepted. */
export async function runningOnNewSlave(farm: TestFarm, client: RpcPeer, name = 'w1', capacity = 1): Promise<{ s: TestSlave; j: { id: number } }> {
  const s = await TestSlave.enroll(farm, name);
  await s.connect();
  await s.subscribe({ capacity });
  const { job: j } = await client.call('job.submit', { job: job() });
  await s.nextAssign(j.id);
  await waitJob(client, j.id, (x) => x.state === 'running', 'running');
  return { s, j };
}
