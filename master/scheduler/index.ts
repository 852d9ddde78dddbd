export { Scheduler } from './scheduler.js';
export type { Assignment, DeadlineReport, FinishResult, JobPhase, NewJobPlacement, Quarantine, SchedJob, SlaveSpec, SlaveView, SlotHold, TickResult } from './scheduler.js';
export { compileSchedulerOptions } from './scheduler-options.js';
export type { CompiledSchedulerOptions, SchedulerOptions } from './scheduler-options.js';
export { schedJobOf } from './sched-job-of.js';
