/** Every state a job can be in. */
export const JOB_STATES = ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** States a job never leaves. */
export const FINAL_STATES: ReadonlySet<JobState> = new Set<JobState>(['succeeded', 'failed', 'timed_out', 'cancelled']);
/** States of a job the master still has to drive: rebuilt into memory on restart. */
export const ACTIVE_STATES: readonly JobState[] = ['queued', 'dispatched', 'running'];

export function isFinalState(s: JobState): boolean {
  return FINAL_STATES.has(s);
}

/** What a job runs: a script (text) or an argv executed without a shell. */
export type JobCommand = { kind: 'script'; text: string } | { kind: 'argv'; argv: string[] };

/** An input file: stored by the master, fetched by the slave into BUILDER_INPUT. */
export interface InputFile {
  /** Relative path inside BUILDER_INPUT. */
  name: string;
  sha256: string;
  size: number;
}

/** What a client submits (also a schedule's template). */
export interface NewJob {
  name: string;
  channel: string;
  /** An arch name or `any`. */
  arch: string;
  /** Weight in slots. Default 1. */
  slots?: number;
  /** Higher runs first. Default 0. */
  priority?: number;
  command: JobCommand;
  inputs?: InputFile[];
  env?: Record<string, string>;
  /** Master-side and slave-side limit of one attempt; 0 = none. Default: the store's `defaultTimeoutMs`. */
  timeoutMs?: number;
  /** Default: the store's `defaultMaxAttempts`. */
  maxAttempts?: number;
}

/** A job as stored. Timestamps are ms since the epoch. */
export interface Job {
  id: number;
  name: string;
  channel: string;
  arch: string;
  slots: number;
  priority: number;
  command: JobCommand;
  inputs: InputFile[];
  env: Record<string, string>;
  timeoutMs: number;
  maxAttempts: number;
  state: JobState;
  /** Number of attempts dispatched so far (0 while never dispatched). */
  attempt: number;
  /** The slave of the current (or last) attempt. */
  slave: string | null;
  exitCode: number | null;
  signal: string | null;
  /** Reason given with the last transition. */
  reason: string | null;
  /** The schedule that created it, if any. */
  scheduleId: string | null;
  createdAt: number;
  updatedAt: number;
  dispatchedAt: number | null;
  startedAt: number | null;
  endedAt: number | null;
}

/** How an attempt ended (`requeued`: it ended without a result and the job went back to the queue or failed). */
export type AttemptState = 'dispatched' | 'running' | 'succeeded' | 'failed' | 'timed_out' | 'cancelled' | 'requeued';

export interface Attempt {
  jobId: number;
  attempt: number;
  slave: string;
  state: AttemptState;
  dispatchedAt: number;
  startedAt: number | null;
  endedAt: number | null;
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  /** The attempt failed before the job's process ran (infrastructure on that slave). */
  setupFailure: boolean;
}

/** One row of the append-only event log. */
export interface JobEvent {
  id: number;
  jobId: number;
  attempt: number;
  from: JobState | null;
  to: JobState;
  at: number;
  reason: string | null;
}

export interface SlaveRecord {
  name: string;
  channels: string[];
  arches: string[];
  capacity: number;
  drained: boolean;
  quarantinedUntil: number | null;
  lastSeen: number | null;
  createdAt: number;
}

export interface Schedule {
  id: string;
  cron: string;
  tz: string;
  template: NewJob;
  paused: boolean;
  /** Null while paused. */
  nextFireAt: number | null;
  lastFiredAt: number | null;
  lastJobId: number | null;
  createdAt: number;
  /** Set while the last fire failed by the schedule's own fault (its template no longer validates): why, and when. */
  lastError?: string;
  lastErrorAt?: number;
}

export type ArtifactKind = 'package' | 'image';

export interface Artifact {
  id: number;
  jobId: number;
  attempt: number;
  /** Relative path under BUILDER_OUTPUT. */
  name: string;
  size: number;
  sha256: string;
  kind: ArtifactKind;
  /** Where the master stored it. */
  path: string;
  createdAt: number;
  /** When the image retention removed its file; null while it is kept. */
  removedAt: number | null;
}

/**
 * The answer to a compare-and-set transition. `ok: false` means the job was not in an expected
 * state (or attempt): nothing was written; `job` is its current row (undefined: no such job).
 */
export type TransitionResult = { ok: true; from: JobState; job: Job } | { ok: false; job: Job | undefined };
