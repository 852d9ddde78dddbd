export { JobService } from './job-service.js';
export { compileJobServiceOptions } from './job-options.js';
export type { CompiledJobServiceOptions, JobServiceOptions } from './job-options.js';
export { AttemptLogStore } from './log-store.js';
export type { LogPage, LogRecord, LogStoreOptions } from './log-store.js';
export { artifactKindOf, fileAttempt } from './artifact-filing.js';
export type { AttemptArtifact, FiledArtifact, FilingPlaces, FilingResult } from './artifact-filing.js';
