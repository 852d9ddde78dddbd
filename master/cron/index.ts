export { CronRunner } from './cron-runner.js';
export type { CronStore, OnFired, ScheduleRequest } from './cron-runner.js';
export { compileCronOptions } from './cron-options.js';
export type { CompiledCronOptions, CronOptions, CronTimers } from './cron-options.js';
export { checkCronExpression, checkTimeZone, nextFireAfter, MAX_CRON_LENGTH } from './cron-expression.js';
