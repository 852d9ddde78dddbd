import { isAbsolute, join, resolve } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import type { CronOptions } from '../cron/index.js';
import type { SchedulerOptions } from '../scheduler/index.js';
import type { StoreOptions } from '../store/index.js';

/** Options of the master's job service; all optional, defaults per field. */
export interface JobServiceOptions {
  /**
   * How long a slave that dropped its connection keeps its jobs. A slave back within this time
   * reports what it still runs and keeps it; after it, its jobs go back to the queue (attempt + 1,
   * up to max attempts, else failed). Default 60 s.
   */
  slaveGraceMs?: number;
  /** How long a slave has to answer `attempt.assign` before the master takes the job back. Default 15 s. */
  acceptTimeoutMs?: number;
  /**
   * Master-side timeout: a running job with a timeout that has no result `timeoutMs +
   * timeoutMarginMs` after it started is marked timed_out and killed on its slave. Default 60 s.
   */
  timeoutMarginMs?: number;
  /** After `attempt.cancel`, how long the master waits for the slave's report of the killed attempt before freeing its slots anyway. Default 60 s. */
  cancelTimeoutMs?: number;
  /** The repo-builder's incoming directory. Default `DIR/incoming`. */
  incomingDir?: string;
  /** Largest artifact accepted. Default 16 GiB. */
  maxArtifactBytes?: number;
  /** Largest input file accepted. Default 16 GiB. */
  maxInputBytes?: number;
  /** Uploads (artifacts and inputs, each) open at once. Default 1,024. */
  maxOpenUploads?: number;
  /** Of those, open at once from one peer (a slave, a client). Default 64. */
  maxOpenUploadsPerPeer?: number;
  /** An upload untouched this long is closed (its bytes stay on disk for a resume). Default 10 min. */
  uploadIdleMs?: number;
  /** `log.read` page size when the client does not say. Default 1 MiB. */
  logReadMaxBytes?: number;
  /** fsync log appends before acknowledging them. Default true. */
  logFsync?: boolean;
  /** Largest stored log of one attempt; output past it is kept as `dropped` markers. Default 1 GiB. */
  logMaxBytes?: number;
  /**
   * Log retention: an attempt's log is removed this long after the attempt ended; `log.read`
   * then says when it was removed. 0 keeps logs forever. Default 0.
   */
  logRetentionMs?: number;
  /**
   * Image retention: a job's images (its non-package artifacts, `DIR/images/<name>/<job id>/`)
   * are removed once the newest of them is this old, except those of the newest `imageKeep`
   * jobs of each name and of the promoted job. 0 keeps images forever. Default 0.
   */
  imageRetentionMs?: number;
  /** Images of the newest this many jobs of each name are kept whatever their age. Default 1. */
  imageKeep?: number;
  /**
   * Input retention: an uploaded input file (`DIR/inputs/<sha256>`) is removed once it has not
   * been used (uploaded, or named by a submitted job or a new schedule) for this long, unless a
   * job that may still run or a schedule names it. 0 keeps inputs forever. Default 0.
   */
  inputRetentionMs?: number;
  /**
   * Job retention: a job that ended this long ago is removed with everything of it (its row,
   * attempts, events, artifact records, logs, packages in DIR/packages, images, uploads), except
   * the promoted job of each image name. 0 keeps jobs forever. Default 0.
   */
  jobRetentionMs?: number;
  /** How often the log, image and input retentions look for files past their time (also once at start). Default 1 h. */
  retentionSweepMs?: number;
  /** Options passed to the store (`dir` is the master's). */
  store?: Omit<StoreOptions, 'dir'>;
  /** Options passed to the dispatcher (`acceptTimeoutMs` and `timeoutGraceMs` come from the fields above). */
  scheduler?: Omit<SchedulerOptions, 'acceptTimeoutMs' | 'timeoutGraceMs'>;
  cron?: CronOptions;
}

export interface CompiledJobServiceOptions {
  slaveGraceMs: number;
  acceptTimeoutMs: number;
  timeoutMarginMs: number;
  cancelTimeoutMs: number;
  incomingDir: string;
  maxArtifactBytes: number;
  maxInputBytes: number;
  maxOpenUploads: number;
  maxOpenUploadsPerPeer: number;
  uploadIdleMs: number;
  logReadMaxBytes: number;
  logFsync: boolean;
  logMaxBytes: number;
  logRetentionMs: number;
  imageRetentionMs: number;
  imageKeep: number;
  inputRetentionMs: number;
  jobRetentionMs: number;
  retentionSweepMs: number;
  store: Omit<StoreOptions, 'dir'>;
  scheduler: Omit<SchedulerOptions, 'acceptTimeoutMs' | 'timeoutGraceMs'>;
  cron: CronOptions;
}

function num(name: string, v: number | undefined, dflt: number, min: number): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min) throw new BuilderError('BUILDER_ERR_CONFIG', `master option ${name} must be an integer >= ${min}, got ${String(x)}`);
  return x;
}

/** Validates and fills in defaults once, at startup. */
export function compileJobServiceOptions(dir: string, o: JobServiceOptions = {}): CompiledJobServiceOptions {
  const incoming = o.incomingDir ?? join(dir, 'incoming');
  return {
    slaveGraceMs: num('slaveGraceMs', o.slaveGraceMs, 60_000, 0),
    acceptTimeoutMs: num('acceptTimeoutMs', o.acceptTimeoutMs, 15_000, 1),
    timeoutMarginMs: num('timeoutMarginMs', o.timeoutMarginMs, 60_000, 0),
    cancelTimeoutMs: num('cancelTimeoutMs', o.cancelTimeoutMs, 60_000, 1),
    incomingDir: isAbsolute(incoming) ? incoming : resolve(incoming),
    maxArtifactBytes: num('maxArtifactBytes', o.maxArtifactBytes, 16 * 1024 ** 3, 0),
    maxInputBytes: num('maxInputBytes', o.maxInputBytes, 16 * 1024 ** 3, 0),
    maxOpenUploads: num('maxOpenUploads', o.maxOpenUploads, 1024, 1),
    maxOpenUploadsPerPeer: num('maxOpenUploadsPerPeer', o.maxOpenUploadsPerPeer, 64, 1),
    uploadIdleMs: num('uploadIdleMs', o.uploadIdleMs, 10 * 60_000, 1000),
    logReadMaxBytes: num('logReadMaxBytes', o.logReadMaxBytes, 1024 * 1024, 1),
    logFsync: o.logFsync ?? true,
    logMaxBytes: num('logMaxBytes', o.logMaxBytes, 1024 ** 3, 1024),
    logRetentionMs: num('logRetentionMs', o.logRetentionMs, 0, 0),
    imageRetentionMs: num('imageRetentionMs', o.imageRetentionMs, 0, 0),
    imageKeep: num('imageKeep', o.imageKeep, 1, 0),
    inputRetentionMs: num('inputRetentionMs', o.inputRetentionMs, 0, 0),
    jobRetentionMs: num('jobRetentionMs', o.jobRetentionMs, 0, 0),
    retentionSweepMs: num('retentionSweepMs', o.retentionSweepMs, 3_600_000, 10),
    store: o.store ?? {},
    scheduler: o.scheduler ?? {},
    cron: o.cron ?? {},
  };
}
