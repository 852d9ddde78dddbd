import { BuilderError } from '../../protocol/errors.js';

/** Options of a {@link LogSpool}. Every field is optional; the defaults are documented per field. */
export interface LogSpoolOptions {
  /**
   * Limit on the unacknowledged bytes kept on disk for one attempt. When appending goes over it,
   * the spool drops the middle of the unacknowledged log (whole segments between the oldest one
   * and the one being written) and leaves one `dropped` marker in their place.
   * Default 256 MiB.
   */
  maxBytes?: number;
  /** Size at which the spool starts a new segment file. At most `maxBytes / 4`. Default 4 MiB. */
  segmentBytes?: number;
  /**
   * Largest payload of one record (one chunk). A longer chunk is refused with
   * BUILDER_ERR_INVALID_INPUT: the writer must split its output (the executor's `maxChunkBytes`
   * must not exceed this). At most `segmentBytes`. Default 1 MiB.
   */
  maxRecordBytes?: number;
  /** Call fsync after each append (power-loss durability, slower). Default false: process-crash durability only. */
  fsync?: boolean;
}

/** The validated, normalised form of {@link LogSpoolOptions}. */
export interface CompiledLogSpoolOptions {
  readonly maxBytes: number;
  readonly segmentBytes: number;
  readonly maxRecordBytes: number;
  readonly fsync: boolean;
}

export const LOG_SPOOL_DEFAULTS: CompiledLogSpoolOptions = Object.freeze({
  maxBytes: 256 * 1024 * 1024,
  segmentBytes: 4 * 1024 * 1024,
  maxRecordBytes: 1024 * 1024,
  fsync: false,
});

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v <= 0) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `log spool option ${name} must be a positive integer, got ${String(v)}`);
  }
  return v;
}

/** Validates and normalises spool options once. */
export function compileLogSpoolOptions(o: LogSpoolOptions = {}): CompiledLogSpoolOptions {
  const maxBytes = positiveInt('maxBytes', o.maxBytes, LOG_SPOOL_DEFAULTS.maxBytes);
  const segmentBytes = positiveInt('segmentBytes', o.segmentBytes, Math.min(LOG_SPOOL_DEFAULTS.segmentBytes, Math.floor(maxBytes / 4)));
  const maxRecordBytes = positiveInt('maxRecordBytes', o.maxRecordBytes, Math.min(LOG_SPOOL_DEFAULTS.maxRecordBytes, segmentBytes));
  // The drop-the-middle rule keeps the oldest and the newest segment: both must fit well inside the limit.
  if (segmentBytes * 4 > maxBytes) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `log spool segmentBytes (${segmentBytes}) must be at most maxBytes / 4 (${maxBytes})`);
  }
  if (maxRecordBytes > segmentBytes) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `log spool maxRecordBytes (${maxRecordBytes}) must be at most segmentBytes (${segmentBytes})`);
  }
  return Object.freeze({ maxBytes, segmentBytes, maxRecordBytes, fsync: o.fsync ?? false });
}
