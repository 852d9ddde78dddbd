import { setFlagsFromString } from 'node:v8';

/**
 * V8's optimizing compiler (TurboFan) is held off while `master run` or `slave run` starts, and
 * let go once the daemon is busy (cli/idle-tuning.ts) or loads node-forge (pki/forge.ts: RSA in
 * JavaScript is 20x slower without it). Start-up code
 * (oclif's config and command loading, building the protocol's schemas, opening the store)
 * runs once; optimizing it buys nothing, yet the optimized code and the compiler's scratch
 * memory (freed into glibc arenas of V8's worker threads, which keep it) stayed in the idle
 * daemon: about 7 MiB of the master's and the slave's resident memory (docs/benchmarks.md,
 * "Jobs"). Code that runs hot afterwards is optimized as usual: V8 reads the flag each time it
 * decides whether to tier a function up.
 */
export function holdOptimizer(): void {
  // Sparkplug, the baseline compiler, too: its code for warm start-up functions was ~1 MiB more.
  setFlagsFromString('--no-opt');
  setFlagsFromString('--no-sparkplug');
}

/** Lets V8 optimize hot functions again (idempotent). */
export function releaseOptimizer(): void {
  setFlagsFromString('--opt');
  setFlagsFromString('--sparkplug');
}
