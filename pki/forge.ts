import { createRequire } from 'node:module';
import type forgeNs from 'node-forge';
import { releaseOptimizer } from '../protocol/v8-optimizer.js';

let loaded: typeof forgeNs | undefined;

/**
 * node-forge, loaded on first use. The long-running processes need it only to sign or make a
 * certificate (an enrollment, `client create`); a `slave run` never does, and loading it up front
 * costs a master or slave about 2 MiB of heap and 45 module files for nothing.
 */
export function forge(): typeof forgeNs {
  if (loaded === undefined) {
    // RSA in JavaScript: an idle daemon holds V8's optimizer (protocol/v8-optimizer.ts), and
    // forge's modular arithmetic is about 20x slower without it (signing a certificate with the
    // CA key: 833 ms instead of 43). Whoever needs forge gets the optimizer back, for good.
    releaseOptimizer();
    loaded = createRequire(import.meta.url)('node-forge') as typeof forgeNs;
  }
  return loaded;
}
