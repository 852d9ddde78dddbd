import { BuilderError } from '../../protocol/errors.js';
import type { NewJob } from '../store/index.js';
import { checkTimeZone } from './cron-expression.js';

/** Timer functions, injectable so tests drive time. */
export interface CronTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Options of the cron runner; all optional, defaults per field. */
export interface CronOptions {
  /** The clock (ms). Default `Date.now`. */
  now?: () => number;
  /** Default: the global setTimeout / clearTimeout. */
  timers?: CronTimers;
  /** Accept six-field expressions (a seconds field) and `@secondly`. Default false. */
  allowSeconds?: boolean;
  /** Time zone of schedules that do not name one. Default `UTC`. */
  defaultTz?: string;
  /**
   * Longest single timer; longer waits are re-armed. Default 60 s: Node timers run on a
   * monotonic clock and the runner reads the wall clock, so after a suspend or an NTP step a
   * timer armed for an hour fired up to an hour late; each wake re-reads the clock (cheap).
   */
  maxTimerMs?: number;
  /** Wait before retrying a schedule whose fire failed. Default 30 s. */
  retryMs?: number;
  /** Called when firing a schedule fails (the store is down, the template no longer validates). Default: ignore. */
  onError?: (err: unknown, scheduleId: string) => void;
  /**
   * Called when a fire begins, in the same tick as its store write is queued, with the
   * schedule's job template; the function it returns is called once the fire has settled (after
   * `onFired`, or after a failure). The job service uses it to know which jobs are being stored
   * queued. Default: nothing.
   */
  onFiring?: (template: NewJob, scheduleId: string) => () => void;
}

export interface CompiledCronOptions {
  now: () => number;
  timers: CronTimers;
  allowSeconds: boolean;
  defaultTz: string;
  maxTimerMs: number;
  retryMs: number;
  onError: (err: unknown, scheduleId: string) => void;
  onFiring: (template: NewJob, scheduleId: string) => () => void;
}

const realTimers: CronTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export function compileCronOptions(o: CronOptions = {}): CompiledCronOptions {
  const maxTimerMs = o.maxTimerMs ?? 60_000;
  if (!Number.isSafeInteger(maxTimerMs) || maxTimerMs < 1 || maxTimerMs > 2 ** 31 - 1) {
    throw new BuilderError('BUILDER_ERR_CONFIG', 'cron option maxTimerMs must be an integer in 1..2^31-1');
  }
  const retryMs = o.retryMs ?? 30_000;
  if (!Number.isSafeInteger(retryMs) || retryMs < 1) throw new BuilderError('BUILDER_ERR_CONFIG', 'cron option retryMs must be a positive integer');
  let defaultTz: string;
  try {
    defaultTz = checkTimeZone(o.defaultTz ?? 'UTC');
  } catch (e) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `cron option defaultTz: ${(e as Error).message}`);
  }
  return {
    now: o.now ?? Date.now,
    timers: o.timers ?? realTimers,
    allowSeconds: o.allowSeconds ?? false,
    defaultTz,
    maxTimerMs,
    retryMs,
    onError: o.onError ?? (() => undefined),
    onFiring: o.onFiring ?? (() => () => undefined),
  };
}
