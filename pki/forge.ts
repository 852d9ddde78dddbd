import { createRequire } from 'node:module';
import type forgeNs from 'node-forge';

let loaded: typeof forgeNs | undefined;

/**
 * node-forge, loaded on first use. The long-running processes need it only to sign or make a
 * certificate (an enrollment, `client create`); a `slave run` never does, and loading it up front
 * costs a master or slave about 2 MiB of heap and 45 module files for nothing.
 */
export function forge(): typeof forgeNs {
  loaded ??= createRequire(import.meta.url)('node-forge') as typeof forgeNs;
  return loaded;
}
