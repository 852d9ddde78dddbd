/**
 * The slave program: subscribe, serve attempt.assign / attempt.cancel, run attempts through the
 * executor and deliver their logs, artifacts and outcomes to the master. See docs/slave.md.
 */
export { SlaveRuntime } from './slave-runtime.js';
export type { HeldAttempt, ShutdownReport } from './slave-runtime.js';
export { compileSlaveRuntimeOptions, RUNTIME_DEFAULTS, MAX_CAPACITY } from './runtime-options.js';
export type { CompiledSlaveRuntimeOptions, SlaveRuntimeOptions } from './runtime-options.js';
export type { TaskEnd } from './attempt-task.js';
export { previousSlotRecordPath, readSlotRecord, SLOT_RECORD_DEFAULT_MAX_BYTES, SLOT_RECORD_MIN_MAX_BYTES, SlotRecordFile } from './slot-record-file.js';
export type { SlotRecordFileOptions, SlotRecordLine } from './slot-record-file.js';
export { checkInputList } from './fetch-inputs.js';
export { buildOutcome } from './outcome.js';
export type { StoredOutcome } from './attempt-files.js';
