import type { Artifact, ArtifactKind, Attempt, AttemptState, Job, JobCommand, JobEvent, JobState, NewJob, Schedule, SlaveRecord } from './types.js';

/** Row shapes as SQLite returns them, and their mapping to the typed API. JSON columns are parsed here. */

export interface JobRow {
  id: number;
  name: string;
  channel: string;
  arch: string;
  slots: number;
  priority: number;
  command: string;
  inputs: string;
  env: string;
  timeout_ms: number;
  max_attempts: number;
  state: JobState;
  attempt: number;
  slave: string | null;
  exit_code: number | null;
  signal: string | null;
  reason: string | null;
  schedule_id: string | null;
  created_at: number;
  updated_at: number;
  dispatched_at: number | null;
  started_at: number | null;
  ended_at: number | null;
}

export function toJob(r: JobRow): Job {
  return {
    id: r.id,
    name: r.name,
    channel: r.channel,
    arch: r.arch,
    slots: r.slots,
    priority: r.priority,
    command: JSON.parse(r.command) as JobCommand,
    inputs: JSON.parse(r.inputs) as Job['inputs'],
    env: JSON.parse(r.env) as Record<string, string>,
    timeoutMs: r.timeout_ms,
    maxAttempts: r.max_attempts,
    state: r.state,
    attempt: r.attempt,
    slave: r.slave,
    exitCode: r.exit_code,
    signal: r.signal,
    reason: r.reason,
    scheduleId: r.schedule_id,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    dispatchedAt: r.dispatched_at,
    startedAt: r.started_at,
    endedAt: r.ended_at,
  };
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
