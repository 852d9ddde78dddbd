export * from './enroll.js';
export * from './agent.js';
