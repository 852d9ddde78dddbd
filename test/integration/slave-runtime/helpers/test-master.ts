import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { initCa, issueIdentity, loadCa, PkiRegistry } from '../../../../pki/index.js';
import {
  BuilderError,
  mutualTlsServerOptions,
  peerIdentity,
  RpcServer,
  type ParamsOf,
  type ResultOf,
  type RpcPeer,
  type RpcPeerOptions,
} from '../../../../protocol/index.js';
import { ArtifactReceiver } from '../../../../protocol/transfer/index.js';

type LogRecord = ParamsOf<'attempt.log'>['records'][number];

/** The test master's view of one attempt it assigned. */
export interface MasterAttempt {
  readonly jobId: number;
  readonly attempt: number;
  records: LogRecord[];
  storedThrough: number;
  /** Seqs received more than once (resends after a reconnect); they are skipped. */
  duplicates: number;
  finish: ParamsOf<'attempt.finish'> | undefined;
  finishCalls: number;
  /** attempt.log calls received. */
  logCalls: number;
  /** Committed artifacts: path -> sha256 of what the receiver stored. */
  artifacts: Map<string, { size: number; sha256: string; absPath: string }>;
  receivers: Map<string, ArtifactReceiver>;
  chunkCalls: number;
}

export interface TestMasterEvents {
  subscribe: [ParamsOf<'slave.subscribe'>];
  log: [MasterAttempt];
  finish: [MasterAttempt];
  peer: [RpcPeer];
}

/** A CA and a slave identity made once per test file (RSA key generation is slow). */
export interface TestPki {
  caDir: string;
  /** Issues a fresh slave identity into `dir` (the slave's data dir). */
  slaveIdentity(dir: string, name?: string): Promise<void>;
}

export async function makeTestPki(root: string): Promise<TestPki> {
  const caDir = join(root, 'ca');
  await initCa({ dir: caDir, hostnames: ['127.0.0.1'] });
  let n = 0;
  return {
    caDir,
    async slaveIdentity(dir, name) {
      const ca = await loadCa(caDir);
      const reg = await PkiRegistry.open(ca.paths.registry);
      try {
        await issueIdentity(ca, reg, { name: name ?? `slave-${++n}`, role: 'slave', outDir: dir });
      } finally {
        await reg.close();
      }
    },
  };
}

/**
 * A small reference master for the slave's tests: a real RpcServer with mutual TLS (the same
 * CA, the same catalogue) that serves every slave-to-master job method with the semantics of
 * docs/protocol.md (first copy of each seq kept, storedThrough, artifacts through a real
 * ArtifactReceiver with sha256, BAD_STATE for attempts it does not hold), keeps what it gets,
 * and lets a test assign, cancel, and cut the connection or the listener.
 */
export class TestMaster extends EventEmitter<TestMasterEvents> {
  readonly attempts = new Map<string, MasterAttempt>();
  readonly inputs = new Map<string, Buffer>();
  readonly subscribes: Array<ParamsOf<'slave.subscribe'>> = [];
  readonly drainingCalls: boolean[] = [];
  /** Delay before each attempt.log reply (a slow disk on the master). */
  logDelayMs = 0;
  /** When set, attempt.log answers storedThrough one below what it stored, once. */
  shortStoreOnce = false;
  /** When set, attempt.finish with `logEnd` is refused (BUILDER_ERR_INVALID_INPUT), as a master that does not take it would. */
  refuseLogEnd = false;
  /** When set, the first attempt.finish cuts the connection instead of answering. */
  dropOnFinishOnce = false;
  /** When true, subscribe keeps nothing (as if the master had requeued everything). */
  abandonAll = false;
  private server: RpcServer | undefined;
  private port = 0;

  constructor(
    private readonly caDir: string,
    private readonly artifactsRoot: string,
    private readonly rpc: RpcPeerOptions = {},
  ) {
    super();
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The connected slave's peer, if any. */
  get slave(): RpcPeer | undefined {
    for (const p of this.server?.peers ?? []) if (!p.closed && p.remote.role === 'slave') return p;
    return undefined;
  }

  async listen(port = this.port): Promise<void> {
    const ca = await loadCa(this.caDir);
    const [cert, key] = await Promise.all([readFile(ca.paths.serverCert, 'utf8'), readFile(ca.paths.serverKey, 'utf8')]);
    this.server = new RpcServer({
      ...this.rpc,
      host: '127.0.0.1',
      port,
      tls: mutualTlsServerOptions({ key, cert, ca: ca.certPem }, 5_000),
      authenticate: (s) => Promise.resolve(peerIdentity(s) ?? { reject: 'no identity' }),
      onPeer: (p) => this.onPeer(p),
    });
    const a = await this.server.listen();
    this.port = a.port;
  }

  /** Stops listening and drops every connection (the master is unreachable until {@link listen}). */
  async close(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
  }

  /** Cuts every connection at once, without a goodbye (a network drop); the listener stays. */
  dropConnections(): void {
    for (const p of this.server?.peers ?? []) p.destroy();
  }

  addInput(content: Buffer): { sha256: string; size: number } {
    const sha256 = createHash('sha256').update(content).digest('hex');
    this.inputs.set(sha256, content);
    return { sha256, size: content.length };
  }

  async waitForSlave(timeoutMs = 10_000): Promise<RpcPeer> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = this.slave;
      if (s !== undefined && this.subscribes.length > 0) return s;
      if (Date.now() > end) throw new Error('no slave subscribed');
      await sleep(10);
    }
  }

  /** Assigns an attempt to the connected slave (the test master records it first, as the real one would). */
  async assign(p: Partial<ParamsOf<'attempt.assign'>> & { jobId: number; command: ParamsOf<'attempt.assign'>['command'] }): Promise<ResultOf<'attempt.assign'>> {
    const params: ParamsOf<'attempt.assign'> = {
      attempt: 1,
      name: `job-${p.jobId}`,
      channel: 'main',
      arch: 'x86_64',
      slots: 1,
      env: {},
      timeoutMs: 0,
      inputs: [],
      ...p,
    };
    const key = `${params.jobId}-${params.attempt}`;
    this.attempts.set(key, {
      jobId: params.jobId,
      attempt: params.attempt,
      records: [],
      storedThrough: 0,
      duplicates: 0,
      finish: undefined,
      finishCalls: 0,
      logCalls: 0,
      artifacts: new Map(),
      receivers: new Map(),
      chunkCalls: 0,
    });
    const slave = await this.waitForSlave();
    try {
      return await slave.call('attempt.assign', params);
    } catch (e) {
      this.attempts.delete(key);
      throw e;
    }
  }

  async cancel(jobId: number, attempt: number, reason: 'cancelled' | 'timed_out' | 'abandoned'): Promise<ResultOf<'attempt.cancel'>> {
    const slave = await this.waitForSlave();
    return slave.call('attempt.cancel', { jobId, attempt, reason });
  }

  get(jobId: number, attempt = 1): MasterAttempt {
    const a = this.attempts.get(`${jobId}-${attempt}`);
    if (a === undefined) throw new Error(`no attempt ${jobId}-${attempt}`);
    return a;
  }

  /** Resolves with the attempt once its finish arrived. */
  async waitFinish(jobId: number, attempt = 1, timeoutMs = 30_000): Promise<MasterAttempt> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const a = this.attempts.get(`${jobId}-${attempt}`);
      if (a?.finish !== undefined) return a;
      if (Date.now() > end) throw new Error(`no finish for ${jobId}-${attempt}`);
      await sleep(10);
    }
  }

  /** The attempt's stdout (or stderr) as received, in seq order. */
  text(jobId: number, stream: 'stdout' | 'stderr' = 'stdout', attempt = 1): string {
    return Buffer.concat(
      this.get(jobId, attempt)
        .records.filter((r) => r.kind === 'data' && r.stream === stream)
        .map((r) => (r.kind === 'data' ? Buffer.from(r.data) : Buffer.alloc(0))),
    ).toString('utf8');
  }

  private held(jobId: number, attempt: number): MasterAttempt {
    const a = this.attempts.get(`${jobId}-${attempt}`);
    if (a === undefined || a.finish !== undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', `attempt ${attempt} of job ${jobId} is not running here`);
    return a;
  }

  private onPeer(peer: RpcPeer): void {
    this.emit('peer', peer);
    peer
      .handle('session.hello', (_p, ctx) => ({ name: ctx.remote.name, role: ctx.remote.role, masterVersion: 'test', serverTime: Date.now() }))
      .handle('slave.subscribe', (p) => {
        this.subscribes.push(p);
        this.emit('subscribe', p);
        const keep: ResultOf<'slave.subscribe'>['keep'] = [];
        const abandon: ResultOf<'slave.subscribe'>['abandon'] = [];
        for (const r of p.running) {
          const a = this.attempts.get(`${r.jobId}-${r.attempt}`);
          if (a !== undefined && a.finish === undefined && !this.abandonAll) keep.push({ jobId: r.jobId, attempt: r.attempt, nextSeq: a.storedThrough + 1 });
          else abandon.push({ jobId: r.jobId, attempt: r.attempt, reason: 'not held' });
        }
        return { keep, abandon };
      })
      .handle('slave.draining', (p) => {
        this.drainingCalls.push(p.draining);
        return {};
      })
      .handle('attempt.log', async (p) => {
        const a = this.held(p.jobId, p.attempt);
        a.logCalls++;
        if (this.logDelayMs > 0) await sleep(this.logDelayMs);
        for (const r of p.records) {
          if (r.seq <= a.storedThrough) {
            a.duplicates++;
            continue;
          }
          a.records.push(r.kind === 'data' ? { ...r, data: Buffer.from(r.data) } : r);
          a.storedThrough = r.seq;
        }
        this.emit('log', a);
        if (this.shortStoreOnce) {
          this.shortStoreOnce = false;
          // Forget the last record: the slave must resend it.
          a.records.pop();
          a.storedThrough = a.records[a.records.length - 1]?.seq ?? 0;
        }
        return { storedThrough: a.storedThrough };
      })
      .handle('input.read', (p) => {
        const buf = this.inputs.get(p.sha256);
        if (buf === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', 'no such input');
        return { data: buf.subarray(p.offset, p.offset + p.length) as Uint8Array<ArrayBuffer> };
      })
      .handle('artifact.begin', async (p) => {
        const a = this.held(p.jobId, p.attempt);
        const root = join(this.artifactsRoot, `${p.jobId}-${p.attempt}`);
        await mkdir(root, { recursive: true });
        // A resumed upload: the receiver of the lost connection lets go of its .part first.
        await a.receivers.get(p.path)?.abort(true);
        const r = await ArtifactReceiver.open(root, p.path, { size: p.size, sha256: p.sha256 });
        a.receivers.set(p.path, r);
        return { offset: r.offset };
      })
      .handle('artifact.chunk', async (p) => {
        const a = this.held(p.jobId, p.attempt);
        const r = a.receivers.get(p.path);
        if (r === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'no upload begun for this path');
        a.chunkCalls++;
        await r.write(p.offset, Buffer.from(p.data));
        return {};
      })
      .handle('artifact.finish', async (p) => {
        const a = this.held(p.jobId, p.attempt);
        const r = a.receivers.get(p.path);
        if (r === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'no upload begun for this path');
        const f = await r.finish();
        a.receivers.delete(p.path);
        a.artifacts.set(p.path, { size: f.size, sha256: f.sha256, absPath: f.absPath });
        return { size: f.size, sha256: f.sha256 };
      })
      .handle('attempt.finish', (p, ctx) => {
        const a = this.held(p.jobId, p.attempt);
        a.finishCalls++;
        if (this.dropOnFinishOnce) {
          this.dropOnFinishOnce = false;
          ctx.peer.destroy();
          throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'gone');
        }
        if (p.logEnd !== undefined) {
          // As the real master: the end is stored first, and only right after the records before it.
          if (this.refuseLogEnd) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'logEnd is not taken here');
          if (a.storedThrough < p.logEnd - 1) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `stored through ${a.storedThrough} only`);
          if (a.storedThrough === p.logEnd - 1 && a.records.at(-1)?.kind !== 'end') {
            a.records.push({ kind: 'end', seq: p.logEnd });
            a.storedThrough = p.logEnd;
          }
          const last = a.records.at(-1);
          if (last?.kind !== 'end' || last.seq !== p.logEnd) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `stored through ${a.storedThrough}: cannot end at ${p.logEnd}`);
        }
        const end = a.records[a.records.length - 1];
        if (end?.kind !== 'end') throw new BuilderError('BUILDER_ERR_BAD_STATE', 'the log has not ended');
        a.finish = p;
        this.emit('finish', a);
        return {};
      });
  }
}
