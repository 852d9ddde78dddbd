import { performance } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { releaseBaselineCompiler, releaseOptimizer } from '../protocol/v8-optimizer.js';

/** Options of a daemon's idle tuning; all optional. */
export interface IdleTuningOptions {
  /** How often the event loop's utilization (ELU) is sampled. Default 10 s. */
  intervalMs?: number;
  /** An interval whose ELU is below this counts as idle. Default 0.02. */
  idleBelow?: number;
  /** The first interval whose ELU reaches this lets V8's optimizer go (protocol/v8-optimizer.ts). Default 0.05. */
  busyAbove?: number;
  /**
   * While the optimizer is held, the ELU is also sampled every `burstIntervalMs` (default 1 s),
   * and the first such sample at or above `burstAbove` (default 0.25) lets it go: a burst of
   * work does not run on the interpreter until the end of a 10 s interval.
   */
  burstIntervalMs?: number;
  burstAbove?: number;
  /** The ELU of the burst samples (as `elu`). Default: node's, from a sampler of its own. */
  burstElu?: () => number;
  /** Collect only if the V8 heap holds at least this much more than after the last collection. Default 8 MiB. */
  minGrowthBytes?: number;
  /** Called after each idle collection with the heap sizes before and after (bytes). */
  onCollect?: (before: number, after: number) => void;
  /** Called once, when the optimizer is let go, with the ELU of that interval. */
  onBusy?: (elu: number) => void;
  /**
   * The event loop's utilization since the previous call (0..1). Default: node's
   * `performance.eventLoopUtilization`. Tests feed their own.
   */
  elu?: () => number;
}

/** ELU since the previous call, from node's performance API. */
function nodeElu(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    return u;
  };
}

export interface IdleTuning {
  /** Idle collections done so far. */
  readonly collections: number;
  /** Whether the optimizer has been let go. */
  readonly optimizing: boolean;
  stop(): void;
}

let gcFn: (() => void) | undefined;

/** V8's `gc()`, fetched once from a context made while `--expose-gc` was on; the flag is turned off again at once. */
function fullGc(): () => void {
  if (gcFn === undefined) {
    setFlagsFromString('--expose-gc');
    try {
      gcFn = runInNewContext('gc') as () => void;
    } finally {
      setFlagsFromString('--no-expose-gc');
    }
  }
  return gcFn;
}

/**
 * What a long-running daemon (`master run`, `slave run`) does about its memory while it is
 * idle, which is most of its life. It samples the event loop's utilization (ELU) every
 * `intervalMs`, and:
 *
 * - Optimizer. The bin starts with V8's optimizing compiler held (protocol/v8-optimizer.ts). The first
 *   interval with ELU of `busyAbove` or more lets it go, for good, or sooner the first second
 *   with ELU of `burstAbove` or more (a burst: 20,000 no-op jobs through a fresh master ran at
 *   0.48-0.51 ms of its CPU per job with the optimizer held until the next 10 s sample, 0.41-0.42
 *   with it on from the start). An idle or lightly loaded
 *   daemon (heartbeats, a slave running a long build) runs on V8's interpreter and baseline
 *   compiler, which is plenty for it; optimizing its few warm functions paged in ~3.5 MiB of the
 *   compiler's code from the node binary and left its scratch memory in glibc's thread arenas
 *   (the master with 10 slaves idle: 71 MiB with the optimizer, 64 without). Under load, hot
 *   code is optimized as usual, from the first busy interval on.
 * - Heap. A daemon idle after a burst kept the heap the burst grew (young generation at 32 MiB,
 *   garbage waiting in the old one), because V8 shrinks a heap only after a full collection
 *   that an idle process never triggers: 2,000 no-op jobs through two slaves left them at
 *   101-125 MiB 45 s later, 78-80 MiB after a collection. In the first idle interval after the
 *   heap grew `minGrowthBytes` since the last collection, this runs two full collections (tens
 *   of milliseconds on these heaps), then waits for the next growth. A busy process is never
 *   interrupted by it. The first idle interval after the start collects too (start-up's garbage).
 */
export function startIdleTuning(o: IdleTuningOptions = {}): IdleTuning {
  const intervalMs = o.intervalMs ?? 10_000;
  const idleBelow = o.idleBelow ?? 0.02;
  const busyAbove = o.busyAbove ?? 0.05;
  const minGrowth = o.minGrowthBytes ?? 8 * 1024 * 1024;
  const gc = fullGc();
  // Zero: the first idle interval also collects what start-up left (oclif's command loading,
  // the TLS handshake, the first subscribe): a slave 3 s after it started held 68 MiB, 59 once
  // collected, and nothing made V8 collect it on its own while it idled.
  let baseline = 0;
  const sample = o.elu ?? nodeElu();
  const state = { collections: 0, optimizing: false };
  const busy = (elu: number): void => {
    if (state.optimizing) return;
    state.optimizing = true;
    clearInterval(burst);
    releaseOptimizer();
    o.onBusy?.(elu);
  };
  const burstAbove = o.burstAbove ?? 0.25;
  const burstSample = o.burstElu ?? nodeElu();
  const burst = setInterval(() => {
    const elu = burstSample();
    if (elu >= burstAbove) busy(elu);
  }, o.burstIntervalMs ?? 1000);
  burst.unref();
  const timer = setInterval(() => {
    const elu = sample();
    if (elu >= busyAbove) busy(elu);
    const before = getHeapStatistics().total_heap_size;
    if (elu >= idleBelow || before - baseline < minGrowth) return;
    // Twice: the first frees the garbage, the second releases the pages the first left empty
    // (with one, the old generation kept its grown size: 33 MiB of pages for 13 MiB of objects).
    gc();
    gc();
    baseline = getHeapStatistics().total_heap_size;
    state.collections++;
    o.onCollect?.(before, baseline);
  }, intervalMs);
  timer.unref();
  return {
    get collections() {
      return state.collections;
    },
    get optimizing() {
      return state.optimizing;
    },
    stop: () => {
      clearInterval(timer);
      clearInterval(burst);
    },
  };
}

/**
 * For a daemon command once it has started: lets the baseline compiler go
 * ({@link releaseBaselineCompiler}), then {@link startIdleTuning}, with its collections and the
 * optimizer's release logged at debug level.
 */
export function startDaemonIdleTuning(log: { debug: (o: object, msg: string) => void }): IdleTuning {
  releaseBaselineCompiler();
  return startIdleTuning({
    onCollect: (before, after) => log.debug({ heapBefore: before, heapAfter: after }, 'idle: heap collected'),
    onBusy: (elu) => log.debug({ elu }, 'busy: optimizing compiler on'),
  });
}
