export * from './roles.js';
export * from './keys.js';
export * from './certificates.js';
export * from './registry.js';
export * from './ca-dir.js';
export * from './identity-renewal.js';
export * from './server-renewal.js';
