export { Scheduler } from './scheduler.js';
export type { Assignment, FinishResult, JobPhase, Quarantine, SchedJob, SlaveSpec, SlaveView, TickResult } from './scheduler.js';
export { compileSchedulerOptions } from './scheduler-options.js';
export type { CompiledSchedulerOptions, SchedulerOptions } from './scheduler-options.js';
export { schedJobOf } from './sched-job-of.js';
