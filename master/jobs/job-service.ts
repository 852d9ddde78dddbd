import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open as openFile, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import ms from 'ms';
import { BuilderError, ErrorCodes, RpcCallError, checkName, checkRelativePath, type CallContext, type ParamsOf, type ResultOf, type RpcMethods, type RpcPeer } from '../../protocol/index.js';
import { CronRunner } from '../cron/index.js';
import { Scheduler, schedJobOf, type Assignment, type DeadlineReport, type FinishResult, type Quarantine, type SchedJob } from '../scheduler/index.js';
import { MasterStore, isFinalState, type Job, type NewJob, type TransitionResult } from '../store/index.js';
import { inOrder } from '../in-order.js';
import { fileAttempt, promotedOf } from './artifact-filing.js';
import { registerClientHandlers } from './client-handlers.js';
import { InputStore } from './input-store.js';
import { compileJobServiceOptions, type CompiledJobServiceOptions, type JobServiceOptions } from './job-options.js';
import { AttemptLogStore } from './log-store.js';
import { UploadTable } from './upload-table.js';
import { sha256File } from '../../protocol/transfer/index.js';

/** A slave's subscribed connection. */
interface SlaveConn {
  peer: RpcPeer;
  since: number;
  /** The slave said it is draining itself (slave.subscribe / slave.draining). */
  selfDraining: boolean;
}

interface Committed {
  size: number;
  sha256: string;
}

const ACTIVE = new Set(['dispatched', 'running']);
/** How long a job whose dispatch write failed keeps its slots before the store is asked again. */
const DISPATCH_RETRY_MS = 1_000;

/** What slave.subscribe answers: the reported attempts the slave keeps (and where their logs resume), and those it must drop. */
type SubscribeAnswer = ResultOf<'slave.subscribe'>;

function msgOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Caps a reason at the width the store and the catalogue take. */
/** `s` cut to `n` UTF-16 units at most, the last one an ellipsis when it was cut. */
export function clip(s: string, n = 1000): string {
  if (s.length <= n) return s;
  if (n < 2) return n === 1 ? '…' : '';
  // Not between the two halves of a surrogate pair (an emoji, say).
  const cut = /[\uD800-\uDBFF]/.test(s[n - 2]!) ? n - 2 : n - 1;
  return s.slice(0, cut) + '…';
}

/**
 * The master's job machinery: the store, the dispatcher and the cron runner wired together
 * (docs/scheduler.md "Wiring"), and every job method of the catalogue. Transport-neutral: it
 * serves whatever RpcPeer it is attached to; the catalogue checks roles and params first.
 *
 * Rule of the house: the store is the truth; every scheduler call follows a successful
 * compare-and-set in the store, so two paths racing on one job (an accept reply and its
 * timeout, a cancel and a finish) change it once.
 */
export class JobService {
  readonly options: CompiledJobServiceOptions;
  readonly store: MasterStore;
  readonly sched: Scheduler;
  readonly logs: AttemptLogStore;
  readonly inputs: InputStore;
  private cron!: CronRunner;
  private readonly uploads: UploadTable;
  private readonly slaves = new Map<string, SlaveConn>();
  private readonly graceTimers = new Map<string, NodeJS.Timeout>();
  /**
   * The tail of the work queued per slave name that decides which of its attempts it keeps: a
   * subscribe's reconcile (read each reported attempt, then register the connection), the grace
   * period's requeue of a lost slave's jobs, and a kill (cancel, master-side timeout) waiting to
   * reach it. One at a time, or a subscribe could tell the slave to keep an attempt that a grace
   * expiry or a cancel then took away without telling it (two races a review reproduced).
   */
  private readonly slaveTurns = new Map<string, Promise<void>>();
  private readonly committed = new Map<string, Map<string, Committed>>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly logOrder = new Map<string, Promise<void>>();
  /** Jobs whose queued -> dispatched write is under way or being retried (dispatch, dispatchFailed). */
  private readonly dispatching = new Map<number, object>();
  /** attempt.finish calls in turn per `jobId:attempt`. */
  private readonly finishTurns = new Map<string, Promise<void>>();
  /** Attempts the master ended that are being killed, by job: their slots free at the slave's report, or at the deadline (`timer`, once the slave confirmed the kill). */
  private readonly killing = new Map<number, { timer: NodeJS.Timeout | undefined; release: () => void }>();
  /**
   * The store's row of each attempt this service dispatched, as its last own write returned it
   * (dispatched, then running), so that attempt.log and attempt.finish check the holder without a
   * read (a read queues behind every other one on the store's single reader connection, which
   * is the longest wait of a job's slot time under load). An entry is dropped before and after
   * every other transition of that job, so it is never newer than the store; a miss reads the store.
   */
  private readonly heldRows = new Map<number, Job>();
  /**
   * The dispatched -> running write of each accepted attempt while it is being committed. A
   * slave's report that arrives meanwhile (a job that ended at once) waits for it instead of
   * reading the row and issuing a second start that one of the two would lose.
   */
  private readonly starting = new Map<number, { attempt: number; done: Promise<unknown> }>();
  /**
   * Priorities of the jobs being stored queued whose jobQueued is not made yet (submits that
   * found no free slot, cron fires), as priority -> number of jobs. See {@link submit}.
   */
  private readonly storingQueued = new Map<number, number>();
  private wakeTimer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  /** The tail of the work queued per image name (see withImageName). */
  private readonly imageNames = new Map<string, Promise<void>>();
  /** The tail of the work queued per input sha256 (checkInputs, the input retention). */
  private readonly inputTurns = new Map<string, Promise<void>>();
  private wakeAt = Infinity;
  private stopping = false;

  private constructor(
    readonly dir: string,
    options: CompiledJobServiceOptions,
    store: MasterStore,
    readonly log: Logger,
  ) {
    this.options = options;
    this.store = store;
    // The dispatcher's accept deadline is a backstop behind the assignment call's own timeout:
    // that plus 5 s, or twice it when it is shorter.
    this.sched = new Scheduler({ ...options.scheduler, acceptTimeoutMs: options.acceptTimeoutMs + Math.min(5_000, options.acceptTimeoutMs), timeoutGraceMs: options.timeoutMarginMs });
    this.logs = new AttemptLogStore({ dir: join(dir, 'logs'), fsync: options.logFsync, maxBytes: options.logMaxBytes });
    this.inputs = new InputStore(join(dir, 'inputs'), options);
    this.uploads = new UploadTable('artifact', options.maxOpenUploads, options.maxOpenUploadsPerPeer, options.uploadIdleMs, { maxBytes: options.maxArtifactBytes });
  }

  /**
   * Opens the store in `dir`, rebuilds the dispatcher from the active jobs (restart after a
   * crash: queued jobs queue again; dispatched and running ones stay held by their slave, whose
   * grace period starts now), and starts the cron runner.
   */
  static async open(dir: string, opts: JobServiceOptions, log: Logger): Promise<JobService> {
    const o = compileJobServiceOptions(dir, opts);
    await Promise.all(['logs', 'inputs', 'uploads', 'packages', 'images'].map((d) => mkdir(join(dir, d), { recursive: true })));
    await mkdir(o.incomingDir, { recursive: true });
    // A failing checkpoint lets the WAL grow (nothing is lost): say so, at most once a minute.
    let lastWarnAt = 0;
    let failures = 0;
    const onCheckpointError = (e: unknown): void => {
      failures++;
      if (Date.now() - lastWarnAt < 60_000) return;
      lastWarnAt = Date.now();
      log.warn({ err: msgOf(e), failures }, 'WAL checkpoint failed; the WAL grows until one succeeds');
      failures = 0;
    };
    const store = await MasterStore.open({ ...o.store, dir, onCheckpointError });
    const svc = new JobService(dir, o, store, log);
    try {
      await svc.restore();
    } catch (e) {
      await svc.stop();
      throw e;
    }
    return svc;
  }

  private async restore(): Promise<void> {
    const avoid = new Map<number, string>();
    for (const a of await this.store.listSetupFailureAvoids()) avoid.set(a.jobId, a.slave);
    const queued: SchedJob[] = [];
    const holders = new Set<string>();
    let held = 0;
    for (const j of await this.store.listActiveJobs()) {
      if (j.state === 'queued') {
        const av = avoid.get(j.id);
        queued.push(av === undefined ? schedJobOf(j) : { ...schedJobOf(j), avoid: [av] });
      } else if (j.slave !== null) {
        this.sched.jobHeld(schedJobOf(j), j.slave, j.state === 'running' ? 'running' : 'assigned', j.startedAt ?? undefined);
        holders.add(j.slave);
        held++;
      }
    }
    this.handle(this.sched.jobsQueued(queued));
    for (const s of holders) this.startGrace(s);
    if (queued.length + held > 0) this.log.info({ queued: queued.length, held, slaves: [...holders] }, 'jobs restored from the store');
    this.cron = new CronRunner(
      this.store,
      (job, schedule) => {
        this.log.info({ job: job.id, schedule: schedule.id, name: job.name }, 'schedule fired: job queued');
        this.handle(this.sched.jobQueued(schedJobOf(job)));
      },
      {
        ...this.options.cron,
        onError: (err, id) => this.log.error({ schedule: id, err: msgOf(err) }, 'schedule could not fire'),
        onFiring: (template) => {
          let priority: number;
          try {
            priority = this.store.checkJob(template).priority;
          } catch {
            // The fire's own check refuses it the same way: no job will be stored.
            return () => undefined;
          }
          return this.storingQueuedBegin(priority);
        },
      },
    );
    await this.cron.start();
    if (this.options.logRetentionMs > 0 || this.options.imageRetentionMs > 0 || this.options.inputRetentionMs > 0 || this.options.jobRetentionMs > 0) {
      this.retentionTimer = setInterval(() => this.sweepRetention(), this.options.retentionSweepMs);
      this.retentionTimer.unref();
      this.sweepRetention();
    }
  }

  /**
   * One pass of the log retention: the logs of attempts that ended more than `logRetentionMs`
   * ago are removed, 500 at a time, oldest first. Each batch is recorded in the store before its
   * files go, so `log.read` answers "removed" rather than reopening a file being deleted. A
   * running attempt is never touched (it has no end yet).
   */
  private async sweepLogs(): Promise<void> {
    const before = Date.now() - this.options.logRetentionMs;
    let removed = 0;
    for (;;) {
      const batch = await this.store.attemptLogsEndedBefore(before, 500);
      if (batch.length === 0 || this.stopping) break;
      await this.store.markLogsRemoved(batch);
      for (const a of batch) await this.logs.remove(a.jobId, a.attempt);
      removed += batch.length;
      if (batch.length < 500) break;
    }
    if (removed > 0) this.log.info({ logs: removed, endedBefore: new Date(before).toISOString() }, 'logs removed by retention');
  }

  /**
   * Runs `fn` alone for image name `name`: the image retention's decision and move of a name's
   * job directories, and image.promote of that name, never overlap (a job being removed is
   * never promoted, a promoted one never removed).
   */
  withImageName<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return inOrder(this.imageNames, name, fn);
  }

  /**
   * One pass of the image retention: the images of each finished job whose kept images are all
   * older than `imageRetentionMs` are removed (`DIR/images/<name>/<job id>/`), except those of
   * the newest `imageKeep` succeeded jobs of that name and of the promoted job
   * (`images/<name>/current`). 500 jobs per batch, by job id. Per name, under
   * {@link withImageName}, each doomed directory is first renamed to `.removing-<job id>` (out of
   * image.list and image.promote at once); then the batch is recorded in the store
   * (artifacts.removed_at), then the files go. A crash in between leaves `.removing-*`
   * directories, which every pass removes first; a job whose directory is gone but is not
   * recorded yet is found again and recorded.
   */
  private async sweepImages(): Promise<void> {
    const before = Date.now() - this.options.imageRetentionMs;
    const imagesDir = join(this.dir, 'images');
    await this.removeImageLeftovers(imagesDir);
    let cursor = 0;
    let removed = 0;
    for (;;) {
      const batch = await this.store.imageJobsBefore(before, cursor, 500);
      if (batch.length === 0 || this.stopping) break;
      cursor = batch[batch.length - 1]!.jobId;
      const byName = new Map<string, number[]>();
      for (const j of batch) byName.set(j.name, [...(byName.get(j.name) ?? []), j.jobId]);
      const doomed: Array<{ jobId: number; moved: string }> = [];
      for (const [name, ids] of byName) {
        await this.withImageName(name, async () => {
          const keep = new Set(await this.store.newestImageJobs(name, this.options.imageKeep));
          const promoted = await promotedOf(imagesDir, name);
          if (promoted !== null) keep.add(promoted);
          for (const id of ids) {
            if (keep.has(id)) continue;
            const moved = join(imagesDir, name, `.removing-${id}`);
            try {
              await rename(join(imagesDir, name, String(id)), moved);
            } catch (e) {
              // Gone already (a crash after the move, before the record): recorded below all the same.
              if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
                this.log.warn({ job: id, image: name, err: msgOf(e) }, 'image retention: cannot move the images aside; kept for the next pass');
                continue;
              }
            }
            doomed.push({ jobId: id, moved });
          }
        });
      }
      if (doomed.length > 0) {
        await this.store.markImagesRemoved(doomed.map((j) => j.jobId));
        for (const j of doomed) {
          await rm(j.moved, { recursive: true, force: true }).catch((e: unknown) => this.log.warn({ job: j.jobId, path: j.moved, err: msgOf(e) }, 'image retention: cannot remove; tried again at the next pass'));
        }
        removed += doomed.length;
      }
      if (batch.length < 500) break;
    }
    if (removed > 0) this.log.info({ jobs: removed, newestBefore: new Date(before).toISOString(), keepPerName: this.options.imageKeep }, 'images removed by retention');
  }

  /** Removes the `DIR/images/<name>/.removing-*` directories a pass left (a crash, a failed rm). */
  private async removeImageLeftovers(imagesDir: string): Promise<void> {
    let names: string[];
    try {
      names = await readdir(imagesDir);
    } catch {
      return;
    }
    for (const n of names) {
      let entries: string[];
      try {
        entries = await readdir(join(imagesDir, n));
      } catch {
        continue;
      }
      for (const e of entries) {
        if (!e.startsWith('.removing-')) continue;
        await rm(join(imagesDir, n, e), { recursive: true, force: true }).catch((err: unknown) => this.log.warn({ path: join(imagesDir, n, e), err: msgOf(err) }, 'image retention: cannot remove'));
      }
    }
  }

  /** One pass of each retention that is on (logs, then images); never two passes at once. */
  private sweepRetention(): void {
    if (this.sweeping !== undefined || this.stopping) return;
    const run = async (): Promise<void> => {
      // Each on its own: a failing log pass does not skip the image pass.
      if (this.options.logRetentionMs > 0) await this.sweepLogs().catch((e: unknown) => this.log.error({ err: msgOf(e) }, 'log retention pass failed'));
      if (this.options.imageRetentionMs > 0 && !this.stopping) await this.sweepImages().catch((e: unknown) => this.log.error({ err: msgOf(e) }, 'image retention pass failed'));
      // Jobs before inputs: a removed job no longer names its inputs.
      if (this.options.jobRetentionMs > 0 && !this.stopping) await this.sweepJobs().catch((e: unknown) => this.log.error({ err: msgOf(e) }, 'job retention pass failed'));
      if (this.options.inputRetentionMs > 0 && !this.stopping) await this.sweepInputs().catch((e: unknown) => this.log.error({ err: msgOf(e) }, 'input retention pass failed'));
    };
    const p = run().finally(() => {
      this.sweeping = undefined;
    });
    this.sweeping = p;
    this.track('retention', p);
  }

  /**
   * First step of a shutdown, before the connections close: from now on nothing is dispatched
   * and a closing slave connection starts no grace period (its jobs stay as the store has them
   * for the next start).
   */
  beginStop(): void {
    this.stopping = true;
  }

  /** Stops timers and the cron runner, waits for work in progress, closes files and the store. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of this.graceTimers.values()) clearTimeout(t);
    this.graceTimers.clear();
    for (const k of this.killing.values()) clearTimeout(k.timer);
    this.killing.clear();
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    await this.cron?.stop();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    await this.uploads.close();
    await this.inputs.close();
    await this.logs.close();
    await this.store.close();
  }

  /** Runs `p` in the background, logging a failure; stop() waits for it. */
  private track(what: string, p: Promise<unknown>): void {
    const q = p.catch((e: unknown) => {
      if (!this.stopping) this.log.error({ err: msgOf(e), what }, 'job service task failed');
    });
    this.inflight.add(q);
    void q.finally(() => this.inflight.delete(q));
  }

  // ---- dispatch ----

  /** Persists and sends each assignment, then re-arms the dispatcher's timer. */
  private handle(assignments: readonly Assignment[]): void {
    for (const a of assignments) this.track('dispatch', this.dispatch(a));
    this.rearm();
  }

  private async dispatch(a: Assignment): Promise<void> {
    if (this.stopping) return;
    let r: TransitionResult;
    // Until its write is settled, the store has the job queued while the dispatcher holds it for
    // a.slave: a reconcile or grace expiry of that slave must not take the store's word for it.
    // Its own mark: a dispatch of the job made by dispatchFailed sets one of its own, which this
    // one must not take away.
    const mark = {};
    this.dispatching.set(a.jobId, mark);
    try {
      r = await this.store.dispatchJob(a.jobId, a.slave);
    } catch (e) {
      this.log.error({ job: a.jobId, slave: a.slave, err: msgOf(e) }, 'could not store an assignment; trying the job again shortly');
      await this.dispatchFailed(a);
      return;
    } finally {
      if (this.dispatching.get(a.jobId) === mark) this.dispatching.delete(a.jobId);
    }
    if (!r.ok) {
      this.log.info({ job: a.jobId, state: r.job?.state }, 'assignment dropped: the job left the queue');
      this.handle(this.sched.jobRemoved(a.jobId));
      return;
    }
    // A new attempt number: no log of it can exist yet.
    this.logs.fresh(r.job.id, r.job.attempt);
    await this.sendAssignment(r.job);
  }

  /**
   * The queued -> dispatched write of `a` failed (I/O error, disk full). Its slots stay held for
   * DISPATCH_RETRY_MS, so a store that keeps failing is tried at most once per slot per period,
   * then what the store says decides: still queued, the job goes back to the dispatcher (not a
   * setup failure: the slave was never told); dispatched after all (the failure came after the
   * write reached the disk), it is sent; anything else, the dispatcher forgets it.
   */
  private async dispatchFailed(a: Assignment): Promise<void> {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, DISPATCH_RETRY_MS));
      if (this.stopping) return;
      let job: Job | undefined;
      try {
        job = await this.store.getJob(a.jobId);
      } catch (e) {
        this.log.error({ job: a.jobId, err: msgOf(e) }, 'could not read a job whose assignment failed; trying again shortly');
        continue;
      }
      const phase = this.sched.phaseOf(a.jobId);
      if (phase === undefined && job?.state === 'queued') {
        // Forgotten by the dispatcher meanwhile though still queued (nothing but a cancel should
        // end this wait): queued again rather than lost until a restart.
        this.handle(this.sched.jobQueued(schedJobOf(job)));
        return;
      }
      if (phase !== 'assigned') return; // Removed meanwhile (a cancel).
      if (job?.state === 'queued') {
        this.handle(this.sched.jobFinished(a.jobId, { notSent: true, requeue: schedJobOf(job) }).assignments);
      } else if (job?.state === 'dispatched' && job.slave === a.slave) {
        this.logs.fresh(job.id, job.attempt);
        await this.sendAssignment(job);
      } else {
        this.handle(this.sched.jobRemoved(a.jobId));
      }
      return;
    }
  }

  /**
   * Sends a committed assignment (the job's row says dispatched to `job.slave`) and records the
   * slave's answer: running, or back to the queue.
   */
  private async sendAssignment(job: Job): Promise<void> {
    const a = { jobId: job.id, slave: job.slave! };
    this.heldRows.set(job.id, job);
    const conn = this.slaves.get(a.slave);
    // Written to the slave's socket here, before anything else: the slave starts the job while
    // this process answers the submitter. Nothing else is done until the slave's answer (the
    // time to it is the job's dispatch latency); log followers are woken once it runs.
    const accepted = conn?.peer.call(
      'attempt.assign',
      {
        jobId: job.id,
        attempt: job.attempt,
        name: job.name,
        channel: job.channel,
        arch: job.arch,
        slots: job.slots,
        command: job.command,
        env: job.env,
        timeoutMs: job.timeoutMs,
        inputs: job.inputs,
      },
      { timeoutMs: this.options.acceptTimeoutMs },
    );
    this.log.info({ job: job.id, attempt: job.attempt, slave: a.slave }, 'job dispatched');
    if (accepted === undefined) {
      await this.requeue(job.id, job.attempt, `slave ${a.slave} disconnected before the assignment was sent`, false);
      return;
    }
    try {
      await accepted;
    } catch (e) {
      // Not accepted: a setup failure of that slave (counts toward its quarantine), unless the
      // connection dropped (that is the network's doing; the job just goes elsewhere).
      const dropped = e instanceof RpcCallError && e.rpcCode === ErrorCodes.CONNECTION_CLOSED;
      // Shutting down: leave it dispatched; the next start holds it for the slave's grace period.
      if (dropped && this.stopping) return;
      await this.requeue(job.id, job.attempt, `slave ${a.slave} did not accept attempt ${job.attempt}: ${msgOf(e)}`, !dropped);
      // A slave that is only slow (frozen, overloaded) may still accept once it reads the
      // assignment, and the RPC layer drops its late reply: tell it now to drop that attempt, so
      // it cannot run the job beside the attempt that replaces it. The cancel queues behind the
      // assignment on the same connection, so the slave sees it after it took the attempt.
      if (!dropped) this.track('cancel late', this.cancelOnSlave(a.slave, job.id, job.attempt, 'abandoned'));
      return;
    }
    const starting = this.store.startJob(job.id, job.attempt);
    const entry = { attempt: job.attempt, done: starting };
    this.starting.set(job.id, entry);
    let s: TransitionResult;
    try {
      s = await starting;
    } finally {
      if (this.starting.get(job.id) === entry) this.starting.delete(job.id);
    }
    if (s.ok) {
      // Only if nothing else moved the job since the dispatch (that dropped the entry).
      if (this.heldRows.get(job.id) === job) this.heldRows.set(job.id, s.job);
      this.sched.jobStarted(job.id);
      this.rearm();
      this.logs.wake(job.id);
      this.log.info({ job: job.id, attempt: job.attempt, slave: a.slave }, 'job running');
      return;
    }
    if (s.job !== undefined && s.job.attempt === job.attempt && s.job.state !== 'cancelled' && s.job.state !== 'queued') {
      // The slave's report (attempt.finish, or a reconnect's subscribe) got there first.
      this.sched.jobStarted(job.id);
      this.rearm();
      return;
    }
    // Taken back while the reply travelled (accept deadline, cancel): the slave must drop it.
    const reason = s.job?.state === 'cancelled' && s.job.attempt === job.attempt ? 'cancelled' : 'abandoned';
    this.log.warn({ job: job.id, attempt: job.attempt, slave: a.slave, state: s.job?.state }, 'accepted too late; telling the slave to drop it');
    await this.cancelOnSlave(a.slave, job.id, job.attempt, reason);
  }

  /**
   * The attempt ended without a result: back to the queue (attempt + 1) or failed when no
   * attempt is left. False when the store says the attempt was no longer current.
   */
  private async requeue(jobId: number, attempt: number, reason: string, setupFailure: boolean, onlyDispatched = false): Promise<boolean> {
    const held = this.heldRows.get(jobId);
    this.heldRows.delete(jobId);
    // Being stored queued, as a submit that found no slot: a submit meanwhile must not take a free
    // slot this job ranks first for (its priority, when the row is not at hand: any).
    const stored = this.storingQueuedBegin(held?.priority ?? Number.MAX_SAFE_INTEGER);
    let f: FinishResult;
    try {
      const r = await this.store.requeueJob(jobId, attempt, { reason: clip(reason), setupFailure, onlyDispatched });
      this.heldRows.delete(jobId);
      if (!r.ok) return false;
      const job = r.job;
      if (job.state === 'queued') this.log.warn({ job: jobId, attempt, reason, setupFailure }, 'job requeued');
      else this.log.warn({ job: jobId, attempt, reason: job.reason }, 'job failed: no attempt left');
      // Back in the queue before its slots are handed out: they go by priority then age, with it.
      f = this.sched.jobFinished(jobId, { setupFailure, requeue: job.state === 'queued' ? schedJobOf(job) : undefined });
    } finally {
      stored();
    }
    await this.persistQuarantine(f.quarantined);
    this.handle(f.assignments);
    this.logs.wake(jobId);
    // The attempt's uploads will never be filed.
    this.track(
      'drop uploads',
      this.uploads.abortPrefix(`${jobId}:${attempt}:`, false).then(() => rm(join(this.dir, 'uploads', String(jobId), String(attempt)), { recursive: true, force: true })),
    );
    return true;
  }

  /** dispatched -> running outside the dispatch path (a report that came first): drops the held row around it. */
  private async startForget(jobId: number, attempt: number): ReturnType<MasterStore['startJob']> {
    this.heldRows.delete(jobId);
    const s = await this.store.startJob(jobId, attempt);
    this.heldRows.delete(jobId);
    return s;
  }

  private async persistQuarantine(q: Quarantine | undefined): Promise<void> {
    if (q === undefined) return;
    this.log.warn({ slave: q.slave, until: new Date(q.until).toISOString() }, 'slave quarantined after repeated setup failures');
    await this.store.setSlaveQuarantine(q.slave, q.until);
  }

  /** Asks a slave to kill an attempt; resolves with its `found`, or undefined when it could not answer. */
  private async cancelOnSlave(slave: string, jobId: number, attempt: number, reason: 'cancelled' | 'timed_out' | 'abandoned'): Promise<boolean | undefined> {
    const conn = this.slaves.get(slave);
    if (conn === undefined) return undefined;
    try {
      const r = await conn.peer.call('attempt.cancel', { jobId, attempt, reason }, { timeoutMs: this.options.cancelTimeoutMs });
      this.log.info({ job: jobId, attempt, slave, reason, found: r.found }, 'attempt cancelled on the slave');
      return r.found;
    } catch (e) {
      this.log.warn({ job: jobId, attempt, slave, reason, err: msgOf(e) }, 'slave did not confirm the cancel');
      return undefined;
    }
  }

  /**
   * Kills an attempt the master ended (cancel, master-side timeout) and frees its slots in the
   * dispatcher only once the slave reports it (its attempt.finish comes after the process group
   * is gone), or after `cancelTimeoutMs`, or at once when the slave does not have it or is gone:
   * new work never lands in slots a dying process still uses.
   */
  private async killThenRelease(slave: string, jobId: number, attempt: number, reason: 'cancelled' | 'timed_out', release: () => void): Promise<void> {
    // Registered first: the slave's report of the attempt's end (attempt.finish) may come while
    // this waits or the cancel travels (a real slave answers the cancel only after it), and
    // frees the slots then (killReported).
    const entry: { timer: NodeJS.Timeout | undefined; release: () => void } = { timer: undefined, release };
    this.killing.set(jobId, entry);
    // A subscribe of this slave under way may have read the attempt as still running and keep
    // it: it registers the slave before this goes on, so the kill reaches it (a subscribe that
    // starts later reads the job ended and tells the slave to abandon it).
    await inOrder(this.slaveTurns, slave, () => Promise.resolve());
    // Reported meanwhile (or stopping): nothing left to kill or to free here.
    if (this.killing.get(jobId) !== entry) return;
    const found = await this.cancelOnSlave(slave, jobId, attempt, reason);
    if (this.killing.get(jobId) !== entry) return;
    if (found !== true || !this.slaves.has(slave) || this.stopping) {
      this.killing.delete(jobId);
      release();
      return;
    }
    entry.timer = setTimeout(() => {
      this.killing.delete(jobId);
      release();
    }, this.options.cancelTimeoutMs);
  }

  /** The slave reported an attempt the master had ended: free its slots now. */
  private killReported(jobId: number): void {
    const k = this.killing.get(jobId);
    if (k === undefined) return;
    clearTimeout(k.timer);
    this.killing.delete(jobId);
    k.release();
  }

  /** One timer, armed for the dispatcher's next deadline (accept, master-side timeout, quarantine end). */
  private rearm(): void {
    if (this.stopping) return;
    const at = this.sched.nextWakeAt() ?? Infinity;
    if (at === this.wakeAt && this.wakeTimer !== undefined) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    this.wakeAt = at;
    if (at === Infinity) return;
    this.wakeTimer = setTimeout(
      () => {
        this.wakeTimer = undefined;
        this.wakeAt = Infinity;
        this.track('tick', this.onTick());
      },
      Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1),
    );
  }

  private async onTick(): Promise<void> {
    if (this.stopping) return;
    const t = this.sched.tick();
    // First: nothing below (store calls that may fail) may hold these back.
    this.handle(t.assignments);
    for (const x of t.timedOut) this.track('master timeout', this.retried(x, 'timedOut', () => this.masterTimeout(x)));
    for (const e of t.expired) {
      this.track(
        'accept deadline',
        this.retried(e, 'expired', async () => {
          // Taken back only while still dispatched to that slave: an attempt whose start is being
          // committed (the slave accepted in time; this master's write was slow) runs on, and one
          // whose dispatch write is still under way (or failed: dispatchFailed) is not the slave's
          // doing. Both are left to the paths that own them.
          const job = await this.store.getJob(e.jobId);
          if (job?.state !== 'dispatched' || job.slave !== e.slave) return;
          if (await this.requeue(e.jobId, job.attempt, `slave ${e.slave} did not accept attempt ${job.attempt} in time`, true, true)) {
            this.track('cancel', this.cancelOnSlave(e.slave, job.id, job.attempt, 'abandoned'));
          }
        }),
      );
    }
  }

  /**
   * Runs the handling of one of tick()'s reports; when it fails (the store could not be read or
   * written), the dispatcher reports it again DISPATCH_RETRY_MS later: an expired assignment
   * would otherwise hold its slots, and a timed-out job run past its deadline, for good.
   */
  private async retried(x: DeadlineReport, kind: 'expired' | 'timedOut', handle: () => Promise<void>): Promise<void> {
    try {
      await handle();
    } catch (e) {
      this.log.error({ job: x.jobId, slave: x.slave, err: msgOf(e) }, 'could not handle a deadline; trying again shortly');
      this.sched.reportAgain(x, kind, Date.now() + DISPATCH_RETRY_MS);
      this.rearm();
    }
  }

  private async masterTimeout(x: Assignment): Promise<void> {
    const job = await this.store.getJob(x.jobId);
    if (job === undefined || !ACTIVE.has(job.state)) return;
    this.heldRows.delete(job.id);
    if (job.state === 'dispatched') await this.store.startJob(job.id, job.attempt);
    const reason = `no result from ${x.slave} ${this.options.timeoutMarginMs} ms after the job's timeout of ${job.timeoutMs} ms (master-side timeout)`;
    const r = await this.store.finishJob(job.id, job.attempt, { state: 'timed_out', reason });
    this.heldRows.delete(job.id);
    if (!r.ok) return;
    this.log.warn({ job: job.id, attempt: job.attempt, slave: x.slave }, 'job timed out on the master');
    this.logs.wake(job.id);
    await this.killThenRelease(x.slave, job.id, job.attempt, 'timed_out', () => this.handle(this.sched.jobFinished(job.id).assignments));
  }

  // ---- slaves ----

  private startGrace(name: string): void {
    if (this.graceTimers.has(name) || this.stopping) return;
    const t = setTimeout(() => {
      this.graceTimers.delete(name);
      this.track('grace', this.graceExpired(name));
    }, this.options.slaveGraceMs);
    this.graceTimers.set(name, t);
  }

  private graceExpired(name: string): Promise<void> {
    return inOrder(this.slaveTurns, name, () => this.requeueLost(name));
  }

  /** The grace period of a lost slave ran out (in its turn): its jobs go back to the queue. */
  private async requeueLost(name: string): Promise<void> {
    if (this.slaves.has(name) || this.stopping) return;
    for (const id of this.sched.jobsOf(name)) {
      if (this.dispatching.has(id)) continue; // Its dispatch path settles it.
      const job = await this.store.getJob(id);
      if (job !== undefined && job.slave === name && ACTIVE.has(job.state)) {
        await this.requeue(id, job.attempt, `slave ${name} lost: not back within ${this.options.slaveGraceMs} ms`, false);
      } else {
        this.handle(this.sched.jobRemoved(id));
      }
    }
  }

  /** A connection of the main listener closed: if it was a subscribed slave's, its jobs wait for it to come back. */
  onPeerClosed(peer: RpcPeer): void {
    const name = peer.remote.name;
    if (this.slaves.get(name)?.peer !== peer || this.stopping) return;
    this.slaves.delete(name);
    this.handle(this.sched.slaveDisconnected(name));
    this.startGrace(name);
    this.track('touch', this.store.touchSlaves([name]));
    this.log.warn({ slave: name, graceMs: this.options.slaveGraceMs, jobs: this.sched.jobsOf(name) }, 'slave disconnected; its jobs wait for the grace period');
  }

  private subscribe(p: ParamsOf<'slave.subscribe'>, ctx: CallContext): Promise<SubscribeAnswer> {
    const name = ctx.remote.name;
    return inOrder(this.slaveTurns, name, async () => {
      try {
        return await this.reconcile(p, ctx);
      } catch (e) {
        // The reconcile stopped the slave's grace period before its first store call: one that
        // failed left the slave unregistered with no grace running, and its jobs held for ever.
        if (this.slaves.get(name)?.peer !== ctx.peer) {
          this.handle(this.sched.slaveDisconnected(name));
          this.startGrace(name);
        }
        throw e;
      }
    });
  }

  /** slave.subscribe, in the slave's turn: which reported attempts it keeps, then the connection registered. */
  private async reconcile(p: ParamsOf<'slave.subscribe'>, ctx: CallContext): Promise<SubscribeAnswer> {
    const name = ctx.remote.name;
    const old = this.slaves.get(name);
    if (old !== undefined && old.peer !== ctx.peer) {
      // The newest connection of a slave wins; the old one is probably dead and not yet noticed.
      // Until this one is registered, the dispatcher sends it nothing (an assignment would find
      // no connection and cost the job an attempt).
      this.slaves.delete(name);
      this.handle(this.sched.slaveDisconnected(name));
      old.peer.destroy(new BuilderError('BUILDER_ERR_CONFLICT', 'replaced by a newer connection of the same slave'));
    }
    const grace = this.graceTimers.get(name);
    if (grace !== undefined) clearTimeout(grace);
    this.graceTimers.delete(name);
    const rec = await this.store.upsertSlave({ name, channels: p.channels, arches: p.arches, capacity: p.capacity });
    const keep: Array<{ jobId: number; attempt: number; nextSeq: number }> = [];
    const abandon: Array<{ jobId: number; attempt: number; reason: string }> = [];
    const kept = new Set<number>();
    for (const r of p.running) {
      const job = await this.store.getJob(r.jobId);
      let why: string | undefined;
      if (job === undefined) why = `no job ${r.jobId}`;
      else if (job.attempt !== r.attempt || job.slave !== name) why = `attempt ${r.attempt} is not the current attempt of job ${job.id} on ${name}`;
      else if (!ACTIVE.has(job.state)) why = `job ${job.id} is ${job.state}`;
      else if (job.state === 'dispatched' && !(await this.startForget(job.id, job.attempt)).ok) why = `job ${job.id} changed state`;
      if (why !== undefined || job === undefined) {
        abandon.push({ jobId: r.jobId, attempt: r.attempt, reason: why ?? 'unknown' });
        continue;
      }
      if (this.sched.phaseOf(job.id) === undefined) this.sched.jobHeld(schedJobOf(job), name, 'running', job.startedAt ?? Date.now());
      else this.sched.jobStarted(job.id);
      keep.push({ jobId: job.id, attempt: job.attempt, nextSeq: (await this.logs.storedThrough(job.id, job.attempt)) + 1 });
      kept.add(job.id);
      this.logs.wake(job.id);
    }
    // Jobs the master thought it held but it did not report: lost with its previous life. One
    // whose dispatch write is still being settled is left to that path (it sends it, or queues it).
    for (const id of this.sched.jobsOf(name)) {
      if (kept.has(id) || this.dispatching.has(id)) continue;
      const job = await this.store.getJob(id);
      if (job !== undefined && job.slave === name && ACTIVE.has(job.state)) {
        await this.requeue(id, job.attempt, `slave ${name} came back without attempt ${job.attempt}`, false);
      } else {
        this.handle(this.sched.jobRemoved(id));
      }
    }
    if (ctx.peer.closed) {
      // The connection closed during the awaits above, before it was registered (onPeerClosed
      // found nothing to do). Registering it now would give the scheduler a ghost slave that
      // every assignment fails on: its jobs wait for the grace period as for any lost slave.
      this.startGrace(name);
      return { keep, abandon };
    }
    this.slaves.set(name, { peer: ctx.peer, since: Date.now(), selfDraining: p.draining });
    this.log.info({ slave: name, channels: p.channels, arches: p.arches, capacity: p.capacity, keep: keep.map((k) => k.jobId), abandon: abandon.map((a) => a.jobId) }, 'slave subscribed');
    for (const a of abandon) this.log.warn({ slave: name, job: a.jobId, attempt: a.attempt, reason: a.reason }, 'slave told to abandon an attempt');
    this.handle(
      this.sched.slaveConnected({
        name,
        channels: p.channels,
        arches: p.arches,
        capacity: p.capacity,
        drained: rec.drained || p.draining,
        quarantinedUntil: rec.quarantinedUntil,
      }),
    );
    return { keep, abandon };
  }

  /** The job, if `attempt` of it is held by the calling slave; else NOT_FOUND / BAD_STATE. */
  private async heldBy(ctx: CallContext, jobId: number, attempt: number): Promise<Job> {
    // Only a running row: it was set when the start's compare-and-set succeeded with the
    // dispatched entry still in place, so no other transition was issued before it. (A dispatched
    // entry may outlive, by a few microtasks, a cancel committed in the same group; not used.)
    let held = this.heldRows.get(jobId);
    const st = this.starting.get(jobId);
    if (held?.state === 'dispatched' && held.attempt === attempt && st?.attempt === attempt) {
      // Accepted, and its start is being committed: that write's outcome is the answer.
      await st.done.catch(() => undefined);
      held = this.heldRows.get(jobId);
    }
    if (held !== undefined && held.state === 'running' && held.attempt === attempt && held.slave === ctx.remote.name) return held;
    const job = await this.store.getJob(jobId);
    if (job === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no job ${jobId}`);
    if (job.attempt !== attempt || job.slave !== ctx.remote.name || job.state === 'queued') {
      throw new BuilderError('BUILDER_ERR_BAD_STATE', `attempt ${attempt} of job ${jobId} is not held by ${ctx.remote.name} (the job is ${job.state}, attempt ${job.attempt}); drop it`);
    }
    return job;
  }

  private committedPath(jobId: number, attempt: number): string {
    return join(this.dir, 'uploads', String(jobId), `${attempt}.committed.jsonl`);
  }

  /** Artifacts committed by artifact.finish for an attempt (kept on disk: a master restart keeps them). */
  private async loadCommitted(jobId: number, attempt: number): Promise<Map<string, Committed>> {
    const k = `${jobId}:${attempt}`;
    let m = this.committed.get(k);
    if (m !== undefined) return m;
    m = new Map();
    try {
      for (const line of (await readFile(this.committedPath(jobId, attempt), 'utf8')).split('\n')) {
        if (line === '') continue;
        try {
          const o = JSON.parse(line) as { path: string; size: number; sha256: string };
          m.set(o.path, { size: o.size, sha256: o.sha256 });
        } catch {
          // a torn last line (crash mid-append): that artifact is uploaded again
        }
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    this.committed.set(k, m);
    if (this.committed.size > 4096) this.committed.delete(this.committed.keys().next().value!);
    return m;
  }

  private async recordCommitted(jobId: number, attempt: number, path: string, c: Committed): Promise<void> {
    const m = await this.loadCommitted(jobId, attempt);
    const fh = await openFile(this.committedPath(jobId, attempt), 'a', 0o644);
    try {
      await fh.write(JSON.stringify({ path, size: c.size, sha256: c.sha256 }) + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
    m.set(path, c);
  }

  /**
   * The log's end record carried by attempt.finish, stored as attempt.log would store it (in order
   * with the attempt's other batches), before the outcome. False when nothing was stored yet and
   * `impliedByEnd` (an empty log, ended by the attempt's own end): no file is made.
   */
  private async storeLogEnd(jobId: number, attempt: number, end: number, impliedByEnd: boolean): Promise<boolean> {
    return this.inLogOrder(`${jobId}:${attempt}`, async () => {
      const have = await this.logs.storedThrough(jobId, attempt);
      if (have === 0 && end === 1 && impliedByEnd) return false;
      // Records missing before the end: refused (the slave then sends its log through attempt.log).
      if (have < end - 1) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `the log of attempt ${attempt} of job ${jobId} is stored through seq ${have} only, below its end ${end}`);
      // The end comes right after the last stored record (stored now), or is the end already
      // stored (a repeated call). Anything else (records stored at or above the end, or an end
      // at another seq) would leave a log that never ends, or ends elsewhere: refused.
      const r = await this.logs.append(jobId, attempt, [{ kind: 'end', seq: end }]);
      if (!r.ended || r.storedThrough !== end) {
        throw new BuilderError(
          'BUILDER_ERR_INVALID_INPUT',
          `the log of attempt ${attempt} of job ${jobId} is stored through seq ${r.storedThrough}${r.ended ? ' and ended there' : ''}: it cannot end at ${end}`,
        );
      }
      return true;
    });
  }

  /**
   * attempt.finish, one call per attempt at a time: the slave repeats it when a reply is late or
   * its connection dropped, and two filings of one attempt at once moved each other's files
   * (one committed a listing without a package it found gone).
   */
  private attemptFinish(p: ParamsOf<'attempt.finish'>, ctx: CallContext): Promise<Record<string, never>> {
    return inOrder(this.finishTurns, `${p.jobId}:${p.attempt}`, () => this.attemptFinishInTurn(p, ctx));
  }

  private async attemptFinishInTurn(p: ParamsOf<'attempt.finish'>, ctx: CallContext): Promise<Record<string, never>> {
    const name = ctx.remote.name;
    const job = await this.heldBy(ctx, p.jobId, p.attempt);
    const log = this.log.child({ job: job.id, attempt: p.attempt, slave: name });
    // An attempt that printed nothing and ends here as succeeded or failed (or goes back to the
    // queue): its log has no file and gets none; its end is the attempt's end, committed below
    // (log.read says ended once the attempt is over). Where the job ended on the master already,
    // or ends timed out, followers wait for the log's end (the slave's grace), so it is stored.
    const endWithAttempt = p.logEnd === 1 && p.state !== 'timed_out' && !isFinalState(job.state);
    let endStored = true;
    if (p.logEnd !== undefined) endStored = await this.storeLogEnd(job.id, p.attempt, p.logEnd, endWithAttempt);

    // When this call does not end the attempt (the master ended the job meanwhile, or it is no
    // longer current), an empty log's end is stored after all: that attempt's followers wait for
    // the log's end, not for the attempt's.
    let ended = false;
    try {
      ended = await this.settleAttempt(job, p, name, log);
    } finally {
      if (!endStored && !ended) await this.storeLogEnd(job.id, p.attempt, 1, false);
    }
    return {};
  }

  /**
   * The rest of attempt.finish: files the artifacts, then moves the job to its outcome (or back to
   * the queue). True when this call ended the attempt (its commit, or its requeue).
   */
  private async settleAttempt(job: Job, p: ParamsOf<'attempt.finish'>, name: string, log: Logger): Promise<boolean> {
    // 1. The artifacts, filed before the state changes (a repeat of this call files nothing twice).
    // An attempt that goes back to the queue (a setup failure, stopped by its slave) has no
    // result: what it left is not filed (the next attempt's artifacts will be, under the same
    // names) and its uploads are dropped with the requeue.
    const noResult = !isFinalState(job.state) && (p.setupFailure || p.state === 'cancelled');
    const committed = p.artifacts.length === 0 || noResult ? new Map<string, Committed>() : await this.loadCommitted(job.id, p.attempt);
    const notes: string[] = [];
    if (noResult && p.artifacts.length > 0) notes.push(`${p.artifacts.length} artifact${p.artifacts.length === 1 ? '' : 's'} not filed: the attempt goes back to the queue`);
    // Filed artifacts are never replaced: a repeated or late attempt.finish of this attempt (after
    // other bytes were uploaded under a filed name) or another attempt's bytes under the same name
    // would change files already filed, served and promoted.
    const prior = committed.size === 0 ? [] : await this.store.listArtifacts(job.id);
    const ok = noResult
      ? []
      : p.artifacts.filter((a) => {
          const c = committed.get(a.path);
          if (c === undefined || c.size !== a.size || c.sha256 !== a.sha256) {
            notes.push(`${a.path}: not uploaded`);
            return false;
          }
          const other = prior.find((r) => r.name === a.path && r.sha256 !== a.sha256);
          if (other !== undefined) {
            notes.push(`${a.path}: not filed: attempt ${other.attempt} filed other bytes under this name`);
            return false;
          }
          return true;
        });
    const filing =
      ok.length === 0
        ? { filed: [], batch: null, notes: [] }
        : await fileAttempt(
            {
              uploads: join(this.dir, 'uploads', String(job.id), String(p.attempt)),
              packages: join(this.dir, 'packages', String(job.id)),
              images: join(this.dir, 'images', checkName('image', job.name), String(job.id)),
              incoming: this.options.incomingDir,
            },
            { jobId: job.id, attempt: p.attempt, channel: job.channel },
            ok,
          );
    notes.push(...filing.notes);
    const known = new Set(prior.filter((a) => a.attempt === p.attempt).map((a) => a.name));
    for (const f of filing.filed) {
      if (known.has(f.path)) continue;
      await this.store.addArtifact({ jobId: job.id, attempt: p.attempt, name: f.path, size: f.size, sha256: f.sha256, kind: f.kind, path: f.storedAt });
    }
    if (filing.filed.length > 0) log.info({ artifacts: filing.filed.length, batch: filing.batch }, 'artifacts filed');
    if (p.refused.length > 0) log.warn({ refused: p.refused }, 'slave refused output entries');
    if (p.conflicts.length > 0) log.warn({ conflicts: p.conflicts }, 'artifacts differ from the input files of the same name');
    if (notes.length > 0) log.warn({ notes }, 'artifact notes');

    // 2. The reason shown by `builder job`: the slave's, then what was refused or not filed.
    const parts: string[] = [];
    if (p.reason) parts.push(p.reason);
    if (p.refused.length > 0) parts.push(`refused output: ${list(p.refused.map((r) => `${r.path} (${r.reason})`))}`);
    if (p.conflicts.length > 0) parts.push(`artifacts differing from the input of the same name: ${list(p.conflicts.map((c) => c.path))}`);
    if (notes.length > 0) parts.push(list(notes));
    const reason = parts.length > 0 ? clip(parts.join('; ')) : null;

    // 3. The state.
    if (isFinalState(job.state)) {
      // Cancelled by a user or timed out by the master meanwhile, or a repeat of this report.
      log.info({ state: job.state }, 'attempt report for a job already ended; artifacts kept');
      this.killReported(job.id);
      return false;
    }
    if (p.setupFailure) {
      return this.requeue(job.id, p.attempt, `setup failure on ${name}${reason ? ': ' + reason : ''}`, true);
    }
    if (p.state === 'cancelled') {
      // The slave stopped it on its own (its shutdown deadline): not the job's fault, so it runs again.
      return this.requeue(job.id, p.attempt, `stopped by slave ${name}${reason ? ': ' + reason : ''}`, false);
    }
    if (job.state === 'dispatched') {
      const s = await this.startForget(job.id, p.attempt);
      // Not ok and now running with this attempt: the accept reply started it meanwhile.
      if (!s.ok && !(s.job?.state === 'running' && s.job.attempt === p.attempt)) {
        throw new BuilderError('BUILDER_ERR_BAD_STATE', `attempt ${p.attempt} of job ${job.id} is no longer current; drop it`);
      }
      this.sched.jobStarted(job.id);
    }
    // Still the row this service last wrote (running), with no other transition of the job issued
    // since (each drops the entry first): this finish is the job's next write in the store.
    const ownRunning = job.state === 'running' && this.heldRows.get(job.id) === job;
    this.heldRows.delete(job.id);
    const finishing = this.store.finishJob(job.id, p.attempt, { state: p.state, exitCode: p.exitCode, signal: p.signal, reason: reason ?? undefined });
    let early: FinishResult | undefined;
    if (ownRunning) {
      // The slave reports after its process group is gone, so the slots are free now. Deciding
      // here, in the same tick, puts the next job's queued -> dispatched write in the same group
      // commit as this finish (or a later one, never an earlier one), instead of a commit after
      // this one: one group commit less between two jobs of a slot. Both are still durable
      // before anyone is told (the assignment is sent after its commit, the reply after ours).
      early = this.sched.jobFinished(job.id);
      this.handle(early.assignments);
    }
    const r = await finishing;
    this.heldRows.delete(job.id);
    if (!r.ok) {
      if (r.job !== undefined && r.job.attempt === p.attempt && isFinalState(r.job.state)) {
        // Ended on the master (a cancel, a master-side timeout) between the read above and this
        // commit: this report is the slave's word that the attempt is gone, so its slots free now.
        this.killReported(job.id);
        return false;
      }
      throw new BuilderError('BUILDER_ERR_BAD_STATE', `attempt ${p.attempt} of job ${job.id} is no longer current; drop it`);
    }
    log.info({ state: p.state, exitCode: p.exitCode, signal: p.signal }, 'job finished');
    this.logs.wake(job.id);
    const f = early ?? this.sched.jobFinished(job.id);
    await this.persistQuarantine(f.quarantined);
    if (early === undefined) this.handle(f.assignments);
    return true;
  }

  // ---- client-side helpers used by client-handlers.ts ----

  /**
   * Refuses a job (or schedule template) whose input files are not all on the master, and marks
   * each as used now, one input at a time against the input retention (which checks the same
   * mark, under the same turn, before it removes one).
   */
  async checkInputs(spec: NewJob): Promise<void> {
    for (const f of spec.inputs ?? []) {
      await inOrder(this.inputTurns, f.sha256, async () => {
        const size = await this.inputs.sizeOf(f.sha256);
        if (size === undefined) {
          throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `input file ${f.name} (sha256 ${f.sha256}) is not on the master`, {
            hint:
              this.options.inputRetentionMs > 0
                ? `upload it (again) first: the master removes inputs unused for ${ms(this.options.inputRetentionMs, { long: true })} (master run --input-retention, ${this.options.inputRetentionMs} ms); builder schedule --input uploads`
                : 'upload it first (input.begin, input.chunk, input.finish); builder schedule --input does this',
          });
        }
        if (size !== f.size) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `input file ${f.name}: the master holds ${size} bytes for sha256 ${f.sha256}, the job says ${f.size}`);
        // Also with the retention off: turned on later, it must see this use.
        await this.inputs.touch(f.sha256).catch((e: unknown) => this.log.warn({ sha256: f.sha256, err: msgOf(e) }, 'cannot mark an input as used'));
      });
    }
  }

  /**
   * One pass of the job retention: the jobs that ended before now minus `jobRetentionMs` are
   * removed, 500 at a time, oldest end first, except the promoted job of each image name (its
   * images are the release). Per name, in its turn against image.promote, the rows go in one
   * commit (the job, its attempts, events and artifact records) and the job is listed in
   * job_purges; then its files go (logs, DIR/packages/<id>, DIR/images/<name>/<id>, uploads),
   * then the listing. A pass cut short leaves listings, whose files the next pass removes first.
   */
  private async sweepJobs(): Promise<void> {
    for (const p of await this.store.pendingPurges()) await this.removeJobFiles(p);
    const before = Date.now() - this.options.jobRetentionMs;
    const imagesDir = join(this.dir, 'images');
    let cursor = { endedAt: -1, id: 0 };
    let removed = 0;
    for (;;) {
      const batch = await this.store.jobsEndedBefore(before, cursor, 500);
      if (batch.length === 0 || this.stopping) break;
      const last = batch[batch.length - 1]!;
      cursor = { endedAt: last.endedAt, id: last.id };
      const byName = new Map<string, number[]>();
      for (const j of batch) byName.set(j.name, [...(byName.get(j.name) ?? []), j.id]);
      const purged: Array<{ jobId: number; name: string; attempts: number }> = [];
      for (const [name, ids] of byName) {
        await this.withImageName(name, async () => {
          const promoted = await promotedOf(imagesDir, name);
          purged.push(...(await this.store.purgeJobs(ids.filter((id) => id !== promoted))));
        });
      }
      for (const p of purged) await this.removeJobFiles(p);
      removed += purged.length;
      if (batch.length < 500) break;
    }
    if (removed > 0) this.log.info({ jobs: removed, endedBefore: new Date(before).toISOString() }, 'jobs removed by retention');
  }

  /** Removes the files of a job whose rows are gone (see sweepJobs), then its job_purges listing. */
  private async removeJobFiles(p: { jobId: number; name: string; attempts: number }): Promise<void> {
    try {
      for (let a = 1; a <= p.attempts; a++) await this.logs.remove(p.jobId, a);
      const id = String(p.jobId);
      for (const dir of [join(this.dir, 'packages', id), join(this.dir, 'images', p.name, id), join(this.dir, 'uploads', id)]) await rm(dir, { recursive: true, force: true });
      await this.store.purgeDone(p.jobId);
    } catch (e) {
      this.log.warn({ job: p.jobId, err: msgOf(e) }, 'job retention: cannot remove the files of a removed job; tried again at the next pass');
    }
  }

  /**
   * input.begin: starts or resumes an upload. A file the master already has answers its full
   * size (the client sends nothing) and counts as used now, in its turn against the retention,
   * so that it is still there for the submit that follows.
   */
  beginInput(sha256: string, size: number, by: string): Promise<number> {
    return inOrder(this.inputTurns, sha256, async () => {
      const offset = await this.inputs.begin(sha256, size, by);
      if (offset === size && (await this.inputs.sizeOf(sha256)) === size) {
        await this.inputs.touch(sha256).catch((e: unknown) => this.log.warn({ sha256, err: msgOf(e) }, 'cannot mark an input as used'));
      }
      return offset;
    });
  }

  /**
   * One pass of the input retention: every stored input that no job that may still run and no
   * schedule names, and that was last used (its mtime) before now minus `inputRetentionMs`, is
   * removed, each under its turn (see checkInputs).
   */
  private async sweepInputs(): Promise<void> {
    const before = Date.now() - this.options.inputRetentionMs;
    // Partial uploads left longer than the retention: their client gave up (a resume within the
    // retention keeps them; an upload open now is never touched).
    const parts = await this.removeInputs(await this.inputs.partsUntouchedSince(before), 'a partial upload', (sha) => this.inputs.removePartIfUntouchedSince(sha, before));
    if (parts > 0) this.log.info({ uploads: parts, untouchedSince: new Date(before).toISOString() }, 'abandoned input uploads removed by retention');
    const old = await this.inputs.unusedSince(before);
    // The query over every live job's inputs (hundreds of ms with 100,000 queued) only when there is something to decide.
    if (old.length === 0) return;
    const inUse = await this.store.inputsInUse();
    const removed = await this.removeInputs(
      old.filter((sha) => !inUse.has(sha)),
      'an input',
      (sha) => this.inputs.removeIfUnusedSince(sha, before),
    );
    if (removed > 0) this.log.info({ inputs: removed, unusedSince: new Date(before).toISOString() }, 'inputs removed by retention');
  }

  /** Runs `remove` for each input in its turn (against the uses that mark it); how many went. */
  private async removeInputs(shas: readonly string[], what: string, remove: (sha: string) => Promise<boolean>): Promise<number> {
    let n = 0;
    for (const sha of shas) {
      if (this.stopping) break;
      try {
        if (await inOrder(this.inputTurns, sha, () => remove(sha))) n++;
      } catch (e) {
        // One that cannot go (permissions) does not hold back the others.
        this.log.warn({ sha256: sha, err: msgOf(e) }, `input retention: cannot remove ${what}; tried again at the next pass`);
      }
    }
    return n;
  }

  /**
   * Stores a new job and hands it to the dispatcher. When a slot is free for it right now, the
   * job is stored already dispatched (one commit instead of create then dispatch) and the
   * assignment is sent as soon as that commit returns; the reply is the stored row (dispatched).
   * The slots are taken in the dispatcher before the write, outside it (a write must have no
   * side effects: the write queue may run it again), and given back if the write fails; the job
   * is then stored queued, as when no slot is free. No slot is taken while a job of the same or a
   * higher priority is being stored queued (a submit that found none, a cron fire): that job
   * reaches the dispatcher only after its commit, and ranks first (equal priority goes by age).
   */
  async submit(spec: NewJob, by: string): Promise<Job> {
    await this.checkInputs(spec);
    const checked = this.store.checkJob(spec);
    // Not while a job of this priority or higher is being stored queued (another submit, a cron
    // fire): it reaches the dispatcher after this one and would lose a free slot it ranks first for.
    const place = this.stopping || this.storingQueuedAtLeast(checked.priority) ? undefined : this.sched.takeForNew(checked);
    if (place !== undefined) this.handle(place.assignments);
    const hold = place?.hold;
    if (hold !== undefined) {
      let job: Job | undefined;
      try {
        job = await this.store.createJob(checked, hold.slave);
      } catch (e) {
        this.handle(this.sched.holdReleased(hold));
        this.log.warn({ slave: hold.slave, err: msgOf(e) }, 'could not store a new job as dispatched; storing it queued');
      }
      if (job !== undefined) {
        this.sched.holdStored(hold, schedJobOf(job));
        this.rearm();
        this.log.info({ job: job.id, name: job.name, channel: job.channel, arch: job.arch, slave: hold.slave, by }, 'job queued and dispatched');
        // Attempt 1 of a new job: no log of it can exist yet.
        this.logs.fresh(job.id, job.attempt);
        // Sent even when a stop began meanwhile, as dispatch() does after its commit: not sent,
        // the job would use up attempt 1 without running (held, then requeued, at the next start).
        this.track('dispatch', this.sendAssignment(job));
        return job;
      }
    }
    const stored = this.storingQueuedBegin(checked.priority);
    let job: Job;
    try {
      job = await this.store.createJob(checked);
    } finally {
      stored();
    }
    this.log.info({ job: job.id, name: job.name, channel: job.channel, arch: job.arch, by }, 'job queued');
    this.handle(this.sched.jobQueued(schedJobOf(job)));
    return job;
  }

  /**
   * Counts a job being stored queued (priority -> jobs) until the returned function is called,
   * which its owner does right before the job's jobQueued (a submit) or right after it (a cron
   * fire), in the same tick: between the two, the job is in neither place.
   */
  private storingQueuedBegin(priority: number): () => void {
    this.storingQueued.set(priority, (this.storingQueued.get(priority) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = this.storingQueued.get(priority)! - 1;
      if (n === 0) this.storingQueued.delete(priority);
      else this.storingQueued.set(priority, n);
    };
  }

  /** Jobs being stored queued right now (submits that found no slot, cron fires, requeues): for diagnosis and tests. */
  get storingQueuedJobs(): number {
    let n = 0;
    for (const c of this.storingQueued.values()) n += c;
    return n;
  }

  /** Whether a job of `priority` or higher is being stored queued. O(1) when none is (the common case). */
  private storingQueuedAtLeast(priority: number): boolean {
    if (this.storingQueued.size === 0) return false;
    for (const p of this.storingQueued.keys()) if (p >= priority) return true;
    return false;
  }

  /** Cancels a job; a dispatched or running one is killed on its slave before its slots free up. */
  async cancel(id: number, by: string): Promise<Job> {
    this.heldRows.delete(id);
    const r = await this.store.cancelJob(id, `cancelled by ${by}`);
    this.heldRows.delete(id);
    if (!r.ok) {
      if (r.job === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no job ${id}`);
      throw new BuilderError('BUILDER_ERR_BAD_STATE', `job ${id} is already ${r.job.state}`);
    }
    const job = r.job;
    this.log.info({ job: id, from: r.from, slave: job.slave, by }, 'job cancelled');
    this.logs.wake(id);
    if ((r.from === 'dispatched' || r.from === 'running') && job.slave !== null) {
      const slave = job.slave;
      this.track(
        'cancel',
        this.killThenRelease(slave, id, job.attempt, 'cancelled', () => this.handle(this.sched.jobRemoved(id))),
      );
    } else {
      this.handle(this.sched.jobRemoved(id));
    }
    return job;
  }

  /** The cron runner (schedule.* handlers). */
  get schedules(): CronRunner {
    return this.cron;
  }

  /** A schedule id derived from the job name, with a random suffix. */
  newScheduleId(jobName: string): string {
    return `${jobName.slice(0, 48)}-${randomBytes(4).toString('hex')}`;
  }

  slaveConn(name: string): { since: number; selfDraining: boolean } | undefined {
    const c = this.slaves.get(name);
    return c && { since: c.since, selfDraining: c.selfDraining };
  }

  /** Applies an admin's drain (persisted) to the dispatcher. */
  async drain(name: string, drained: boolean, by: string): Promise<void> {
    checkName('slave', name);
    // In the slave's turn: a subscribe under way read the drained flag before this write and
    // would apply that older flag after it.
    await inOrder(this.slaveTurns, name, async () => {
      if (!(await this.store.setSlaveDrained(name, drained))) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no slave ${name} has ever subscribed`);
      if (this.sched.slave(name) !== undefined) this.handle(this.sched.slaveUpdated(name, { drained: drained || (this.slaves.get(name)?.selfDraining ?? false) }));
    });
    this.log.info({ slave: name, drained, by }, drained ? 'slave drained' : 'slave undrained');
  }

  // ---- wiring ----

  /**
   * Registers every job method in the main listener's table, shared by all its connections;
   * the listener calls `onPeerClosed` for each connection that ends.
   */
  registerMethods(methods: RpcMethods): void {
    methods
      .handle('slave.subscribe', (p, ctx) => this.subscribe(p, ctx))
      .handle('slave.draining', ({ draining }, ctx) =>
        // In the slave's turn, as an admin's drain: the two read and apply the same flag.
        inOrder(this.slaveTurns, ctx.remote.name, async () => {
          const conn = this.slaves.get(ctx.remote.name);
          if (conn?.peer !== ctx.peer) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'call slave.subscribe first');
          conn.selfDraining = draining;
          const rec = await this.store.getSlave(ctx.remote.name);
          this.handle(this.sched.slaveUpdated(ctx.remote.name, { drained: (rec?.drained ?? false) || draining }));
          this.log.info({ slave: ctx.remote.name, draining }, draining ? 'slave draining itself' : 'slave takes jobs again');
          return {};
        }),
      )
      .handle('attempt.log', (p, ctx) =>
        // In arrival order per attempt, from before the first await: the store skips seqs at or
        // below the highest stored, so two batches overtaking each other would lose the first.
        this.inLogOrder(`${p.jobId}:${p.attempt}`, async () => {
          await this.heldBy(ctx, p.jobId, p.attempt);
          const r = await this.logs.append(p.jobId, p.attempt, p.records);
          return { storedThrough: r.storedThrough };
        }),
      )
      .handle('artifact.begin', async (p, ctx) => {
        await this.heldBy(ctx, p.jobId, p.attempt);
        const c = (await this.loadCommitted(p.jobId, p.attempt)).get(p.path);
        if (c !== undefined && c.size === p.size && c.sha256 === p.sha256) return { offset: p.size };
        const root = join(this.dir, 'uploads', String(p.jobId), String(p.attempt));
        await mkdir(root, { recursive: true });
        // In place but not recorded: the master died between an upload's rename and its record.
        // The same bytes count as committed now; other bytes are refused by the receiver (CONFLICT).
        // Hashed only then, and only at the declared size: a file the journal records is not read
        // again for each begin of other bytes under its name (64 such calls read 4 GiB).
        if (c === undefined) {
          const placedAt = join(root, checkRelativePath(p.path));
          const st = await lstat(placedAt).catch(() => undefined);
          const placed = st?.isFile() === true && st.size === p.size ? await sha256File(placedAt).catch(() => undefined) : undefined;
          if (placed !== undefined && placed.size === p.size && placed.sha256 === p.sha256) {
            await this.recordCommitted(p.jobId, p.attempt, p.path, { size: p.size, sha256: p.sha256 });
            return { offset: p.size };
          }
        }
        const r = await this.uploads.begin(this.uploadKey(p, ctx), root, p.path, { size: p.size, sha256: p.sha256 }, ctx.remote.name);
        return { offset: r.offset };
      })
      .handle('artifact.chunk', async (p, ctx) => {
        const r = await this.uploads.get(this.uploadKey(p, ctx), `no upload of ${p.path} in progress for attempt ${p.attempt} of job ${p.jobId}: call artifact.begin first`);
        await r.write(p.offset, Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength));
        return {};
      })
      .handle('artifact.finish', async (p, ctx) => {
        await this.heldBy(ctx, p.jobId, p.attempt);
        const key = this.uploadKey(p, ctx);
        let r;
        try {
          r = await this.uploads.get(key, `no upload of ${p.path} in progress for attempt ${p.attempt} of job ${p.jobId}: call artifact.begin first`);
        } catch (e) {
          const c = (await this.loadCommitted(p.jobId, p.attempt)).get(p.path);
          if (c !== undefined) return { size: c.size, sha256: c.sha256 };
          throw e;
        }
        const done = await this.uploads.finish(key, r);
        await this.recordCommitted(p.jobId, p.attempt, done.path, { size: done.size, sha256: done.sha256 });
        this.log.info({ job: p.jobId, attempt: p.attempt, slave: ctx.remote.name, path: done.path, size: done.size }, 'artifact received');
        return { size: done.size, sha256: done.sha256 };
      })
      .handle('attempt.finish', (p, ctx) => this.attemptFinish(p, ctx))
      .handle('input.read', async (p, ctx) => {
        if (ctx.remote.role === 'slave' && !(await this.slaveMayRead(ctx.remote.name, p.sha256))) {
          throw new BuilderError('BUILDER_ERR_FORBIDDEN', `no attempt held by ${ctx.remote.name} has the input ${p.sha256}`);
        }
        return { data: (await this.inputs.read(p.sha256, p.offset, p.length)) as Uint8Array<ArrayBuffer> };
      });
    registerClientHandlers(this, methods);
  }

  private inLogOrder<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return inOrder(this.logOrder, key, fn);
  }

  private uploadKey(p: { jobId: number; attempt: number; path: string }, ctx: CallContext): string {
    // The key holds the slave's name: another slave cannot write into this upload.
    return `${p.jobId}:${p.attempt}:${ctx.remote.name}:${p.path}`;
  }

  private async slaveMayRead(slave: string, sha256: string): Promise<boolean> {
    for (const id of this.sched.jobsOf(slave)) {
      const job = await this.store.getJob(id);
      if (job?.slave === slave && job.inputs.some((f) => f.sha256 === sha256)) return true;
    }
    return false;
  }
}

function list(xs: readonly string[], max = 10): string {
  return xs.length <= max ? xs.join(', ') : `${xs.slice(0, max).join(', ')} and ${xs.length - max} more`;
}
