import { BuilderError, isBuilderError } from '../../protocol/errors.js';
import { checkName } from '../../protocol/names.js';
import type { FireResult, Job, NewJob, NewSchedule, Schedule } from '../store/index.js';
import { checkCronExpression, checkTimeZone, nextFireAfter } from './cron-expression.js';
import { compileCronOptions, type CompiledCronOptions, type CronOptions } from './cron-options.js';

/** The part of the master's store the cron runner uses (MasterStore implements it). */
export interface CronStore {
  listSchedules(): Promise<Schedule[]>;
  getSchedule(id: string): Promise<Schedule | undefined>;
  createSchedule(s: NewSchedule): Promise<Schedule>;
  setSchedulePaused(id: string, paused: boolean, nextFireAt: number | null): Promise<Schedule | undefined>;
  removeSchedule(id: string): Promise<boolean>;
  fireSchedule(id: string, expectedNextFireAt: number, nextFireAt: number, firedAt: number): Promise<FireResult>;
  noteScheduleFailure(id: string, expectedNextFireAt: number, nextFireAt: number, error: string, at: number): Promise<Schedule | undefined>;
}

/** Wait before trying again a schedule that has no next tick to wait for (cron-parser found no time). */
const NO_TICK_RETRY_MS = 3600_000;

/** Longest error text kept on a schedule. */
const MAX_ERROR_CHARS = 500;

/**
 * Whether a failed fire is the schedule's own fault (its template no longer validates, say the
 * master restarted with a lower maxSlots; its expression has no time left): trying again in
 * retryMs gives the same answer. Anything else (the store) may pass.
 */
const scheduleFault = (err: unknown): boolean => isBuilderError(err, 'BUILDER_ERR_INVALID_INPUT') || isBuilderError(err, 'BUILDER_ERR_INVALID_NAME');

/** A new schedule as a client asks for it. */
export interface ScheduleRequest {
  id: string;
  cron: string;
  /** IANA time zone; default the runner's `defaultTz`. */
  tz?: string;
  template: NewJob;
  paused?: boolean;
}

/** Called after a fire is durable: the job exists in the store (queued); hand it to the dispatcher. */
export type OnFired = (job: Job, schedule: Schedule) => void;

interface Armed {
  cron: string;
  tz: string;
  /** The schedule's job template (a schedule's template never changes), for `onFiring`. */
  template: NewJob;
  nextFireAt: number;
  /** After a failed fire: not before this time (so a broken store is not retried in a tight loop). */
  retryAt?: number;
}

const dueAt = (a: Armed): number => Math.max(a.nextFireAt, a.retryAt ?? 0);

/**
 * Fires persisted cron schedules. One timer, armed for the earliest due schedule.
 *
 * A fire is one store transaction (`fireSchedule`): compare-and-set `next_fire_at` and create
 * the job together. So a crash before COMMIT loses nothing (the schedule is still due and fires
 * on restart), and a crash after COMMIT cannot fire it again (next_fire_at has moved; the job is
 * queued and comes back with the other active jobs).
 *
 * Catch-up: a schedule whose time passed while the master was down fires ONCE at start, and its
 * next time is the first tick after now, not the ticks it missed.
 */
export class CronRunner {
  readonly options: CompiledCronOptions;
  private readonly armed = new Map<string, Armed>();
  private timer: unknown = undefined;
  private timerAt = Infinity;
  private running = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: CronStore,
    private readonly onFired: OnFired,
    opts: CronOptions = {},
  ) {
    this.options = compileCronOptions(opts);
  }

  /** Loads the schedules, fires the overdue ones once, and arms the timer. */
  async start(): Promise<void> {
    this.running = true;
    for (const s of await this.store.listSchedules()) {
      if (s.paused) continue;
      if (s.nextFireAt === null) {
        // Resumed without a next time (should not happen): start from now rather than never firing.
        const next = nextFireAfter(s.cron, s.tz, this.options.now(), s.id);
        if (await this.store.setSchedulePaused(s.id, false, next)) this.armed.set(s.id, { cron: s.cron, tz: s.tz, template: s.template, nextFireAt: next });
      } else {
        this.armed.set(s.id, { cron: s.cron, tz: s.tz, template: s.template, nextFireAt: s.nextFireAt });
      }
    }
    await this.runDue();
  }

  /** Stops the timer. Fires in progress finish. */
  async stop(): Promise<void> {
    this.running = false;
    this.disarm();
    await this.idle();
  }

  /** Resolves when no fire is in progress. */
  idle(): Promise<void> {
    return this.chain;
  }

  /** Validates and stores a schedule; its first fire is the first tick after now. */
  async add(r: ScheduleRequest): Promise<Schedule> {
    checkName('schedule', r.id);
    const tz = checkTimeZone(r.tz ?? this.options.defaultTz);
    const cron = checkCronExpression(r.cron, { allowSeconds: this.options.allowSeconds, tz, hashSeed: r.id });
    const paused = r.paused ?? false;
    const next = paused ? null : nextFireAfter(cron, tz, this.options.now(), r.id);
    const s = await this.store.createSchedule({ id: r.id, cron, tz, template: r.template, paused, nextFireAt: next });
    if (s.nextFireAt !== null) this.armed.set(s.id, { cron, tz, template: s.template, nextFireAt: s.nextFireAt });
    this.rearm();
    return s;
  }

  list(): Promise<Schedule[]> {
    return this.store.listSchedules();
  }

  /** A paused schedule does not fire; resuming starts from the next tick after now (no catch-up for the pause). */
  async pause(id: string): Promise<Schedule> {
    const s = await this.store.setSchedulePaused(id, true, null);
    if (s === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no schedule ${id}`);
    this.armed.delete(id);
    this.rearm();
    return s;
  }

  async resume(id: string): Promise<Schedule> {
    const cur = await this.store.getSchedule(id);
    if (cur === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no schedule ${id}`);
    if (!cur.paused) return cur;
    const next = nextFireAfter(cur.cron, cur.tz, this.options.now(), id);
    const s = await this.store.setSchedulePaused(id, false, next);
    if (s === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no schedule ${id}`);
    this.armed.set(id, { cron: s.cron, tz: s.tz, template: s.template, nextFireAt: next });
    this.rearm();
    return s;
  }

  async remove(id: string): Promise<void> {
    if (!(await this.store.removeSchedule(id))) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no schedule ${id}`);
    this.armed.delete(id);
    this.rearm();
  }

  /** When the timer is set to go off next (for tests and status), or undefined. */
  get nextWakeAt(): number | undefined {
    return this.timer === undefined ? undefined : this.timerAt;
  }

  private disarm(): void {
    if (this.timer !== undefined) this.options.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private rearm(): void {
    this.disarm();
    if (!this.running) return;
    let at = Infinity;
    for (const a of this.armed.values()) at = Math.min(at, dueAt(a));
    if (at === Infinity) return;
    const now = this.options.now();
    const wait = Math.min(Math.max(0, at - now), this.options.maxTimerMs);
    this.timerAt = now + wait;
    this.timer = this.options.timers.setTimeout(() => {
      this.timer = undefined;
      void this.runDue();
    }, wait);
  }

  /** Fires every due schedule, one after another (serialised through `chain`), then re-arms. */
  private runDue(): Promise<void> {
    this.chain = this.chain.then(async () => {
      const now = this.options.now();
      const due = [...this.armed].filter(([, a]) => dueAt(a) <= now).sort((x, y) => x[1].nextFireAt - y[1].nextFireAt);
      for (const [id, a] of due) {
        try {
          await this.fire(id, a, now);
        } catch (err) {
          this.options.onError(err, id);
          if (scheduleFault(err) && (await this.noteFailure(id, a, now, err))) continue;
          // Keep its old time (a retry still fires at most once) but wait retryMs before trying again.
          this.armed.set(id, { ...a, retryAt: now + this.options.retryMs });
        }
      }
      this.rearm();
    });
    return this.chain;
  }

  /**
   * A fire failed by the schedule's own fault: the error is stored on the schedule (schedule.list
   * shows it) and the fire is tried again at its next tick, not every retryMs (a template that no
   * longer validated failed every 30 s, forever, seen only in the log). False if the store
   * could not take it: then the short retry.
   */
  private async noteFailure(id: string, a: Armed, now: number, err: unknown): Promise<boolean> {
    let next: number | undefined;
    try {
      next = nextFireAfter(a.cron, a.tz, now, id);
    } catch {
      next = undefined;
    }
    const msg = (err instanceof Error ? err.message : String(err)).slice(0, MAX_ERROR_CHARS);
    let s: Schedule | undefined;
    try {
      s = await this.store.noteScheduleFailure(id, a.nextFireAt, next ?? a.nextFireAt, msg, now);
    } catch (e) {
      this.options.onError(e, id);
      return false;
    }
    if (s === undefined || s.paused || s.nextFireAt === null) this.armed.delete(id);
    else if (next === undefined && s.nextFireAt === a.nextFireAt) this.armed.set(id, { ...a, retryAt: now + Math.max(this.options.retryMs, NO_TICK_RETRY_MS) });
    else this.armed.set(id, { cron: s.cron, tz: s.tz, template: s.template, nextFireAt: s.nextFireAt });
    return true;
  }

  private async fire(id: string, a: Armed, now: number): Promise<void> {
    // Always after now (nextFireAfter's promise): a next time at or before now would be due at
    // once and fire again, as fast as the store commits.
    const next = nextFireAfter(a.cron, a.tz, now, id);
    if (!(next > now)) throw new Error(`schedule ${id}: next fire ${new Date(next).toISOString()} is not after ${new Date(now).toISOString()}`);
    // Told in the same tick as the write is queued, and until the job is handed over (onFired):
    // the job service keeps a submit of no higher priority from taking a free slot meanwhile.
    const settled = this.options.onFiring(a.template, id);
    try {
      const r = await this.store.fireSchedule(id, a.nextFireAt, next, now);
      if (r.ok) {
        this.armed.set(id, { cron: a.cron, tz: a.tz, template: a.template, nextFireAt: next });
        this.onFired(r.job, r.schedule);
        return;
      }
      // Someone changed it under us (paused, removed, resumed): follow the store.
      const s = r.schedule;
      if (s === undefined || s.paused || s.nextFireAt === null) this.armed.delete(id);
      else this.armed.set(id, { cron: s.cron, tz: s.tz, template: s.template, nextFireAt: s.nextFireAt });
    } finally {
      settled();
    }
  }
}
