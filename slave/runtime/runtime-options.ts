import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { BuilderError } from '../../protocol/errors.js';
import { checkName } from '../../protocol/names.js';
import { parseHostPort } from '../../protocol/rpc-client.js';
import type { RpcPeerOptions } from '../../protocol/rpc-peer.js';
import type { ExecutorOptions } from '../executor/index.js';
import type { LogSpoolOptions } from '../spool/index.js';
import { SLOT_RECORD_DEFAULT_MAX_BYTES, SLOT_RECORD_MIN_MAX_BYTES } from './slot-record-file.js';

/** Most slots a slave may offer (the catalogue's limit). */
export const MAX_CAPACITY = 4096;

/** Options of a {@link SlaveRuntime}. `dir`, `master`, `channels` and `arches` are required. */
export interface SlaveRuntimeOptions {
  /** The slave's data dir: identity (from `slave enroll`), `attempts/`, `work/`, `slot-record.jsonl`. */
  dir: string;
  /** The master's main listener, HOST:PORT. */
  master: string;
  /** Channels whose jobs this slave runs (at least one). */
  channels: readonly string[];
  /** Architectures this slave runs (at least one). A job of arch `any` runs on every slave. */
  arches: readonly string[];
  /** Slots run at once. Default 1, at most 4096. */
  capacity?: number;
  /** On SIGTERM: how long running attempts may go on before they are killed (reported cancelled: the master requeues them). Default 5 min. */
  drainTimeoutMs?: number;
  /** On SIGTERM, after the drain: how long to wait for logs, artifacts and finishes to reach the master. Default 60 s. */
  deliverTimeoutMs?: number;
  /** Executor limits (kill grace, default timeout, batching...). `dataDir` and `capacity` come from above. */
  executor?: Omit<ExecutorOptions, 'dataDir' | 'capacity' | 'onSlotEvent'>;
  /** Log spool limits per attempt. */
  spool?: LogSpoolOptions;
  /**
   * attempt.log batches in flight per attempt. Default 1: a master that handles two batches of
   * one attempt concurrently may store the later one first and then skip the earlier one as
   * already stored, so more than one is only safe with a master that orders them per attempt.
   */
  logWindow?: number;
  /** Output bytes per attempt.log batch (about). Default 1 MiB (one batch in flight: fewer round trips and master fsyncs). */
  logBatchBytes?: number;
  /** Records per attempt.log call (a batch with more is split). Default 5,000 (the catalogue allows 10,000). */
  maxRecordsPerCall?: number;
  /** Bytes per artifact.chunk. Default 256 KiB. */
  uploadChunkBytes?: number;
  /** artifact.chunk calls in flight per upload. Default 8. */
  uploadWindow?: number;
  /** Bytes per input.read. Default 1 MiB. */
  inputChunkBytes?: number;
  /** First delay before retrying a call that failed without losing the connection (timeout, busy master). Default 500 ms; doubles per retry. */
  retryDelayMs?: number;
  /** Retries of such a call before the slave gives up on it (a lost connection is always retried). Default 5. */
  maxRetries?: number;
  /**
   * How long attempt.assign may wait for slots held by attempts the master abandoned (their
   * groups being killed) before it refuses. Keep it below the master's accept timeout. Default 10 s.
   */
  acceptWaitMs?: number;
  /** Keep each attempt's work dir after the master has its outcome (debugging). Default false. */
  keepWorkDirs?: boolean;
  /** The append-only record of slot use. Default `<dir>/slot-record.jsonl`; false for none. */
  slotRecordFile?: string | false;
  /**
   * Size bound of the slot record: past it the file becomes `<file>.1` (replacing the one before)
   * and a new one starts. Default 8 MiB (about 90,000 attempts), at least 1 KiB.
   */
  slotRecordMaxBytes?: number;
  /** Reconnect back-off and connection limits. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  connectTimeoutMs?: number;
  rpc?: RpcPeerOptions;
  logger?: Logger;
}

/** The validated form of {@link SlaveRuntimeOptions}. */
export interface CompiledSlaveRuntimeOptions {
  readonly dir: string;
  readonly master: string;
  readonly channels: readonly string[];
  readonly arches: readonly string[];
  readonly capacity: number;
  readonly drainTimeoutMs: number;
  readonly deliverTimeoutMs: number;
  readonly executor: Omit<ExecutorOptions, 'dataDir' | 'capacity' | 'onSlotEvent'>;
  readonly spool: LogSpoolOptions;
  readonly logWindow: number;
  readonly logBatchBytes: number;
  readonly maxRecordsPerCall: number;
  readonly uploadChunkBytes: number;
  readonly uploadWindow: number;
  readonly inputChunkBytes: number;
  readonly retryDelayMs: number;
  readonly maxRetries: number;
  readonly acceptWaitMs: number;
  readonly keepWorkDirs: boolean;
  readonly slotRecordFile: string | undefined;
  readonly slotRecordMaxBytes: number;
  readonly attemptsDir: string;
  readonly backoffMinMs: number | undefined;
  readonly backoffMaxMs: number | undefined;
  readonly connectTimeoutMs: number | undefined;
  readonly rpc: RpcPeerOptions;
}

export const RUNTIME_DEFAULTS = Object.freeze({
  capacity: 1,
  drainTimeoutMs: 5 * 60_000,
  deliverTimeoutMs: 60_000,
  logWindow: 1,
  logBatchBytes: 1024 * 1024,
  maxRecordsPerCall: 5_000,
  uploadChunkBytes: 256 * 1024,
  uploadWindow: 8,
  inputChunkBytes: 1024 * 1024,
  retryDelayMs: 500,
  maxRetries: 5,
  acceptWaitMs: 10_000,
});

function int(name: string, v: number | undefined, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER, hint?: string): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min || x > max) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `invalid ${name} ${String(v)}: must be an integer from ${min} to ${max}`, hint === undefined ? {} : { hint });
  }
  return x;
}

function names(kind: 'channel' | 'arch', flag: string, list: readonly string[] | undefined, example: string): string[] {
  const out = [...new Set((list ?? []).map((s) => s.trim()).filter((s) => s !== ''))];
  if (out.length === 0) throw new BuilderError('BUILDER_ERR_CONFIG', `no ${kind === 'channel' ? 'channels' : 'architectures'} given`, { hint: `pass ${flag} ${example}` });
  if (out.length > (kind === 'channel' ? 64 : 32)) throw new BuilderError('BUILDER_ERR_CONFIG', `too many ${kind === 'channel' ? 'channels' : 'architectures'} (${out.length})`);
  for (const n of out) checkName(kind, n);
  return out;
}

/** Validates and normalises the runtime's options once, at startup. Errors are BUILDER_ERR_CONFIG with a hint. */
export function compileSlaveRuntimeOptions(o: SlaveRuntimeOptions): CompiledSlaveRuntimeOptions {
  if (typeof o.dir !== 'string' || o.dir === '') throw new BuilderError('BUILDER_ERR_CONFIG', 'no slave data dir given', { hint: 'pass --dir DIR (made by slave enroll)' });
  parseHostPort(o.master, '--master address');
  const dir = resolve(o.dir);
  return Object.freeze({
    dir,
    master: o.master,
    channels: names('channel', '--channels', o.channels, 'main,updates'),
    arches: names('arch', '--arch', o.arches, 'x86_64,noarch'),
    capacity: int('--capacity', o.capacity, RUNTIME_DEFAULTS.capacity, 1, MAX_CAPACITY, 'the number of slots (job weights) run at once, e.g. --capacity 4'),
    drainTimeoutMs: int('--drain-timeout', o.drainTimeoutMs, RUNTIME_DEFAULTS.drainTimeoutMs, 0),
    deliverTimeoutMs: int('--deliver-timeout', o.deliverTimeoutMs, RUNTIME_DEFAULTS.deliverTimeoutMs, 0),
    executor: { ...(o.executor ?? {}) },
    spool: { ...(o.spool ?? {}) },
    logWindow: int('logWindow', o.logWindow, RUNTIME_DEFAULTS.logWindow, 1, 64),
    logBatchBytes: int('logBatchBytes', o.logBatchBytes, RUNTIME_DEFAULTS.logBatchBytes, 1, 4 * 1024 * 1024),
    maxRecordsPerCall: int('maxRecordsPerCall', o.maxRecordsPerCall, RUNTIME_DEFAULTS.maxRecordsPerCall, 1, 10_000),
    uploadChunkBytes: int('uploadChunkBytes', o.uploadChunkBytes, RUNTIME_DEFAULTS.uploadChunkBytes, 1, 4 * 1024 * 1024),
    uploadWindow: int('uploadWindow', o.uploadWindow, RUNTIME_DEFAULTS.uploadWindow, 1, 256),
    inputChunkBytes: int('inputChunkBytes', o.inputChunkBytes, RUNTIME_DEFAULTS.inputChunkBytes, 1, 4 * 1024 * 1024),
    retryDelayMs: int('retryDelayMs', o.retryDelayMs, RUNTIME_DEFAULTS.retryDelayMs, 0),
    maxRetries: int('maxRetries', o.maxRetries, RUNTIME_DEFAULTS.maxRetries, 0),
    acceptWaitMs: int('acceptWaitMs', o.acceptWaitMs, RUNTIME_DEFAULTS.acceptWaitMs, 0),
    keepWorkDirs: o.keepWorkDirs ?? false,
    slotRecordFile: o.slotRecordFile === false ? undefined : resolve(o.slotRecordFile ?? join(dir, 'slot-record.jsonl')),
    slotRecordMaxBytes: int('slotRecordMaxBytes', o.slotRecordMaxBytes, SLOT_RECORD_DEFAULT_MAX_BYTES, SLOT_RECORD_MIN_MAX_BYTES),
    attemptsDir: join(dir, 'attempts'),
    backoffMinMs: o.backoffMinMs,
    backoffMaxMs: o.backoffMaxMs,
    connectTimeoutMs: o.connectTimeoutMs,
    rpc: { ...(o.rpc ?? {}) },
  });
}
