export { MasterStore } from './master-store.js';
export type { FinishOutcome, FireResult, ListEventsQuery, ListJobsQuery, NewArtifact, NewSchedule, RequeueOptions, SlaveUpsert } from './master-store.js';
export { compileStoreOptions } from './store-options.js';
export type { CompiledStoreOptions, StoreOptions } from './store-options.js';
export { checkNewJob, MAX_PRIORITY, MIN_PRIORITY } from './job-spec.js';
export type { CheckedJob } from './job-spec.js';
export { MIGRATIONS } from './migrations.js';
export * from './types.js';
