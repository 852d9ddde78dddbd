import type { Artifact, ArtifactKind, Attempt, AttemptState, Job, JobCommand, JobEvent, JobState, NewJob, Schedule, SlaveRecord } from './types.js';

/** Row shapes as SQLite returns them, and their mapping to the typed API. JSON columns are parsed here. */

/**
 * A job row as four columns: `j`, a JSON object shaped as {@link Job} but for command, inputs and
 * env, made by SQLite ({@link JOB_JSON}), and those three as stored (JSON text). Parsing one
 * JSON text builds the object in one pass: node-sqlite3 turns a row of 23 columns into an object
 * one property at a time (each a map transition on the main thread), which cost the store about
 * a tenth of its CPU per job in bench/jobs/store-ceiling.ts (143-147 against 154-162 us per job
 * at 50 in flight, 84-108 against 99-119 at 256, in pairs). The three JSON columns stay apart:
 * embedded with `json()`, SQLite parsed and rewrote a 1 MiB script on every read (21.6 ms a
 * row against 9.7), and they are parsed by V8 either way.
 */
export interface JobJsonRow {
  j: string;
  command: string;
  inputs: string;
  env: string;
}

/** The columns of {@link JobJsonRow}, over a `jobs` row (unqualified column names). */
export const JOB_JSON = `json_object('id', id, 'name', name, 'channel', channel, 'arch', arch, 'slots', slots, 'priority', priority,
  'timeoutMs', timeout_ms, 'maxAttempts', max_attempts, 'state', state, 'attempt', attempt, 'slave', slave,
  'exitCode', exit_code, 'signal', signal, 'reason', reason, 'scheduleId', schedule_id, 'createdAt', created_at,
  'updatedAt', updated_at, 'dispatchedAt', dispatched_at, 'startedAt', started_at, 'endedAt', ended_at) AS j, command, inputs, env`;

export function toJob(r: JobJsonRow): Job {
  const job = JSON.parse(r.j) as Job;
  job.command = JSON.parse(r.command) as JobCommand;
  job.inputs = JSON.parse(r.inputs) as Job['inputs'];
  job.env = JSON.parse(r.env) as Record<string, string>;
  return job;
}

export interface AttemptRow {
  job_id: number;
  attempt: number;
  slave: string;
  state: AttemptState;
  dispatched_at: number;
  started_at: number | null;
  ended_at: number | null;
  exit_code: number | null;
  signal: string | null;
  reason: string | null;
  setup_failure: number;
}

export function toAttempt(r: AttemptRow): Attempt {
  return {
    jobId: r.job_id,
    attempt: r.attempt,
    slave: r.slave,
    state: r.state,
    dispatchedAt: r.dispatched_at,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    exitCode: r.exit_code,
    signal: r.signal,
    reason: r.reason,
    setupFailure: r.setup_failure !== 0,
  };
}

export interface EventRow {
  id: number;
  job_id: number;
  attempt: number;
  from_state: JobState | null;
  to_state: JobState;
  at: number;
  reason: string | null;
}

export function toEvent(r: EventRow): JobEvent {
  return { id: r.id, jobId: r.job_id, attempt: r.attempt, from: r.from_state, to: r.to_state, at: r.at, reason: r.reason };
}

export interface SlaveRow {
  name: string;
  channels: string;
  arches: string;
  capacity: number;
  drained: number;
  quarantined_until: number | null;
  last_seen: number | null;
  created_at: number;
}

export function toSlave(r: SlaveRow): SlaveRecord {
  return {
    name: r.name,
    channels: JSON.parse(r.channels) as string[],
    arches: JSON.parse(r.arches) as string[],
    capacity: r.capacity,
    drained: r.drained !== 0,
    quarantinedUntil: r.quarantined_until,
    lastSeen: r.last_seen,
    createdAt: r.created_at,
  };
}

export interface ScheduleRow {
  id: string;
  cron: string;
  tz: string;
  template: string;
  paused: number;
  next_fire_at: number | null;
  last_fired_at: number | null;
  last_job_id: number | null;
  created_at: number;
  last_error: string | null;
  last_error_at: number | null;
}

export function toSchedule(r: ScheduleRow): Schedule {
  return {
    id: r.id,
    cron: r.cron,
    tz: r.tz,
    template: JSON.parse(r.template) as NewJob,
    paused: r.paused !== 0,
    nextFireAt: r.next_fire_at,
    lastFiredAt: r.last_fired_at,
    lastJobId: r.last_job_id,
    createdAt: r.created_at,
    ...(r.last_error === null || r.last_error_at === null ? {} : { lastError: r.last_error, lastErrorAt: r.last_error_at }),
  };
}

export interface ArtifactRow {
  id: number;
  job_id: number;
  attempt: number;
  name: string;
  size: number;
  sha256: string;
  kind: ArtifactKind;
  path: string;
  created_at: number;
  removed_at: number | null;
}

export function toArtifact(r: ArtifactRow): Artifact {
  return { id: r.id, jobId: r.job_id, attempt: r.attempt, name: r.name, size: r.size, sha256: r.sha256, kind: r.kind, path: r.path, createdAt: r.created_at, removedAt: r.removed_at };
}
