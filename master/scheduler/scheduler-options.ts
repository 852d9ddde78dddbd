import { BuilderError } from '../../protocol/errors.js';

/** Options of the dispatcher; all optional, defaults documented per field. */
export interface SchedulerOptions {
  /** The clock (ms). Default `Date.now`. Tests inject a fake one. */
  now?: () => number;
  /** Consecutive setup failures on one slave that quarantine it. Default 3. */
  quarantineAfter?: number;
  /** How long a quarantine lasts. Default 15 min. */
  quarantineMs?: number;
  /** How long a slave has to accept an assignment before it is taken back. Default 30 s. */
  acceptTimeoutMs?: number;
  /**
   * Added to a job's timeout for the master-side deadline: the slave's own timeout (SIGTERM,
   * then SIGKILL, then its report) should normally end the job first. Default 60 s.
   */
  timeoutGraceMs?: number;
  /**
   * How far past the head of one queue the dispatcher looks for a job that does not avoid the
   * slave at hand (jobs avoid, for one attempt, a slave they just failed on in setup). Default 16.
   */
  avoidLookahead?: number;
  /** Most remembered "avoid this slave next time" notes for jobs not yet requeued. Default 10,000. */
  maxAvoidNotes?: number;
}

export interface CompiledSchedulerOptions {
  now: () => number;
  quarantineAfter: number;
  quarantineMs: number;
  acceptTimeoutMs: number;
  timeoutGraceMs: number;
  avoidLookahead: number;
  maxAvoidNotes: number;
}

function int(name: string, v: number | undefined, dflt: number, min: number): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min) throw new BuilderError('BUILDER_ERR_CONFIG', `scheduler option ${name} must be an integer >= ${min}, got ${String(x)}`);
  return x;
}

export function compileSchedulerOptions(o: SchedulerOptions = {}): CompiledSchedulerOptions {
  return {
    now: o.now ?? Date.now,
    quarantineAfter: int('quarantineAfter', o.quarantineAfter, 3, 1),
    quarantineMs: int('quarantineMs', o.quarantineMs, 15 * 60_000, 0),
    acceptTimeoutMs: int('acceptTimeoutMs', o.acceptTimeoutMs, 30_000, 1),
    timeoutGraceMs: int('timeoutGraceMs', o.timeoutGraceMs, 60_000, 0),
    avoidLookahead: int('avoidLookahead', o.avoidLookahead, 16, 1),
    maxAvoidNotes: int('maxAvoidNotes', o.maxAvoidNotes, 10_000, 0),
  };
}
