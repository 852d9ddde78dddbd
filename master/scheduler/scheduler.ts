import { BuilderError } from '../../protocol/errors.js';
import { IndexedHeap, type HeapItem } from './indexed-heap.js';
import { compileSchedulerOptions, type CompiledSchedulerOptions, type SchedulerOptions } from './scheduler-options.js';

/** What the dispatcher needs to know about a queued job. */
export interface SchedJob {
  id: number;
  channel: string;
  /** An arch name, or `any` (matches every slave). */
  arch: string;
  slots: number;
  /** Higher first. */
  priority: number;
  /** Age order within a priority (smaller is older). Default: the id. */
  seq?: number;
  /** Slaves this attempt should avoid (it failed in setup there). */
  avoid?: readonly string[];
  /** The job's timeout (0 or absent = none): the master-side deadline is this plus `timeoutGraceMs` after it starts. */
  timeoutMs?: number;
}

/** A slave's subscription. */
export interface SlaveSpec {
  name: string;
  channels: readonly string[];
  arches: readonly string[];
  capacity: number;
  drained?: boolean;
  /** Quarantined until this time (ms), e.g. restored from the store; null or past = not. */
  quarantinedUntil?: number | null;
}

/** A decision to persist (queued -> dispatched) and send. */
export interface Assignment {
  jobId: number;
  slave: string;
  slots: number;
}

/**
 * Slots taken for a job that is not stored yet ({@link Scheduler.takeForNew}): the caller stores
 * the job already dispatched to `slave`, then calls {@link Scheduler.holdStored} with its id, or
 * {@link Scheduler.holdReleased} when the write failed.
 */
export interface SlotHold {
  readonly slave: string;
  readonly slots: number;
  /** The dispatcher's provisional (negative) id of the job until it is stored. */
  readonly key: number;
}

/** The result of {@link Scheduler.takeForNew}. */
export interface NewJobPlacement {
  /** Set when the job can start now: the slave the dispatcher gives it, its slots already counted. */
  hold?: SlotHold;
  /** Other assignments made by the same decision (rare); persist and send them as usual. */
  assignments: Assignment[];
}

export interface Quarantine {
  slave: string;
  until: number;
}

export interface FinishResult {
  assignments: Assignment[];
  /** Set when this end quarantined the slave: persist it (store.setSlaveQuarantine). */
  quarantined?: Quarantine;
}

/** One of tick()'s reports: the assignment, and which stay of the job in the dispatcher it was made for. */
export interface DeadlineReport extends Assignment {
  /** Stamped when the job entered the dispatcher: a report of an earlier stay is stale. */
  readonly gen: number;
}

export interface TickResult {
  /**
   * Assignments past their accept deadline, each reported once. Their slots stay counted: the
   * caller takes each back in the store only if it is still dispatched with that attempt (the
   * slave may have accepted it while the master's own start write was slow), then calls
   * jobFinished with `setupFailure` (and `requeue`). An attempt that did start is left alone.
   */
  expired: DeadlineReport[];
  /**
   * Running jobs past their master-side deadline (the slave did not end them): persist
   * `timed_out`, tell the slave to kill, then call jobFinished. Each is reported once.
   */
  timedOut: DeadlineReport[];
  assignments: Assignment[];
}

/** A read-only view of one slave, for operators and tests. */
export interface SlaveView {
  name: string;
  channels: string[];
  arches: string[];
  capacity: number;
  used: number;
  free: number;
  connected: boolean;
  drained: boolean;
  quarantinedUntil: number | null;
  setupFailures: number;
  /** The job this slave is being kept free for (anti-starvation), if any. */
  reservedFor: number | null;
  jobs: number[];
}

export type JobPhase = 'queued' | 'assigned' | 'running';

interface QJob extends HeapItem {
  /** The job's id; negative (provisional) while it is a {@link SlotHold}. */
  id: number;
  readonly channel: string;
  readonly arch: string;
  readonly slots: number;
  readonly priority: number;
  readonly seq: number;
  avoid: ReadonlySet<string> | null;
  phase: JobPhase;
  slave: SlaveState | null;
  acceptBy: number;
  readonly timeoutMs: number;
  /** Master-side deadline of a running job (Infinity: none, or already reported). */
  deadline: number;
  cls: JobClass | null;
  reservedOn: SlaveState | null;
  /** Its stay in the dispatcher (see {@link DeadlineReport}). */
  readonly gen: number;
}

class SlaveState {
  channels = new Set<string>();
  arches = new Set<string>();
  /** The arch keys this slave takes: its arches and `any`. */
  archKeys: string[] = ['any'];
  capacity = 0;
  used = 0;
  connected = false;
  drained = false;
  quarantinedUntil = 0;
  setupFailures = 0;
  readonly jobs = new Set<QJob>();
  reservedFor: QJob | null = null;

  constructor(readonly name: string) {}

  get free(): number {
    return Math.max(0, this.capacity - this.used);
  }
}

/** The queued jobs of one (channel, arch), one heap per job size so that a fitting job is found without a scan. */
class JobClass {
  readonly bySlots = new Map<number, IndexedHeap<QJob>>();
  size = 0;
  constructor(
    readonly channel: string,
    readonly arch: string,
  ) {}
}

/** Rank: higher priority first, then older (seq), then smaller id. */
function before(a: QJob, b: QJob): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  if (a.seq !== b.seq) return a.seq < b.seq;
  return a.id < b.id;
}

/**
 * Age order of a job not stored yet: after every stored job (ids are far below 2^52), so a new job
 * never overtakes a queued one of the same priority.
 */
const NEW_SEQ_BASE = 2 ** 52;

const classKey = (channel: string, arch: string): string => `${channel}\u0000${arch}`;

function positiveInt(what: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `${what} must be a positive integer`);
  return v;
}

/**
 * The master's dispatcher: pure, in memory, driven by events, clock injected. Every event
 * method returns the assignments it made; the caller persists each (queued -> dispatched) and
 * sends it. See docs/scheduler.md for the order, the anti-starvation reservation, quarantine and
 * the explain reasons.
 *
 * Cost: queued jobs live in heaps keyed by (channel, arch, slots), so one dispatch costs
 * O(classes x slaves + assignments x log n), independent of the queue length n.
 */
export class Scheduler {
  readonly options: CompiledSchedulerOptions;
  private readonly jobs = new Map<number, QJob>();
  private readonly slaves = new Map<string, SlaveState>();
  private readonly classes = new Map<string, JobClass>();
  private readonly assigned = new Set<QJob>();
  private readonly timed = new Set<QJob>();
  private readonly avoidNotes = new Map<number, string>();
  private queued = 0;
  private holdSeq = 0;
  private genSeq = 0;

  constructor(opts: SchedulerOptions = {}) {
    this.options = compileSchedulerOptions(opts);
  }

  private now(): number {
    return this.options.now();
  }

  /** Number of jobs waiting in the queue. */
  get queuedCount(): number {
    return this.queued;
  }

  phaseOf(jobId: number): JobPhase | undefined {
    return this.jobs.get(jobId)?.phase;
  }

  // ---- job events ----

  /** A job entered the queue (created, requeued, or restored on restart). */
  jobQueued(j: SchedJob): Assignment[] {
    this.enqueue(j);
    return this.dispatch();
  }

  /** Several jobs entered the queue (restart recovery): one dispatch for the lot. */
  jobsQueued(js: readonly SchedJob[]): Assignment[] {
    for (const j of js) this.enqueue(j);
    return this.dispatch();
  }

  /**
   * A job about to be stored: decides, exactly as {@link jobQueued} would once it is stored,
   * whether it can start now. If so its slots are taken on that slave (a {@link SlotHold}) and the
   * caller stores it already dispatched (one commit instead of two), then calls
   * {@link holdStored}, or {@link holdReleased} if the write failed. If not, nothing is kept: the
   * caller stores it queued and calls jobQueued. A hold is not visible to {@link jobsOf} nor to
   * the accept deadline until it is stored, so no other path can act on a job that does not
   * exist yet.
   */
  takeForNew(j: Omit<SchedJob, 'id' | 'seq' | 'avoid'>): NewJobPlacement {
    // Only on an empty queue (an idle farm, the case this is for). With jobs waiting, trying the
    // new one and taking it back moved the slaves kept for the waiting heads (anti-starvation):
    // a lower-ranked job could then take the slave jobQueued would have kept for the new one
    // (found by the lockstep property test at 60,000 runs). On an empty queue, taking it back
    // leaves the state exactly as it was.
    if (this.queued > 0) return { assignments: [] };
    const n = ++this.holdSeq;
    const key = -n;
    this.enqueue({ ...j, id: key, seq: NEW_SEQ_BASE + n });
    const made = this.dispatch();
    const assignments = made.filter((a) => a.jobId !== key);
    const q = this.jobs.get(key)!;
    if (q.phase === 'queued') {
      // It would wait: forget it (the caller queues it under its id once stored).
      this.release(q);
      assignments.push(...this.dispatch());
      return { assignments };
    }
    this.assigned.delete(q);
    q.acceptBy = Infinity;
    return { hold: { slave: q.slave!.name, slots: q.slots, key }, assignments };
  }

  /**
   * The job of `hold` is stored, dispatched to the hold's slave, under `id`: from now on it is
   * an assignment like any other (accept deadline from now). If the hold is gone (it cannot be
   * released by anything but {@link holdReleased}), the job is held anew so its slots count.
   */
  holdStored(hold: SlotHold, j: SchedJob): void {
    if (j.id < 0 || this.jobs.has(j.id)) throw new BuilderError('BUILDER_ERR_CONFLICT', `job ${j.id} is already known to the dispatcher`);
    const q = this.jobs.get(hold.key);
    if (q === undefined) {
      this.jobHeld(j, hold.slave, 'assigned');
      return;
    }
    this.jobs.delete(hold.key);
    q.id = j.id;
    this.jobs.set(q.id, q);
    q.acceptBy = this.now() + this.options.acceptTimeoutMs;
    this.assigned.add(q);
  }

  /** The write of a held job failed: its slots go back. Returns the assignments made with them. */
  holdReleased(hold: SlotHold): Assignment[] {
    const q = this.jobs.get(hold.key);
    if (q === undefined) return [];
    this.release(q);
    return this.dispatch();
  }

  /**
   * Restart recovery: a job the store says is dispatched or running on `slave`. Its slots count
   * against the slave as soon as it connects. No accept deadline: the caller's grace period for
   * the slave decides whether it comes back.
   */
  jobHeld(j: SchedJob, slave: string, phase: 'assigned' | 'running' = 'running', startedAt?: number): void {
    if (this.jobs.has(j.id)) throw new BuilderError('BUILDER_ERR_CONFLICT', `job ${j.id} is already known to the dispatcher`);
    const q = this.makeJob(j);
    const s = this.slaveState(slave);
    q.phase = phase;
    q.slave = s;
    q.acceptBy = Infinity;
    s.used += q.slots;
    s.jobs.add(q);
    this.jobs.set(q.id, q);
    if (phase === 'running') this.startDeadline(q, startedAt ?? this.now());
  }

  /**
   * The slave accepted (started) the job: its accept deadline no longer applies, and its
   * master-side deadline (timeoutMs + timeoutGraceMs from `startedAt`, default now) starts.
   */
  jobStarted(jobId: number, startedAt?: number): void {
    const j = this.jobs.get(jobId);
    if (j === undefined || j.phase !== 'assigned') return;
    j.phase = 'running';
    this.assigned.delete(j);
    this.startDeadline(j, startedAt ?? this.now());
  }

  private startDeadline(j: QJob, startedAt: number): void {
    if (j.timeoutMs <= 0) return;
    j.deadline = startedAt + j.timeoutMs + this.options.timeoutGraceMs;
    this.timed.add(j);
  }

  /**
   * An attempt ended (any outcome): its slots are freed. `setupFailure` (it failed before the
   * job's process ran) counts toward the slave's quarantine and makes the job's next attempt
   * avoid that slave; any other end resets the slave's count. `requeue` (the same job, back in
   * the queue for its next attempt) is queued before the freed slots are handed out, so that
   * they go by priority then age with it among the candidates, not to a job it ranks before.
   * `notSent` (the assignment never reached the slave: its write failed) says nothing of the
   * slave: its count of setup failures is left as it is.
   */
  jobFinished(jobId: number, info: { setupFailure?: boolean; requeue?: SchedJob; notSent?: boolean } = {}): FinishResult {
    if (info.requeue !== undefined && info.requeue.id !== jobId) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `requeue names job ${info.requeue.id}, not ${jobId}`);
    }
    const j = this.jobs.get(jobId);
    if (j === undefined) return { assignments: info.requeue === undefined ? [] : this.jobQueued(info.requeue) };
    const s = j.slave;
    this.release(j);
    let quarantined: Quarantine | undefined;
    if (s !== null && j.phase !== 'queued' && info.notSent !== true) {
      if (info.setupFailure) {
        this.noteAvoid(j.id, s.name);
        s.setupFailures++;
        if (s.setupFailures >= this.options.quarantineAfter) {
          s.setupFailures = 0;
          s.quarantinedUntil = this.now() + this.options.quarantineMs;
          quarantined = { slave: s.name, until: s.quarantinedUntil };
        }
      } else {
        s.setupFailures = 0;
      }
    }
    if (info.requeue !== undefined) this.enqueue(info.requeue);
    const assignments = this.dispatch();
    return quarantined ? { assignments, quarantined } : { assignments };
  }

  /** A job left the dispatcher without an attempt result (cancelled, or failed for good while queued). */
  jobRemoved(jobId: number): Assignment[] {
    const j = this.jobs.get(jobId);
    if (j === undefined) return [];
    this.release(j);
    return this.dispatch();
  }

  // ---- slave events ----

  /** A slave connected (or reconnected) with its subscription. */
  slaveConnected(spec: SlaveSpec): Assignment[] {
    const s = this.slaveState(spec.name);
    this.applySpec(s, spec);
    s.connected = true;
    return this.dispatch();
  }

  /**
   * Drain, capacity, subscription or quarantine changed. Only the fields given change: a slave
   * known only from jobs restored after a restart (no subscription yet, capacity 0) can be
   * drained before it reconnects.
   */
  slaveUpdated(name: string, patch: Partial<Omit<SlaveSpec, 'name'>>): Assignment[] {
    const s = this.slaves.get(name);
    if (s === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `slave ${name} is not known to the dispatcher`);
    if (patch.capacity !== undefined) s.capacity = positiveInt('capacity', patch.capacity);
    if (patch.channels !== undefined) s.channels = new Set(patch.channels);
    if (patch.arches !== undefined) this.setArches(s, patch.arches);
    if (patch.drained !== undefined) s.drained = patch.drained;
    if (patch.quarantinedUntil !== undefined) s.quarantinedUntil = patch.quarantinedUntil ?? 0;
    return this.dispatch();
  }

  /** The connection dropped. Its jobs stay held until the caller's grace period decides (jobFinished + jobQueued). */
  slaveDisconnected(name: string): Assignment[] {
    const s = this.slaves.get(name);
    if (s === undefined) return [];
    s.connected = false;
    return this.dispatch();
  }

  /** Jobs (assigned or running) held by a slave; not the slots held for jobs not stored yet. */
  jobsOf(name: string): number[] {
    const s = this.slaves.get(name);
    return s === undefined ? [] : [...s.jobs].filter((j) => j.id >= 0).map((j) => j.id);
  }

  slave(name: string): SlaveView | undefined {
    const s = this.slaves.get(name);
    if (s === undefined) return undefined;
    return {
      name: s.name,
      channels: [...s.channels],
      arches: [...s.arches],
      capacity: s.capacity,
      used: s.used,
      free: s.free,
      connected: s.connected,
      drained: s.drained,
      quarantinedUntil: s.quarantinedUntil > this.now() ? s.quarantinedUntil : null,
      setupFailures: s.setupFailures,
      reservedFor: s.reservedFor?.id ?? null,
      jobs: [...s.jobs].filter((j) => j.id >= 0).map((j) => j.id),
    };
  }

  // ---- time ----

  /** The next time {@link tick} has something to do (an accept deadline, a quarantine end), if any. */
  nextWakeAt(): number | undefined {
    let t = Infinity;
    for (const j of this.assigned) t = Math.min(t, j.acceptBy);
    for (const j of this.timed) t = Math.min(t, j.deadline);
    const now = this.now();
    for (const s of this.slaves.values()) if (s.quarantinedUntil > now) t = Math.min(t, s.quarantinedUntil);
    return t === Infinity ? undefined : t;
  }

  /**
   * Reports assignments past their accept deadline and running jobs past their master-side
   * deadline (each once), and dispatches onto slaves whose quarantine ended. It frees nothing:
   * what the store says decides (see {@link TickResult}).
   */
  tick(): TickResult {
    const now = this.now();
    const expired: DeadlineReport[] = [];
    const timedOut: DeadlineReport[] = [];
    for (const j of [...this.timed]) {
      if (j.deadline > now) continue;
      timedOut.push({ jobId: j.id, slave: j.slave!.name, slots: j.slots, gen: j.gen });
      this.timed.delete(j);
      j.deadline = Infinity;
    }
    for (const j of [...this.assigned]) {
      if (j.acceptBy > now) continue;
      expired.push({ jobId: j.id, slave: j.slave!.name, slots: j.slots, gen: j.gen });
      this.assigned.delete(j);
      j.acceptBy = Infinity;
    }
    return { expired, timedOut, assignments: this.dispatch() };
  }

  /**
   * A report of {@link tick} whose handling failed (the store could not be read or written): an
   * `expired` one is reported again by the first tick at or after `at` if that same stay of the
   * job is still assigned to that slave; a `timedOut` one if it is still running there. A report
   * of an earlier stay (the job was requeued and placed again meanwhile), or of an assignment
   * that has started since, is dropped: it would cut the new one's accept time or time out a job
   * that is running well.
   */
  reportAgain(r: DeadlineReport, kind: 'expired' | 'timedOut', at: number): void {
    const j = this.jobs.get(r.jobId);
    if (j === undefined || j.gen !== r.gen || j.slave?.name !== r.slave) return;
    if (kind === 'expired' && j.phase === 'assigned' && !this.assigned.has(j)) {
      j.acceptBy = at;
      this.assigned.add(j);
    } else if (kind === 'timedOut' && j.phase === 'running' && !this.timed.has(j)) {
      j.deadline = at;
      this.timed.add(j);
    }
  }

  // ---- explain ----

  /** Why a job is not running, in one human sentence. */
  explain(jobId: number): string {
    const j = this.jobs.get(jobId);
    if (j === undefined) return `job ${jobId} is not waiting in the dispatcher`;
    if (j.phase === 'assigned') return `dispatched to ${j.slave!.name}; waiting for it to accept`;
    if (j.phase === 'running') return `running on ${j.slave!.name}`;
    const now = this.now();
    const archText = j.arch === 'any' ? 'any arch' : `arch ${j.arch}`;
    const matching = [...this.slaves.values()].filter((s) => this.matches(j, s) && (s.connected || s.capacity > 0));
    if (matching.length === 0) return `no slave subscribed to channel ${j.channel} with ${archText}`;
    const connected = matching.filter((s) => s.connected);
    if (connected.length === 0) return `no slave subscribed to channel ${j.channel} with ${archText} is connected (known: ${names(matching)})`;
    const open = connected.filter((s) => !s.drained);
    if (open.length === 0) return `all matching slaves are drained (${names(connected)})`;
    const ready = open.filter((s) => s.quarantinedUntil <= now);
    if (ready.length === 0) {
      return `all matching slaves are quarantined after repeated setup failures (${open.map((s) => `${s.name} until ${new Date(s.quarantinedUntil).toISOString()}`).join(', ')})`;
    }
    const big = ready.filter((s) => s.capacity >= j.slots);
    if (big.length === 0) {
      const away = matching.filter((s) => s.capacity >= j.slots);
      if (away.length > 0) {
        return `needs ${j.slots} slots; no matching slave with that many can take it now (${away.map((s) => `${s.name}: ${this.unavailableWhy(s, now)}`).join(', ')})`;
      }
      const largest = matching.reduce((a, b) => (b.capacity > a.capacity ? b : a));
      return `needs ${j.slots} slots; the largest matching slave (${largest.name}) has capacity ${largest.capacity}`;
    }
    const ahead = this.countAhead(j, big);
    const behind = ahead > 0 ? `position ${ahead + 1} in queue behind ${ahead} higher-priority or older job${ahead === 1 ? '' : 's'}` : '';
    const maxFree = Math.max(...big.map((s) => s.free));
    const parts: string[] = [];
    if (j.reservedOn !== null) {
      parts.push(`waiting for ${j.slots} free slots on ${j.reservedOn.name}, kept for it (${j.reservedOn.free} free now)`);
    } else if (maxFree < j.slots) {
      parts.push(`waiting for ${j.slots} free slots; largest free is ${maxFree}`);
    } else {
      const held = big.filter((s) => s.free >= j.slots && s.reservedFor !== null && s.reservedFor !== j).map((s) => `${s.name} for job ${s.reservedFor!.id}`);
      if (held.length > 0) parts.push(`the slaves with room are kept for larger jobs ahead of it (${held.join(', ')})`);
    }
    // An avoidance holds only while another slave could take the job (see eligible()).
    const avoided = big.filter((s) => j.avoid?.has(s.name) === true);
    if (avoided.length > 0 && avoided.length < big.length) parts.push(`avoiding ${names(avoided)} after a setup failure`);
    if (behind) parts.push(behind);
    return parts.length > 0 ? parts.join('; ') : 'ready to dispatch at the next event';
  }

  private unavailableWhy(s: SlaveState, now: number): string {
    if (!s.connected) return 'disconnected';
    if (s.drained) return 'drained';
    return s.quarantinedUntil > now ? `quarantined until ${new Date(s.quarantinedUntil).toISOString()}` : 'available';
  }

  // ---- internals ----

  private makeJob(j: SchedJob): QJob {
    if (j === null || typeof j !== 'object' || !Number.isSafeInteger(j.id)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'a job needs an integer id');
    const slots = positiveInt('slots', j.slots);
    if (!Number.isSafeInteger(j.priority)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'priority must be an integer');
    const timeoutMs = j.timeoutMs ?? 0;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'timeoutMs must be a non-negative integer');
    const avoid = new Set(j.avoid ?? []);
    const note = this.avoidNotes.get(j.id);
    if (note !== undefined) {
      avoid.add(note);
      this.avoidNotes.delete(j.id);
    }
    return {
      id: j.id,
      channel: j.channel,
      arch: j.arch,
      slots,
      priority: j.priority,
      seq: j.seq ?? j.id,
      avoid: avoid.size > 0 ? avoid : null,
      phase: 'queued',
      slave: null,
      acceptBy: Infinity,
      timeoutMs,
      deadline: Infinity,
      cls: null,
      reservedOn: null,
      heapIndex: -1,
      gen: ++this.genSeq,
    };
  }

  private enqueue(j: SchedJob): void {
    if (this.jobs.has(j.id)) throw new BuilderError('BUILDER_ERR_CONFLICT', `job ${j.id} is already known to the dispatcher`);
    const q = this.makeJob(j);
    const key = classKey(q.channel, q.arch);
    let cls = this.classes.get(key);
    if (cls === undefined) {
      cls = new JobClass(q.channel, q.arch);
      this.classes.set(key, cls);
    }
    let heap = cls.bySlots.get(q.slots);
    if (heap === undefined) {
      heap = new IndexedHeap<QJob>(before);
      cls.bySlots.set(q.slots, heap);
    }
    heap.push(q);
    cls.size++;
    q.cls = cls;
    this.queued++;
    this.jobs.set(q.id, q);
  }

  private unqueue(j: QJob): void {
    const cls = j.cls!;
    const heap = cls.bySlots.get(j.slots)!;
    heap.remove(j);
    if (heap.size === 0) cls.bySlots.delete(j.slots);
    cls.size--;
    if (cls.size === 0) this.classes.delete(classKey(cls.channel, cls.arch));
    j.cls = null;
    this.queued--;
    if (j.reservedOn !== null) {
      if (j.reservedOn.reservedFor === j) j.reservedOn.reservedFor = null;
      j.reservedOn = null;
    }
  }

  private release(j: QJob): void {
    if (j.phase === 'queued') this.unqueue(j);
    else {
      const s = j.slave!;
      s.used -= j.slots;
      s.jobs.delete(j);
      this.assigned.delete(j);
      this.timed.delete(j);
    }
    this.jobs.delete(j.id);
  }

  private noteAvoid(jobId: number, slave: string): void {
    if (this.options.maxAvoidNotes === 0) return;
    this.avoidNotes.delete(jobId);
    this.avoidNotes.set(jobId, slave);
    if (this.avoidNotes.size > this.options.maxAvoidNotes) this.avoidNotes.delete(this.avoidNotes.keys().next().value!);
  }

  private slaveState(name: string): SlaveState {
    let s = this.slaves.get(name);
    if (s === undefined) {
      s = new SlaveState(name);
      this.slaves.set(name, s);
    }
    return s;
  }

  private applySpec(s: SlaveState, spec: SlaveSpec): void {
    const capacity = positiveInt('capacity', spec.capacity);
    s.channels = new Set(spec.channels);
    this.setArches(s, spec.arches);
    s.capacity = capacity;
    if (spec.drained !== undefined) s.drained = spec.drained;
    // A quarantine decided here but not yet written to the store (persistQuarantine is under way
    // when the slave reconnects) is not undone by the store's older row.
    if (spec.quarantinedUntil !== undefined) s.quarantinedUntil = Math.max(s.quarantinedUntil, spec.quarantinedUntil ?? 0);
  }

  private setArches(s: SlaveState, arches: readonly string[]): void {
    s.arches = new Set(arches);
    s.archKeys = [...s.arches.values(), 'any'].filter((a, i, all) => all.indexOf(a) === i);
  }

  private usable(s: SlaveState, now: number): boolean {
    return s.connected && !s.drained && s.quarantinedUntil <= now;
  }

  private matches(j: QJob, s: SlaveState): boolean {
    return s.channels.has(j.channel) && (j.arch === 'any' || s.arches.has(j.arch));
  }

  /** Could `s` ever take `j` (ignoring its current load)? A job avoids a slave only while another could take it. */
  private eligible(j: QJob, s: SlaveState, now: number): boolean {
    if (!this.usable(s, now) || !this.matches(j, s) || s.capacity < j.slots) return false;
    return !(j.avoid?.has(s.name) && this.hasOtherEligible(j, s, now));
  }

  private hasOtherEligible(j: QJob, s: SlaveState, now: number): boolean {
    for (const t of this.slaves.values()) {
      if (t !== s && this.usable(t, now) && this.matches(j, t) && t.capacity >= j.slots && !j.avoid!.has(t.name)) return true;
    }
    return false;
  }

  /**
   * The best-ranked job of a class that some usable slave could take (one big enough). A job
   * larger than every usable slave (oversized, or its only big slave drained, quarantined or
   * gone) must not be the head: it would keep no slave, and the next job of its class, not kept
   * for either, would be passed forever by smaller ones.
   */
  private classHead(cls: JobClass, now: number): QJob | undefined {
    let cap = 0;
    for (const s of this.slaves.values()) {
      if (s.capacity > cap && this.usable(s, now) && s.channels.has(cls.channel) && (cls.arch === 'any' || s.arches.has(cls.arch))) cap = s.capacity;
    }
    let best: QJob | undefined;
    for (const [slots, h] of cls.bySlots) {
      if (slots > cap) continue;
      const x = h.peek();
      if (x !== undefined && (best === undefined || before(x, best))) best = x;
    }
    return best;
  }

  /**
   * The best-ranked queued job that `s` can take now: it matches, fits the free slots, does not
   * avoid `s`, and — when `s` is kept for a job R — ranks ahead of or is R.
   */
  private bestFor(s: SlaveState, now: number): QJob | undefined {
    const free = s.free;
    const r = s.reservedFor;
    let best: QJob | undefined;
    for (const c of s.channels) {
      for (const a of s.archKeys) {
        const cls = this.classes.get(classKey(c, a));
        if (cls === undefined) continue;
        for (const [slots, heap] of cls.bySlots) {
          if (slots > free) continue;
          for (const j of heap.ordered(this.options.avoidLookahead)) {
            if (r !== null && r !== j && before(r, j)) break;
            if (best !== undefined && !before(j, best)) break;
            if (j.avoid?.has(s.name) && this.hasOtherEligible(j, s, now)) continue;
            best = j;
            break;
          }
        }
      }
    }
    return best;
  }

  /**
   * Anti-starvation. The head (best-ranked job) of every (channel, arch) class gets one slave
   * kept for it, heads taken best first, one head per slave: a slave where it fits now (the
   * tightest fit), else the eligible slave with the most free slots. A kept slave takes only
   * its head or jobs ranked ahead of it, so its free slots grow until the head fits, while the
   * other slaves keep backfilling smaller jobs. A head keeps its slave from one round to the
   * next while still eligible, so the reservation does not wander.
   */
  private computeReservations(now: number): void {
    const prev = new Map<QJob, SlaveState>();
    for (const s of this.slaves.values()) {
      if (s.reservedFor !== null) {
        prev.set(s.reservedFor, s);
        s.reservedFor.reservedOn = null;
        s.reservedFor = null;
      }
    }
    const heads: QJob[] = [];
    for (const cls of this.classes.values()) {
      const h = this.classHead(cls, now);
      if (h !== undefined) heads.push(h);
    }
    heads.sort((a, b) => (before(a, b) ? -1 : 1));
    for (const h of heads) {
      const p = prev.get(h);
      let pick: SlaveState | undefined;
      if (p !== undefined && p.reservedFor === null && this.eligible(h, p, now)) pick = p;
      else {
        let fit: SlaveState | undefined;
        let most: SlaveState | undefined;
        for (const s of this.slaves.values()) {
          if (s.reservedFor !== null || !this.eligible(h, s, now)) continue;
          if (s.free >= h.slots && (fit === undefined || s.free < fit.free)) fit = s;
          if (most === undefined || s.free > most.free) most = s;
        }
        pick = fit ?? most;
      }
      if (pick !== undefined) {
        pick.reservedFor = h;
        h.reservedOn = pick;
      }
    }
  }

  private dispatch(): Assignment[] {
    const out: Assignment[] = [];
    const now = this.now();
    for (;;) {
      this.computeReservations(now);
      if (this.queued === 0) break;
      let made = 0;
      // At most one job per slave per round: the reservations are recomputed before a slave
      // that just ran its kept job can backfill, so that job's successor is protected too.
      for (const s of this.slaves.values()) {
        if (!this.usable(s, now) || s.free <= 0) continue;
        const j = this.bestFor(s, now);
        if (j === undefined) continue;
        this.assign(j, s, now);
        out.push({ jobId: j.id, slave: s.name, slots: j.slots });
        made++;
      }
      if (made === 0) break;
    }
    return out;
  }

  private assign(j: QJob, s: SlaveState, now: number): void {
    this.unqueue(j);
    j.phase = 'assigned';
    j.slave = s;
    j.avoid = null;
    j.acceptBy = now + this.options.acceptTimeoutMs;
    s.used += j.slots;
    s.jobs.add(j);
    this.assigned.add(j);
  }

  /** Queued jobs ranked ahead of `j` in the classes that `slaves` take. O(queue) — explain only. */
  private countAhead(j: QJob, slaves: SlaveState[]): number {
    let n = 0;
    for (const cls of this.classes.values()) {
      if (!slaves.some((s) => s.channels.has(cls.channel) && (cls.arch === 'any' || s.arches.has(cls.arch)))) continue;
      for (const heap of cls.bySlots.values()) for (const x of heap.values()) if (before(x, j)) n++;
    }
    return n;
  }
}

function names(ss: readonly SlaveState[]): string {
  return ss.map((s) => s.name).join(', ');
}
