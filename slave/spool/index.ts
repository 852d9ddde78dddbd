/**
 * The slave's durable per-attempt log spool and the transport-neutral pump that sends it to the
 * master. See docs/slave.md ("Log sequencing and spool").
 */
export { LogSpool, DEFAULT_READ_BYTES, FIRST_SEGMENT_NAME, openEmpty } from './log-spool.js';
export type { LogChunk, LogStream, SpoolRecord } from './log-spool.js';
export { compileLogSpoolOptions, LOG_SPOOL_DEFAULTS } from './log-spool-options.js';
export type { LogSpoolOptions, CompiledLogSpoolOptions } from './log-spool-options.js';
export { SpoolSender } from './spool-sender.js';
export type { SendLogRecords, SpoolSenderOptions } from './spool-sender.js';
export { checkAttemptKey, listSpools, spoolDirFor } from './spool-dir.js';
export type { AttemptKey } from './spool-dir.js';
