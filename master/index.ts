export * from './master.js';
export * from './master-options.js';
export * from './version.js';
export * from './jobs/index.js';
