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

/**
 * Lets Sparkplug, the baseline compiler, go once the daemon has started (cli/idle-tuning.ts),
 * while TurboFan stays held until it is busy. Start-up code has run by then, so only what runs
 * warm afterwards gets baseline code: the dispatch path, heartbeats. On an idle farm that took
 * the mean queued -> running from 1.94-2.18 to 1.54-2.12 ms back to back, and lower in all 5
 * alternated pairs, for about 0.7 MiB more in the master and no change seen in the slaves
 * (docs/benchmarks.md, "Night of 2026-12-01").
 */
export function releaseBaselineCompiler(): void {
  setFlagsFromString('--sparkplug');
}

/** Lets V8 optimize hot functions again (idempotent). */
export function releaseOptimizer(): void {
  setFlagsFromString('--opt');
  setFlagsFromString('--sparkplug');
}
