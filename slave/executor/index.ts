/**
 * The slave's executor: one attempt in its own process group and fresh work dir, slots, cancel,
 * drain. Transport-free; the agent wires it to the master. See docs/slave.md.
 */
export { Executor } from './executor.js';
export type { RunningAttempt } from './executor.js';
export { runAttempt, attemptEnv } from './run-attempt.js';
export { lookUpUserName, nameFromPasswdLines, userNameOf } from './user-name.js';
export type { UserLookupSources } from './user-name.js';
export type { AttemptHandle, AttemptOutcome, AttemptResult } from './run-attempt.js';
export { checkAttemptSpec } from './attempt-spec.js';
export type { AttemptSpec, CheckedAttemptSpec } from './attempt-spec.js';
export { compileExecutorOptions, EXECUTOR_DEFAULTS } from './executor-options.js';
export type { CompiledExecutorOptions, ExecutorOptions } from './executor-options.js';
export { OutputBatcher } from './output-batcher.js';
export { prepareWorkDir, removeTree, slotWorkDir, WORK_SUBDIRS } from './work-dir.js';
export type { LogSink, OutputBatcherOptions } from './output-batcher.js';
export { SlotPool } from './slot-pool.js';
export type { SlotEvent, SlotLease, SlotRecord } from './slot-pool.js';
export { AttemptCgroup, findCgroupPlace, sweepCgroups } from './cgroup.js';
export type { CgroupPlace } from './cgroup.js';
