import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ParamsOf } from '../../protocol/catalogue.js';
import { BuilderError, isBuilderError } from '../../protocol/errors.js';
import { RpcCallError, type RpcPeer } from '../../protocol/rpc-peer.js';
import { uploadArtifact, type UploadTarget } from '../../protocol/transfer/index.js';
import type { AttemptHandle, Executor } from '../executor/index.js';
import { LogSpool, SpoolSender, type LogChunk, type SpoolRecord } from '../spool/index.js';
import { AttemptFiles, processStartTime, processStartTimeSync, type AttemptDirPool, type StoredOutcome, type UploadEntry } from './attempt-files.js';
import { fetchInputs, InputSpecError, type InputFile } from './fetch-inputs.js';
import { buildOutcome, capRefused, type FetchState } from './outcome.js';
import { callWithRetry, isConnectionLoss, isRetryable, isStale, rpcCode, type RetryPolicy } from './retry.js';
import type { CompiledSlaveRuntimeOptions } from './runtime-options.js';

/**
 * How a task ended:
 * - `acked`: attempt.finish was acknowledged; everything of the attempt was removed locally.
 * - `stale`: the master answered BAD_STATE/NOT_FOUND (not its current attempt); dropped.
 * - `refused`: the master refused attempt.finish otherwise (a bug on one side); dropped, logged.
 * - `dropped`: the master abandoned the attempt (subscribe reply or attempt.cancel `abandoned`); killed, removed.
 * - `kept`: the slave stopped before it could deliver; the files stay for the next start.
 */
export type TaskEnd = 'acked' | 'stale' | 'refused' | 'dropped' | 'kept';

/** What a task needs from the runtime. */
export interface TaskContext {
  readonly o: CompiledSlaveRuntimeOptions;
  readonly executor: Executor;
  readonly log: Logger;
  /** Where finished attempts' dirs are kept for reuse (none: each attempt makes and removes its own). */
  readonly dirPool?: AttemptDirPool;
}

type LogRecordWire = ParamsOf<'attempt.log'>['records'][number];

/** attempt.log answered with less stored than was sent: resend from the first seq it lacks. */
class ShortStore extends Error {
  constructor(readonly storedThrough: number) {
    super(`the master stored through seq ${storedThrough} only`);
  }
}

class Stopped extends Error {}

function toWire(r: SpoolRecord): LogRecordWire {
  switch (r.kind) {
    case 'data':
      // Wire bytes: a Buffer is a Uint8Array (msgpack bin); the schema's type names the plain ArrayBuffer kind.
      return { kind: 'data', seq: r.seq, stream: r.stream, data: r.data as Uint8Array<ArrayBuffer> };
    case 'dropped':
      return { kind: 'dropped', seq: r.seq, fromSeq: r.fromSeq, toSeq: r.toSeq, droppedBytes: r.droppedBytes };
    case 'end':
      return { kind: 'end', seq: r.seq };
  }
}

/** Error text for the master: stable code plus our own message, never a local path. */
function describe(e: unknown): string {
  if (e instanceof RpcCallError) {
    const code = (e.data as { code?: unknown } | undefined)?.code;
    return `${typeof code === 'string' ? code : String(e.rpcCode)}: ${e.message}`;
  }
  if (isBuilderError(e)) return `${e.code}: ${e.message}`;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'local error';
}

/**
 * One attempt on the slave, from accept to the master's acknowledgement of attempt.finish: runs
 * it through the executor, streams its spool to the master while a connection is live (and
 * resumes from the master's `nextSeq` after a reconnect), uploads its artifacts (resumable),
 * waits until the log's end record is stored, then reports the outcome. Everything it must not
 * lose is on disk in its {@link AttemptFiles}.
 */
export class AttemptTask {
  readonly key: string;
  readonly jobId: number;
  readonly attempt: number;
  readonly slots: number;
  readonly files: AttemptFiles;
  private readonly ctx: TaskContext;
  /** The task's logger, made at its first use (a pino child costs ~20 us: not on the accept path). */
  private _log: Logger | undefined;
  /** Set once the attempt's files are made (at once for a recovered attempt). */
  private spool: LogSpool | undefined;
  private sender: SpoolSender | undefined;
  /** Resolves true once the files and the spool are ready, false if they could not be made. */
  private ready: Promise<boolean> = Promise.resolve(false);
  private prepareError: unknown;
  /** The seq to start sending from once the spool is ready (an attach that came first). */
  private pendingNextSeq: number | undefined;
  private readonly retry: RetryPolicy;
  private handle: AttemptHandle | undefined;
  private processEnded = false;
  private outcome: StoredOutcome | undefined;
  private uploads = new Map<string, UploadEntry>();
  private live: RpcPeer | undefined;
  private waiters = new Set<() => void>();
  private cancelReason: 'cancelled' | 'timed_out' | undefined;
  private dropReason: string | undefined;
  private shutdownKill: string | undefined;
  private closed = false;
  private fetch: FetchState = 'none';
  private jobChoosesProgram = false;
  private timeoutMs = 0;
  private sendFailures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Aborted when the attempt stops talking to the master (dropped, or the slave stops): ends an upload under way. */
  private readonly talk = new AbortController();
  private _phase: 'running' | 'delivering' | 'finishing' | 'done' = 'running';
  private _done: Promise<TaskEnd> | undefined;

  private constructor(ctx: TaskContext, files: AttemptFiles, slots: number) {
    this.ctx = ctx;
    this.files = files;
    this.jobId = files.jobId;
    this.attempt = files.attempt;
    this.key = `${files.jobId}-${files.attempt}`;
    this.slots = slots;
    this.retry = { delayMs: ctx.o.retryDelayMs, maxRetries: ctx.o.maxRetries };
  }

  private get log(): Logger {
    return (this._log ??= this.ctx.log.child({ job: this.jobId, attempt: this.attempt }));
  }

  private useSpool(spool: LogSpool): void {
    this.spool = spool;
    this.sender = new SpoolSender(spool, (recs) => this.sendLog(recs), {
      window: this.ctx.o.logWindow,
      maxBatchBytes: this.ctx.o.logBatchBytes,
      onError: (e) => this.onSendError(e),
      // The end record goes in attempt.finish (logEnd): one round trip less per attempt.
      holdEnd: true,
    });
  }

  /**
   * A new assignment: starts it in the executor at once (synchronously: the slots are taken or
   * refused here, and the master gets its answer without waiting for the disk), while the
   * attempt's files and spool are made in the background. The job's process is not started
   * before they are ready (the executor awaits the input fetch, which awaits them); if they
   * cannot be made, the attempt fails as a setup failure. Throws what Executor.start throws.
   *
   * The files are made from the next turn of the event loop, not in this one: their calls are
   * synchronous (cheaper than the thread pool's round trips), and made here they ran, with the
   * job's spawn after them, before the answer was written: the master learnt of the start
   * 0.3 ms (median) to 2 ms later than it could (docs/benchmarks.md, "Jobs").
   */
  static begin(ctx: TaskContext, executor: Executor, a: ParamsOf<'attempt.assign'>): AttemptTask {
    const files = new AttemptFiles(ctx.o.attemptsDir, a.jobId, a.attempt, ctx.dirPool);
    const t = new AttemptTask(ctx, files, a.slots);
    t.start(executor, a);
    t.ready = nextTurn().then(() => t.prepare(a));
    t._done = t.lifecycle();
    return t;
  }

  private async prepare(a: ParamsOf<'attempt.assign'>): Promise<boolean> {
    try {
      await this.files.create({ jobId: a.jobId, attempt: a.attempt, slots: a.slots, name: a.name, acceptedAt: Date.now() });
      // The dir is new (or recycled and emptied) and holds no spool to keep.
      this.useSpool(await LogSpool.create(this.files.spoolDir, this.ctx.o.spool));
    } catch (e) {
      this.prepareError = e;
      this.log.error({ err: describe(e) }, 'cannot make the attempt files');
      return false;
    }
    if (this.pendingNextSeq !== undefined && this.live !== undefined && !this.dropped) this.sender?.start(this.pendingNextSeq);
    this.pendingNextSeq = undefined;
    if (this.dropped) void this.spool?.close().catch(() => undefined);
    return true;
  }

  /** The sink the executor writes to: the spool, once it is open. */
  private readonly sink = {
    append: async (chunks: readonly LogChunk[]): Promise<void> => {
      if (!(await this.ready) || this.spool === undefined) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the attempt has no log spool');
      await this.spool.append(chunks);
    },
  };

  /**
   * Reopens an attempt a previous slave process left. Returns undefined when there is nothing to
   * deliver (it was still running when that process died: its process group is killed and its
   * files removed, and the master's lost-slave rule requeues it).
   */
  static async recover(ctx: TaskContext, jobId: number, attempt: number): Promise<AttemptTask | undefined> {
    const files = new AttemptFiles(ctx.o.attemptsDir, jobId, attempt, ctx.dirPool);
    const j = await files.load();
    if (j.record === undefined || j.outcome === undefined) {
      await killLeftovers(files, j.pid, ctx.log);
      await files.remove();
      if (!ctx.o.keepWorkDirs) await ctx.executor.removeWorkDir(jobId, attempt).catch(() => undefined);
      return undefined;
    }
    await files.reopen();
    let spool: LogSpool;
    try {
      spool = await LogSpool.open(files.spoolDir, ctx.o.spool);
    } catch (e) {
      // The journal's descriptor is raw: nothing else would close it.
      await files.close().catch(() => undefined);
      throw e;
    }
    const t = new AttemptTask(ctx, files, j.record.slots);
    t.useSpool(spool);
    t.ready = Promise.resolve(true);
    t.processEnded = true;
    t.outcome = j.outcome;
    t.uploads = j.uploads;
    t._phase = 'delivering';
    t._done = t.lifecycle();
    return t;
  }

  private start(executor: Executor, a: ParamsOf<'attempt.assign'>): void {
    this.timeoutMs = a.timeoutMs;
    this.jobChoosesProgram = a.command.kind === 'argv' || a.command.text.startsWith('#!');
    const inputs: InputFile[] = a.inputs;
    this.handle = executor.start(
      {
        jobId: String(a.jobId),
        attempt: a.attempt,
        name: a.name,
        channel: a.channel,
        arch: a.arch,
        ...(a.command.kind === 'script' ? { script: a.command.text } : { argv: a.command.argv }),
        env: a.env,
        timeoutMs: a.timeoutMs,
        slots: a.slots,
        firstSeq: 1,
        fetchInputs: (dir, signal) => this.fetchInputs(inputs, dir, signal),
        onSpawn: (pid) => void this.recordPid(pid),
      },
      this.sink,
    );
  }

  /** Resolves when the task is over (see {@link TaskEnd}); never rejects. */
  get done(): Promise<TaskEnd> {
    return this._done ?? Promise.resolve('kept');
  }

  get phase(): 'running' | 'delivering' | 'finishing' | 'done' {
    return this._phase;
  }

  /** True while the job's process (or its setup) runs. */
  get running(): boolean {
    return this.handle !== undefined && !this.processEnded;
  }

  get dropped(): boolean {
    return this.dropReason !== undefined || this.closed;
  }

  /** The leader's pid while it runs. */
  get pid(): number | undefined {
    return this.handle?.pid;
  }

  /** The connection this attempt now talks to the master over, resending its log from `nextSeq`. */
  attach(peer: RpcPeer, nextSeq: number): void {
    if (this.dropped || peer.closed) return;
    this.live = peer;
    this.sendFailures = 0;
    if (this.sender === undefined) this.pendingNextSeq = nextSeq;
    else this.sender.start(nextSeq);
    this.wake();
  }

  /** The connection is gone: stop sending until the next {@link attach}. */
  detach(peer: RpcPeer): void {
    if (this.live !== peer) return;
    this.live = undefined;
    this.sender?.stop();
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /**
   * Resolves once the job's process group is gone and its slots are free again (at once when it
   * is not running). The executor releases the slots in its own reaction to the same result,
   * registered first, so they are free when this resolves.
   */
  processGone(): Promise<void> {
    return this.handle === undefined ? Promise.resolve() : this.handle.result.then(() => undefined);
  }

  /** attempt.cancel with `cancelled` or `timed_out`: kill the group; the outcome is still reported. */
  cancel(reason: 'cancelled' | 'timed_out'): void {
    if (!this.running || this.handle === undefined) return;
    this.cancelReason ??= reason;
    this.log.info({ reason }, 'cancelling attempt');
    this.handle.cancel();
  }

  /** The master does not want this attempt any more: kill it, send nothing more, remove its files. */
  drop(reason: string): void {
    if (this.dropped) return;
    this.dropReason = reason;
    this.log.info({ reason }, 'dropping attempt');
    this.handle?.cancel();
    this.stopTalking();
  }

  /**
   * Shutdown after the drain deadline: kill it and report it `cancelled` with no artifacts (the
   * master requeues an attempt the slave stopped on its own). False if it had ended.
   */
  killForShutdown(when: string): boolean {
    if (!this.running || this.handle === undefined || this.dropped) return false;
    this.shutdownKill = when;
    this.log.warn('drain deadline passed: killing the attempt; the master requeues it');
    this.handle.cancel();
    return true;
  }

  /** The slave stops: keep the files for the next start and stop all work. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.stopTalking();
    }
    await this.done;
  }

  private stopTalking(): void {
    this.live = undefined;
    this.talk.abort();
    this.sender?.stop();
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.wake();
    // The lifecycle's wait for the sender ends on `talk` (whileTalking): a stopped sender never
    // settles its `done`, and closing the spool does not wake a sender that is not running.
    if (this.dropReason !== undefined || this.closed) void this.spool?.close().catch(() => undefined);
  }

  private wake(): void {
    const w = [...this.waiters];
    this.waiters.clear();
    for (const f of w) f();
  }

  private throwIfStopped(): void {
    if (this.dropReason !== undefined || this.closed) throw new Stopped('attempt stopped');
  }

  /** A live connection to the master (waits for one). Rejects once the task is dropped or closed. */
  async waitLive(signal?: AbortSignal): Promise<RpcPeer> {
    for (;;) {
      this.throwIfStopped();
      if (signal?.aborted) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'cancelled');
      const p = this.live;
      if (p !== undefined && !p.closed) return p;
      await new Promise<void>((resolve) => {
        this.waiters.add(resolve);
        signal?.addEventListener('abort', () => resolve(), { once: true });
      });
    }
  }

  private async recordPid(pid: number): Promise<void> {
    try {
      if (!(await this.ready)) return;
      await this.files.writePid(pid, processStartTimeSync(pid));
    } catch (e) {
      this.log.warn({ err: describe(e) }, 'cannot record the job pid');
    }
  }

  /** Fetches the inputs (after the attempt's files are made); resolves with how many there were. */
  private async fetchInputs(inputs: readonly InputFile[], dir: string, signal: AbortSignal): Promise<number> {
    if (!(await this.ready)) {
      this.fetch = 'setup-failed';
      throw new BuilderError('BUILDER_ERR_UNAVAILABLE', `the slave cannot make the attempt's files: ${describe(this.prepareError)}`);
    }
    try {
      await fetchInputs(inputs, dir, signal, () => this.waitLive(signal), { chunkBytes: this.ctx.o.inputChunkBytes, retry: this.retry });
      this.fetch = 'ok';
      return inputs.length;
    } catch (e) {
      this.fetch = e instanceof InputSpecError ? 'job-failed' : 'setup-failed';
      if (e instanceof Stopped) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'attempt stopped during the input fetch');
      throw e;
    }
  }

  private async sendLog(recs: readonly SpoolRecord[]): Promise<void> {
    const peer = this.live;
    if (peer === undefined || peer.closed) throw new RpcCallError('connection closed', -32005);
    const max = this.ctx.o.maxRecordsPerCall;
    for (let i = 0; i < recs.length; i += max) {
      const part = recs.slice(i, i + max);
      const last = part[part.length - 1];
      if (last === undefined) break;
      const r = await peer.call('attempt.log', { jobId: this.jobId, attempt: this.attempt, records: part.map(toWire) });
      if (r.storedThrough < last.seq) throw new ShortStore(r.storedThrough);
    }
  }

  private onSendError(e: unknown): void {
    if (this.dropped) return;
    // Lost connection: the next subscribe reply says where to resume.
    if (isConnectionLoss(e)) return;
    if (isStale(e)) {
      this.drop(`the master refused the log: ${describe(e)}`);
      return;
    }
    const from = e instanceof ShortStore ? e.storedThrough + 1 : undefined;
    const delay = this.ctx.o.retryDelayMs * 2 ** Math.min(this.sendFailures, 5);
    this.sendFailures++;
    this.log.warn({ err: describe(e), retryInMs: delay }, 'log batch not stored; resending');
    const peer = this.live;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.dropped && peer !== undefined && this.live === peer && !peer.closed) this.sender?.start(from);
    }, delay);
  }

  private async lifecycle(): Promise<TaskEnd> {
    let end: TaskEnd;
    try {
      end = await this.deliver();
    } catch (e) {
      if (this.dropReason !== undefined) end = 'dropped';
      else if (this.closed) end = 'kept';
      else {
        this.log.error({ err: describe(e) }, 'attempt delivery failed on the slave; its files are kept for the next start');
        end = 'kept';
      }
    }
    this._phase = 'done';
    if (end !== 'kept') await this.cleanup();
    else {
      this.sender?.stop();
      await this.spool?.close().catch(() => undefined);
      await this.files.close().catch(() => undefined);
    }
    this.log.info({ end }, 'attempt done on the slave');
    return end;
  }

  private async deliver(): Promise<TaskEnd> {
    if (this.handle !== undefined && !this.processEnded) {
      const r = await this.handle.result;
      this.processEnded = true;
      this.throwIfStopped();
      let outcome = buildOutcome(r, { cancelReason: this.cancelReason, fetch: this.fetch, jobChoosesProgram: this.jobChoosesProgram, timeoutMs: this.timeoutMs });
      if (this.shutdownKill !== undefined && r.cancelled && this.cancelReason === undefined) {
        // Killed by our own shutdown, not by the job or the master: `cancelled` tells the master
        // to run it again; the partial output of a killed build is not uploaded.
        const why = `the slave shut down and killed it ${this.shutdownKill}; its output was not uploaded`;
        outcome = { ...outcome, state: 'cancelled', setupFailure: false, reason: outcome.reason === null ? why : `${why}; ${outcome.reason}`.slice(0, 1024), artifacts: [], refused: [], conflicts: [] };
      }
      this.outcome = outcome;
      try {
        if (await this.ready) await this.files.writeOutcome(this.outcome);
      } catch (e) {
        this.log.warn({ err: describe(e) }, 'cannot append the outcome to the attempt journal (a restart now would lose this attempt)');
      }
      this.log.info(
        { state: this.outcome.state, exitCode: r.exitCode, signal: r.signal, setupFailure: this.outcome.setupFailure, artifacts: this.outcome.artifacts.length, refused: this.outcome.refused.length, lastSeq: r.lastSeq },
        'attempt ended',
      );
    }
    const outcome = this.outcome;
    if (outcome === undefined) throw new BuilderError('BUILDER_ERR_INTERNAL', 'attempt has no outcome');
    this._phase = 'delivering';
    if (this.spool !== undefined && this.sender !== undefined) {
      const spool = this.spool;
      // Output the spool could not store (a full disk) is declared in the log: a `dropped` marker
      // for its seqs, before the end.
      const lost = !spool.ended && outcome.lastSeq > spool.lastSeq ? { fromSeq: spool.lastSeq + 1, toSeq: outcome.lastSeq, droppedBytes: outcome.logLostBytes ?? 0 } : undefined;
      await spool.end(lost);
      if (lost !== undefined) this.log.warn(lost, 'output the slave could not store is marked dropped in the log');
      if (spool.endInMemory) this.log.warn("the log's end could not be written to the spool; it is delivered from memory (a restart before then forgets it)");
      for (const a of outcome.artifacts) {
        if (!this.uploads.has(a.path)) await this.uploadOne(a);
      }
      // The sender settles `done` only while it runs: a lost connection or a retry timer leaves
      // it stopped, and the wait then ends when the task stops talking (drop, or the slave stops).
      await this.whileTalking(this.sender.done);
    } else {
      // No spool (its files could not be made): the log is just its end.
      await callWithRetry(() => this.waitLive(), (p) => p.call('attempt.log', { jobId: this.jobId, attempt: this.attempt, records: [{ kind: 'end', seq: 1 }] }), this.retry);
    }
    this.throwIfStopped();
    this._phase = 'finishing';
    return this.finish(outcome);
  }

  /** `p`, or a {@link Stopped} rejection once the task stops talking to the master (dropped or closed). */
  private whileTalking<T>(p: Promise<T>): Promise<T> {
    const signal = this.talk.signal;
    if (signal.aborted) return Promise.reject(new Stopped('attempt stopped'));
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(new Stopped('attempt stopped'));
      signal.addEventListener('abort', onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  private uploadTarget(peer: RpcPeer, path: string): UploadTarget {
    const k = { jobId: this.jobId, attempt: this.attempt };
    return {
      begin: (info) => peer.call('artifact.begin', { ...k, path: info.path, size: info.size, sha256: info.sha256 }),
      sendChunk: async (offset, data) => {
        await peer.call('artifact.chunk', { ...k, path, offset, data: data as Uint8Array<ArrayBuffer> });
      },
      finish: () => peer.call('artifact.finish', { ...k, path }),
    };
  }

  private async uploadOne(a: StoredOutcome['artifacts'][number]): Promise<void> {
    let tries = 0;
    for (;;) {
      const peer = await this.waitLive();
      try {
        const r = await uploadArtifact({ absPath: a.absPath, path: a.path, size: a.size, sha256: a.sha256 }, this.uploadTarget(peer, a.path), {
          chunkBytes: this.ctx.o.uploadChunkBytes,
          window: this.ctx.o.uploadWindow,
          // A slave stopping (deliver timeout) or an attempt dropped does not send the rest: the
          // upload resumes at the next start, from the bytes the master has.
          signal: this.talk.signal,
        });
        this.log.debug({ path: a.path, size: a.size, resumedAt: r.resumedAt }, 'artifact uploaded');
        await this.recordUpload({ path: a.path, size: a.size, sha256: a.sha256 });
        return;
      } catch (e) {
        this.throwIfStopped();
        if (isConnectionLoss(e)) {
          if (!peer.closed) await sleep(10);
          continue;
        }
        if (isRetryable(e) && tries < this.retry.maxRetries) {
          await sleep(this.retry.delayMs * 2 ** tries);
          tries++;
          continue;
        }
        const failed = e instanceof RpcCallError ? 'upload-failed' : isBuilderError(e, 'BUILDER_ERR_CHECKSUM') || isBuilderError(e, 'BUILDER_ERR_CONFLICT') ? 'changed' : 'unreadable';
        this.log.warn({ path: a.path, err: describe(e), code: rpcCode(e) }, 'artifact not uploaded');
        await this.recordUpload({ path: a.path, failed, detail: describe(e) });
        return;
      }
    }
  }

  private async recordUpload(e: UploadEntry): Promise<void> {
    this.uploads.set(e.path, e);
    try {
      if (!(await this.ready)) return;
      await this.files.appendUpload(e);
    } catch (err) {
      this.log.warn({ err: describe(err) }, 'cannot record an upload (a restart would upload it again)');
    }
  }

  /** The attempt.finish params from the outcome and the uploads. */
  finishParams(outcome: StoredOutcome): ParamsOf<'attempt.finish'> {
    const refused = [...outcome.refused];
    const artifacts: Array<{ path: string; size: number; sha256: string }> = [];
    for (const a of outcome.artifacts) {
      const u = this.uploads.get(a.path);
      if (u === undefined) continue;
      if ('failed' in u) refused.push({ path: a.path, reason: u.failed, detail: u.detail });
      else artifacts.push({ path: u.path, size: u.size, sha256: u.sha256 });
    }
    return {
      jobId: this.jobId,
      attempt: this.attempt,
      state: outcome.state,
      exitCode: outcome.exitCode,
      signal: outcome.signal === null ? null : outcome.signal.slice(0, 16),
      reason: outcome.reason,
      setupFailure: outcome.setupFailure,
      refused: capRefused(refused),
      conflicts: outcome.conflicts,
      artifacts: artifacts.slice(0, 10_000),
    };
  }

  /**
   * attempt.finish, carrying the log's end record (`logEnd`) unless the master has it already.
   * A master that refuses `logEnd` otherwise than as stale (an older master's schema, or records
   * missing before the end) gets the end through attempt.log first, then the finish without it.
   */
  private async finish(outcome: StoredOutcome): Promise<TaskEnd> {
    const params = this.finishParams(outcome);
    const spool = this.spool;
    const logEnd = spool !== undefined && spool.ended && spool.ackedSeq < spool.lastSeq ? spool.lastSeq : undefined;
    try {
      if (logEnd === undefined) await callWithRetry(() => this.waitLive(), (p) => p.call('attempt.finish', params), this.retry);
      else await this.finishWithEnd(params, logEnd);
      this.log.info({ state: params.state, artifacts: params.artifacts.length, refused: params.refused.length }, 'attempt finish acknowledged');
      return 'acked';
    } catch (e) {
      this.throwIfStopped();
      if (isStale(e)) {
        this.log.info({ err: describe(e) }, 'the master no longer holds this attempt; dropping it');
        return 'stale';
      }
      this.log.error({ err: describe(e) }, 'the master refused attempt.finish; dropping the attempt');
      return 'refused';
    }
  }

  private async finishWithEnd(params: ParamsOf<'attempt.finish'>, logEnd: number): Promise<void> {
    try {
      await callWithRetry(() => this.waitLive(), (p) => p.call('attempt.finish', { ...params, logEnd }), this.retry);
      return;
    } catch (e) {
      this.throwIfStopped();
      if (isStale(e)) throw e;
      this.log.warn({ err: describe(e) }, 'attempt.finish with the log end refused; sending the end through attempt.log');
    }
    await callWithRetry(() => this.waitLive(), (p) => p.call('attempt.log', { jobId: this.jobId, attempt: this.attempt, records: [{ kind: 'end', seq: logEnd }] }), this.retry);
    await callWithRetry(() => this.waitLive(), (p) => p.call('attempt.finish', params), this.retry);
  }

  private async cleanup(): Promise<void> {
    this.sender?.stop();
    try {
      await this.ready;
      // The spool's segment is in the attempt dir: closing it and removing the dir removes both.
      // A failed spool close still lets the journal close and the dir go.
      await this.spool?.close().catch((e: unknown) => this.log.warn({ err: describe(e) }, 'cannot close the attempt log spool'));
      await this.files.remove();
      if (!this.ctx.o.keepWorkDirs) await this.ctx.executor.removeWorkDir(this.jobId, this.attempt);
    } catch (e) {
      this.log.warn({ err: describe(e) }, 'cannot remove the attempt files');
    }
  }
}

/** After a crash of the slave: SIGKILL the group of a job it had started, if that very process still runs. */
async function killLeftovers(files: AttemptFiles, p: { pid: number; startTime: string | undefined } | undefined, log: Logger): Promise<void> {
  if (p === undefined) return;
  const now = await processStartTime(p.pid);
  // Security: a recycled pid belongs to someone else; only the same start time is the same process.
  if (now === undefined || p.startTime === undefined || now !== p.startTime) return;
  try {
    process.kill(-p.pid, 'SIGKILL');
    log.warn({ job: files.jobId, attempt: files.attempt, pid: p.pid }, 'killed the leftover process group of an attempt from before the restart');
  } catch {
    // gone meanwhile
  }
}
