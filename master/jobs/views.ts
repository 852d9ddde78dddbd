import type { ResultOf } from '../../protocol/index.js';
import type { Artifact, Attempt, Job, NewJob } from '../store/index.js';

type JobView = ResultOf<'job.get'>['job'];
type AttemptView = ResultOf<'job.get'>['attempts'][number];
type ArtifactView = ResultOf<'artifact.list'>['artifacts'][number];

/** What a job was submitted with, every default applied (a retry resubmits it). */
export function specOf(j: Job): Required<NewJob> {
  return {
    name: j.name,
    channel: j.channel,
    arch: j.arch,
    slots: j.slots,
    priority: j.priority,
    command: j.command,
    inputs: j.inputs,
    env: j.env,
    timeoutMs: j.timeoutMs,
    maxAttempts: j.maxAttempts,
  };
}

/** A stored job as the wire shows it (exactly the catalogue's fields). */
export function jobView(j: Job): JobView {
  return {
    id: j.id,
    ...specOf(j),
    state: j.state,
    attempt: j.attempt,
    slave: j.slave,
    exitCode: j.exitCode,
    signal: j.signal,
    reason: j.reason,
    scheduleId: j.scheduleId,
    createdAt: j.createdAt,
    updatedAt: j.updatedAt,
    dispatchedAt: j.dispatchedAt,
    startedAt: j.startedAt,
    endedAt: j.endedAt,
  };
}

export function attemptView(a: Attempt): AttemptView {
  return {
    attempt: a.attempt,
    slave: a.slave,
    state: a.state,
    dispatchedAt: a.dispatchedAt,
    startedAt: a.startedAt,
    endedAt: a.endedAt,
    exitCode: a.exitCode,
    signal: a.signal,
    reason: a.reason,
    setupFailure: a.setupFailure,
  };
}

/** An artifact without the master's own path (never sent to a peer). */
export function artifactView(a: Artifact): ArtifactView {
  const v = { id: a.id, jobId: a.jobId, attempt: a.attempt, name: a.name, size: a.size, sha256: a.sha256, kind: a.kind, createdAt: a.createdAt };
  return a.removedAt === null ? v : { ...v, removedAt: a.removedAt };
}
