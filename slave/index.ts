export * from './enroll.js';
export * from './agent.js';
export * from './runtime/index.js';
