import { setFlagsFromString } from 'node:v8';

/**
 * V8's optimizing compiler (TurboFan) is held off while a command starts and let go once the
 * command is up. Start-up code (oclif's config and command loading, building the protocol's
 * schemas, opening the store) runs once; optimizing it buys nothing, yet the optimized code and
 * the compiler's scratch memory (freed into glibc arenas of V8's worker threads, which keep it)
 * stayed in the idle daemon: about 7 MiB of the master's and the slave's resident memory
 * (docs/benchmarks.md, "Jobs"). Code that runs hot afterwards, such as the dispatch path under
 * load, is optimized as usual: the flag is read each time V8 decides whether to tier up.
 */
export function holdOptimizer(): void {
  setFlagsFromString('--no-opt');
}

/** Lets V8 optimize hot functions again (idempotent). */
export function releaseOptimizer(): void {
  setFlagsFromString('--opt');
}
