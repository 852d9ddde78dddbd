import assert from 'node:assert/strict';
import { getHeapStatistics } from 'node:v8';
import { holdOptimizer, releaseOptimizer } from '../../../cli/optimizer.js';
import { startIdleTuning } from '../../../cli/idle-tuning.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Grows the V8 heap by about `mib` MiB of objects that are garbage once this returns. */
function makeGarbage(mib: number): number {
  const keep: Array<Array<{ i: number; s: string }>> = [];
  for (let m = 0; m < mib; m++) keep.push(Array.from({ length: 16_000 }, (_, i) => ({ i, s: `x${i}` })));
  return keep.length;
}

describe('idle tuning (cli/idle-tuning)', function () {
  this.timeout(20_000);

  it('collects once in the first idle interval after the heap grew, and shrinks it', async () => {
    const collected: Array<[number, number]> = [];
    const g = startIdleTuning({ intervalMs: 100, idleBelow: 0.5, minGrowthBytes: 16 * 1024 * 1024, onCollect: (b, a) => collected.push([b, a]) });
    try {
      makeGarbage(60);
      const grown = getHeapStatistics().total_heap_size;
      await sleep(600);
      assert.equal(g.collections, 1);
      assert.ok(collected[0]![1] < collected[0]![0], `heap ${collected[0]![0]} -> ${collected[0]![1]} bytes`);
      assert.ok(getHeapStatistics().total_heap_size < grown);
      // Still idle, no new growth: no second collection.
      await sleep(400);
      assert.equal(g.collections, 1);
      // Grown again: collected again.
      makeGarbage(60);
      await sleep(600);
      assert.equal(g.collections, 2);
    } finally {
      g.stop();
    }
  });

  it('collects once in the first idle interval after the start, growth or not', async () => {
    const g = startIdleTuning({ intervalMs: 100, idleBelow: 0.5, minGrowthBytes: 1024 * 1024 });
    try {
      await sleep(350);
      assert.equal(g.collections, 1);
    } finally {
      g.stop();
    }
  });

  it('never collects while the event loop is busy, even when the heap grew', async () => {
    const g = startIdleTuning({ intervalMs: 100, idleBelow: 0.5, minGrowthBytes: 1024 * 1024 });
    try {
      const until = Date.now() + 800;
      // Busy: each turn of the loop does 20 ms of work and allocates.
      while (Date.now() < until) {
        makeGarbage(4);
        const t = Date.now() + 20;
        while (Date.now() < t);
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(g.collections, 0);
    } finally {
      g.stop();
    }
  });

  it('lets the optimizer go in the first busy interval, not while idle', async () => {
    holdOptimizer();
    const busy: number[] = [];
    const g = startIdleTuning({ intervalMs: 100, busyAbove: 0.5, onBusy: (elu) => busy.push(elu) });
    try {
      await sleep(350);
      assert.equal(g.optimizing, false);
      const until = Date.now() + 400;
      while (Date.now() < until) {
        const t = Date.now() + 20;
        while (Date.now() < t);
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(g.optimizing, true);
      assert.equal(busy.length, 1);
      assert.ok(busy[0]! >= 0.5, `elu ${busy[0]}`);
    } finally {
      g.stop();
      releaseOptimizer();
    }
  });
});
