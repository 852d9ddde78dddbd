import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino, { type Logger } from 'pino';
import type { ParamsOf, ResultOf } from '../../protocol/catalogue.js';
import { BuilderError } from '../../protocol/errors.js';
import type { RpcPeer } from '../../protocol/rpc-peer.js';
import { loadIdentity } from '../../pki/index.js';
import { SlaveAgent } from '../agent.js';
import { Executor, sweepCgroups } from '../executor/index.js';
import { AttemptDirPool, listAttemptDirs } from './attempt-files.js';
import { AttemptTask, type TaskEnd } from './attempt-task.js';
import { compileSlaveRuntimeOptions, type CompiledSlaveRuntimeOptions, type SlaveRuntimeOptions } from './runtime-options.js';
import { SlaveDirLock } from './dir-lock.js';
import { SlotRecordFile } from './slot-record-file.js';

/** One attempt the slave holds, as {@link SlaveRuntime.attempts} reports it. */
export interface HeldAttempt {
  readonly jobId: number;
  readonly attempt: number;
  readonly slots: number;
  readonly phase: 'running' | 'delivering' | 'finishing' | 'done';
  readonly pid: number | undefined;
}

/** What {@link SlaveRuntime.shutdown} did. */
export interface ShutdownReport {
  /** Every attempt ended within the drain timeout. */
  readonly drained: boolean;
  /** Attempts killed at the drain deadline (reported `cancelled`, which the master requeues). */
  readonly killed: string[];
  /** Attempts whose delivery did not complete within the deliver timeout (kept on disk for the next start). */
  readonly kept: string[];
}

/**
 * The slave program: keeps a connection to the master (SlaveAgent), subscribes on every
 * (re)connect with what it runs and the attempts it still holds, serves attempt.assign and
 * attempt.cancel, runs attempts through the Executor and delivers their logs, artifacts and
 * outcomes (AttemptTask). See docs/slave.md ("The slave program").
 */
export class SlaveRuntime {
  readonly options: CompiledSlaveRuntimeOptions;
  readonly log: Logger;
  readonly executor: Executor;
  readonly agent: SlaveAgent;
  private readonly tasks = new Map<string, AttemptTask>();
  private readonly dirPool: AttemptDirPool;
  private readonly ending = new Set<Promise<TaskEnd>>();
  private slotRecord: SlotRecordFile | undefined;
  private peer: RpcPeer | undefined;
  private subscribed = false;
  private draining = false;
  private shutdownP: Promise<ShutdownReport> | undefined;
  /** DIR/slave.lock, held from start() to the end of the shutdown. */
  private dirLock: SlaveDirLock | undefined;
  private subscribedWaiters: Array<() => void> = [];

  constructor(opts: SlaveRuntimeOptions) {
    this.options = compileSlaveRuntimeOptions(opts);
    this.log = opts.logger ?? pino({ level: 'silent' });
    const o = this.options;
    // Enough recycled attempt dirs for every slot's attempt and one finishing behind each.
    this.dirPool = new AttemptDirPool(o.attemptsDir, Math.min(2 * o.capacity + 2, 256));
    this.executor = new Executor({
      ...o.executor,
      dataDir: o.dir,
      capacity: o.capacity,
      keepWorkDirs: o.keepWorkDirs,
      onSlotEvent: (e) => this.slotRecord?.onSlotEvent(e),
    });
    this.agent = new SlaveAgent({
      dir: o.dir,
      master: o.master,
      backoffMinMs: o.backoffMinMs,
      backoffMaxMs: o.backoffMaxMs,
      connectTimeoutMs: o.connectTimeoutMs,
      rpc: o.rpc,
      logger: this.log,
      onConnect: (peer) => this.onConnect(peer),
    });
  }

  /** Recovers the attempts a previous process left, opens the slot record, and starts connecting. */
  async start(): Promise<void> {
    const o = this.options;
    // The identity first: a wrong --dir fails with one clear error before anything is created in it.
    await loadIdentity(o.dir);
    // Before anything in DIR is touched: a second slave on it is refused here.
    const lock = SlaveDirLock.acquire(o.dir);
    if ('lock' in lock) this.dirLock = lock.lock;
    else this.log.warn({ why: lock.unlocked }, 'running without a lock on the slave directory: nothing stops a second slave on it');
    try {
      await this.startLocked();
    } catch (e) {
      // A start that failed leaves DIR free for the next attempt, in this process too.
      this.dirLock?.release();
      this.dirLock = undefined;
      throw e;
    }
  }

  /** The rest of {@link start}, with DIR locked. */
  private async startLocked(): Promise<void> {
    const o = this.options;
    await this.dirPool.clear();
    const cg = this.executor.options.cgroup;
    if (cg !== undefined) {
      // Before the recovery: whatever jobs of a previous process still run die with their cgroups.
      const swept = await sweepCgroups(cg);
      if (swept.found.length > 0) this.log.warn({ cgroups: swept.found }, 'killed what was left in the job cgroups of the previous run');
      for (const path of swept.left) this.log.warn({ path }, 'could not remove a job cgroup left by the previous run');
    }
    for (const d of await listAttemptDirs(o.attemptsDir)) {
      let t: AttemptTask | undefined;
      try {
        t = await AttemptTask.recover(this.taskContext(), d.jobId, d.attempt);
      } catch (e) {
        // An attempt dir the slave cannot read must not keep the slave from starting: it is set
        // aside (a name the scan ignores) for someone to look at, and not reported.
        const aside = join(o.attemptsDir, `${d.name}.unreadable-${Date.now()}`);
        this.log.error({ job: d.jobId, attempt: d.attempt, err: (e as Error).message, movedTo: aside }, 'cannot recover an attempt; set aside');
        await rename(join(o.attemptsDir, d.name), aside).catch(() => undefined);
        continue;
      }
      if (t === undefined) {
        this.log.warn({ job: d.jobId, attempt: d.attempt }, 'attempt was running when the slave stopped; dropped (the master requeues it)');
        continue;
      }
      this.log.info({ job: d.jobId, attempt: d.attempt }, 'recovered a finished attempt to deliver');
      this.track(t);
    }
    // After the recovery (which killed the leftover process groups): the slot work dirs are set aside and removed.
    for (const p of await this.executor.resetWorkDirs()) this.log.warn({ path: p.path, err: p.message }, 'could not remove a work dir left by the previous run; it only takes disk space');
    if (o.slotRecordFile !== undefined) this.slotRecord = new SlotRecordFile(o.slotRecordFile, o.capacity, { maxBytes: o.slotRecordMaxBytes });
    const { spawner, spawnerNote } = this.executor.options;
    if (spawnerNote === undefined) this.log.info({ spawner }, 'jobs start with the %s spawner', spawner);
    else this.log.warn({ spawner, why: spawnerNote }, 'jobs start with child_process (each start forks the slave): the native spawner is not available');
    const { cgroupNote } = this.executor.options;
    if (cg !== undefined) this.log.info({ cgroups: `${cg.parent}/${cg.prefix}*` }, 'each job runs in a cgroup of its own');
    else this.log.info({ why: cgroupNote }, 'jobs run without a cgroup of their own: a process that leaves its process group outlives cancel and timeout');
    await this.agent.start();
  }

  /** Attempts held now (running, or delivering their outcome). */
  attempts(): HeldAttempt[] {
    return [...this.tasks.values()].map((t) => ({ jobId: t.jobId, attempt: t.attempt, slots: t.slots, phase: t.phase, pid: t.pid }));
  }

  /** True while a connection is up and subscribed. */
  get connected(): boolean {
    return this.subscribed && this.peer !== undefined && !this.peer.closed;
  }

  /** Resolves once a connection is subscribed (for tests and the CLI's first log line). */
  waitSubscribed(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => this.subscribedWaiters.push(resolve));
  }

  private taskContext() {
    return { o: this.options, executor: this.executor, log: this.log, dirPool: this.dirPool };
  }

  private track(t: AttemptTask): void {
    this.tasks.set(t.key, t);
    const done = t.done.then((end) => {
      if (this.tasks.get(t.key) === t) this.tasks.delete(t.key);
      this.ending.delete(done);
      return end;
    });
    this.ending.add(done);
  }

  private async onConnect(peer: RpcPeer): Promise<void> {
    this.peer = peer;
    this.subscribed = false;
    peer.handle('attempt.assign', (p, ctx) => this.assign(p, ctx.peer)).handle('attempt.cancel', (p) => this.cancel(p));
    peer.on('close', () => {
      if (this.peer === peer) {
        this.peer = undefined;
        this.subscribed = false;
      }
      for (const t of this.tasks.values()) t.detach(peer);
    });
    const held = [...this.tasks.values()].filter((t) => !t.dropped);
    const o = this.options;
    const reply = await peer.call('slave.subscribe', {
      channels: [...o.channels],
      arches: [...o.arches],
      capacity: o.capacity,
      draining: this.draining,
      running: held.map((t) => ({ jobId: t.jobId, attempt: t.attempt, slots: t.slots })),
    });
    this.applySubscribeReply(peer, held, reply);
    this.subscribed = true;
    const w = this.subscribedWaiters;
    this.subscribedWaiters = [];
    for (const f of w) f();
  }

  private applySubscribeReply(peer: RpcPeer, held: AttemptTask[], reply: ResultOf<'slave.subscribe'>): void {
    const byKey = new Map(held.map((t) => [t.key, t]));
    const answered = new Set<string>();
    for (const k of reply.keep) {
      const key = `${k.jobId}-${k.attempt}`;
      const t = byKey.get(key);
      if (t === undefined) continue;
      answered.add(key);
      t.attach(peer, k.nextSeq);
    }
    for (const a of reply.abandon) {
      const key = `${a.jobId}-${a.attempt}`;
      const t = byKey.get(key);
      if (t === undefined) continue;
      answered.add(key);
      t.drop(`abandoned by the master: ${a.reason}`);
    }
    // The master decides: an attempt it neither keeps nor abandons is one it does not know.
    for (const t of held) if (!answered.has(t.key)) t.drop('the master did not keep it after the reconnect');
    this.log.info(
      { channels: this.options.channels, arches: this.options.arches, capacity: this.options.capacity, draining: this.draining, keep: reply.keep.length, abandon: held.length - reply.keep.length },
      'subscribed',
    );
  }

  /**
   * Serves attempt.assign: checks, starts, and answers at once (files, inputs and the job follow).
   * One exception: slots still held by attempts the master has abandoned (their process groups
   * are being killed) are waited for, up to `acceptWaitMs`, since the master counts them free.
   */
  private assign(p: ParamsOf<'attempt.assign'>, peer: RpcPeer, waited = false): ResultOf<'attempt.assign'> | Promise<ResultOf<'attempt.assign'>> {
    const key = `${p.jobId}-${p.attempt}`;
    const existing = this.tasks.get(key);
    // The master may resend an assignment whose reply it lost: the same attempt is accepted once.
    if (existing !== undefined && !existing.dropped && existing.phase !== 'done') return { accepted: true };
    if (existing !== undefined) throw new BuilderError('BUILDER_ERR_CONFLICT', `attempt ${p.attempt} of job ${p.jobId} has just ended here`);
    // An earlier attempt of the same job, abandoned (a subscribe's answer, a late cancel) and still
    // dying: the master counts it gone and may send the next attempt at once. Waited for as
    // abandoned slots are, or the new attempt is refused as "already runs here".
    const sameJob = this.executor.get(p.jobId) === undefined ? [] : [...this.tasks.values()].filter((t) => t.jobId === p.jobId && t.dropped);
    if (sameJob.length > 0 && !waited && !this.draining) {
      this.log.info({ job: p.jobId, attempt: p.attempt, dying: sameJob.map((t) => t.key) }, 'waiting for an abandoned attempt of the same job to die before accepting');
      return this.untilGone(sameJob).then(() => this.assign(p, peer, true));
    }
    // The usual case answers on this turn: the reply is written in this turn's microtasks, before
    // anything the attempt defers to setImmediate (its files, the fork of the job). After the wait
    // above, no second one: the two together could outlast the master's accept timeout.
    if (p.slots <= this.executor.freeSlots || this.draining || waited) return this.accept(p, peer);
    const dying = [...this.tasks.values()].filter((t) => t.dropped && t.running);
    const dyingSlots = dying.reduce((n, t) => n + t.slots, 0);
    if (dyingSlots === 0 || p.slots > this.executor.freeSlots + dyingSlots) return this.accept(p, peer);
    this.log.info({ job: p.jobId, attempt: p.attempt, dying: dying.map((t) => t.key) }, 'waiting for abandoned attempts to die before accepting');
    return this.untilGone(dying).then(() => this.accept(p, peer));
  }

  /** Resolves once the process groups of `tasks` are gone, or after `acceptWaitMs`. */
  private untilGone(tasks: readonly AttemptTask[]): Promise<unknown> {
    return Promise.race([Promise.all(tasks.map((t) => t.processGone())), sleep(this.options.acceptWaitMs, undefined, { ref: false })]);
  }

  /** Checks the assignment and starts it (throws what checkAssign and AttemptTask.begin throw). */
  private accept(p: ParamsOf<'attempt.assign'>, peer: RpcPeer): ResultOf<'attempt.assign'> {
    this.checkAssign(p);
    // Synchronous from here: the slots are taken (or refused) before another assignment is read.
    const task = AttemptTask.begin(this.taskContext(), this.executor, p);
    this.track(task);
    task.attach(peer, 1);
    this.log.info({ job: p.jobId, attempt: p.attempt, name: p.name, slots: p.slots, inputs: p.inputs.length }, 'attempt accepted');
    return { accepted: true };
  }

  private checkAssign(p: ParamsOf<'attempt.assign'>): void {
    const o = this.options;
    if (!o.channels.includes(p.channel)) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `channel ${p.channel} is not one of this slave's channels (${o.channels.join(', ')})`);
    }
    if (p.arch !== 'any' && !o.arches.includes(p.arch)) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `arch ${p.arch} is not one of this slave's architectures (${o.arches.join(', ')})`);
    }
    if (p.slots > o.capacity) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `a job of ${p.slots} slots cannot run on this slave of ${o.capacity}`);
    if (this.draining || this.executor.draining) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the slave is draining and takes no new attempts');
    const running = this.executor.get(p.jobId);
    if (running !== undefined) throw new BuilderError('BUILDER_ERR_CONFLICT', `job ${p.jobId} already runs here (attempt ${running.attempt})`);
    const free = this.executor.freeSlots;
    if (p.slots > free) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', `not enough free slots: ${free} free of ${o.capacity}, the job needs ${p.slots}`);
  }

  /**
   * Serves attempt.cancel: kills the group and answers once it is gone and its slots are free
   * (the master frees the slots on this answer and may assign new work into them at once).
   */
  private async cancel(p: ParamsOf<'attempt.cancel'>): Promise<ResultOf<'attempt.cancel'>> {
    const t = this.tasks.get(`${p.jobId}-${p.attempt}`);
    if (t === undefined || t.dropped || t.phase === 'done') return { found: false };
    if (p.reason === 'abandoned') t.drop('abandoned by the master (attempt.cancel)');
    else t.cancel(p.reason);
    await t.processGone();
    return { found: true };
  }

  /** Stops (or resumes) taking new attempts and tells the master. */
  async setDraining(draining: boolean): Promise<void> {
    this.draining = draining;
    if (draining) this.executor.drain();
    else this.executor.undrain();
    const peer = this.peer;
    if (peer === undefined || peer.closed) return;
    try {
      await peer.call('slave.draining', { draining }, { timeoutMs: 5_000 });
    } catch (e) {
      // The next subscribe carries the flag anyway.
      this.log.warn({ err: (e as Error).message }, 'could not tell the master about draining');
    }
  }

  /**
   * For SIGTERM/SIGINT: drain (tell the master), let running attempts finish up to the drain
   * timeout, kill what still runs (reported `cancelled`: the master requeues it), wait up to the deliver timeout for logs,
   * artifacts and finishes to reach the master, then disconnect. A second call kills what runs
   * at once.
   */
  shutdown(): Promise<ShutdownReport> {
    if (this.shutdownP !== undefined) {
      this.log.warn('stopping now: killing running attempts');
      for (const t of this.tasks.values()) t.killForShutdown('on a second stop signal');
      return this.shutdownP;
    }
    this.shutdownP = this.doShutdown();
    return this.shutdownP;
  }

  private async doShutdown(): Promise<ShutdownReport> {
    const o = this.options;
    this.log.info({ running: this.executor.running().length, drainTimeoutMs: o.drainTimeoutMs }, 'draining before stopping');
    await this.setDraining(true);
    const r = await this.executor.drainAndWait(o.drainTimeoutMs);
    const killed: string[] = [];
    if (!r.drained) {
      for (const t of this.tasks.values()) if (t.killForShutdown(`after the drain timeout of ${o.drainTimeoutMs} ms`)) killed.push(t.key);
    }
    // Killed groups end within the executor's kill grace; wait for them whatever the deliver timeout.
    await this.executor.drainAndWait(24 * 3600 * 1000);
    const deadline = sleep(o.deliverTimeoutMs, undefined, { ref: false });
    await Promise.race([Promise.allSettled([...this.ending]), deadline]);
    const kept = [...this.tasks.keys()];
    if (kept.length > 0) this.log.warn({ kept }, 'stopping with attempts not delivered; they are kept on disk for the next start');
    await Promise.all([...this.tasks.values()].map((t) => t.close()));
    await this.agent.stop();
    // The recycled attempt dirs are of use only to this process.
    await this.dirPool.clear().catch(() => undefined);
    this.slotRecord?.close();
    this.slotRecord = undefined;
    this.dirLock?.release();
    this.dirLock = undefined;
    this.log.info({ drained: r.drained, killed: killed.length, kept: kept.length }, 'slave stopped');
    return { drained: r.drained, killed, kept };
  }
}
