import assert from 'node:assert/strict';
import { getHeapStatistics } from 'node:v8';
import { holdOptimizer, releaseOptimizer } from '../../../protocol/v8-optimizer.js';
import { startIdleTuning } from '../../../cli/idle-tuning.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Grows the V8 heap by about `mib` MiB of objects that are garbage once this returns. */
function makeGarbage(mib: number): number {
  const keep: Array<Array<{ i: number; s: string }>> = [];
  for (let m = 0; m < mib; m++) keep.push(Array.from({ length: 16_000 }, (_, i) => ({ i, s: `x${i}` })));
  return keep.length;
}

/** Waits until `cond` holds (checked every 10 ms), at most `ms`. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(10);
}

// The event loop's utilization is fed by each test (the machine's own would make these depend on
// what else runs); the collections and the heap sizes are V8's own.
describe('idle tuning (cli/idle-tuning)', function () {
  this.timeout(20_000);

  it('collects once after the start, again only after the heap grew, and shrinks it', async () => {
    const collected: Array<[number, number]> = [];
    const g = startIdleTuning({ intervalMs: 50, elu: () => 0, burstElu: () => 0, minGrowthBytes: 16 * 1024 * 1024, onCollect: (b, a) => collected.push([b, a]) });
    try {
      await until(() => g.collections === 1, 2000);
      assert.equal(g.collections, 1, 'the first idle interval collects what start-up left');
      // Idle, no growth: no second collection.
      await sleep(300);
      assert.equal(g.collections, 1);
      makeGarbage(60);
      const grown = getHeapStatistics().total_heap_size;
      await until(() => g.collections === 2, 2000);
      assert.equal(g.collections, 2, 'grown by 16 MiB: collected again');
      const [before, after] = collected[1]!;
      assert.ok(after < before, `heap ${before} -> ${after} bytes`);
      assert.ok(getHeapStatistics().total_heap_size < grown);
    } finally {
      g.stop();
    }
  });

  it('never collects while the event loop is busy, even when the heap grew', async () => {
    const g = startIdleTuning({ intervalMs: 50, elu: () => 0.9, burstElu: () => 0, minGrowthBytes: 1024 * 1024 });
    try {
      makeGarbage(20);
      await sleep(400);
      assert.equal(g.collections, 0);
    } finally {
      g.stop();
      releaseOptimizer();
    }
  });

  it('lets the optimizer go in the first busy interval, once, and not while idle', async () => {
    holdOptimizer();
    const feed = [0, 0, 0, 0.01, 0.3, 0.9, 0.9];
    let n = 0;
    const busy: number[] = [];
    const g = startIdleTuning({ intervalMs: 30, busyAbove: 0.25, elu: () => feed[Math.min(n++, feed.length - 1)]!, burstElu: () => 0, onBusy: (elu) => busy.push(elu) });
    try {
      await until(() => n >= 4, 2000);
      assert.equal(g.optimizing, false, 'idle intervals keep it held');
      await until(() => n >= 7, 2000);
      assert.equal(g.optimizing, true);
      assert.deepEqual(busy, [0.3], 'let go once, in the first interval at or above busyAbove');
    } finally {
      g.stop();
      releaseOptimizer();
    }
  });

  it('lets it go sooner in a burst: the first short sample at or above burstAbove, then stops sampling', async () => {
    holdOptimizer();
    const feed = [0.1, 0.2, 0.24, 0.3, 0.9];
    let n = 0;
    const busy: number[] = [];
    const g = startIdleTuning({
      intervalMs: 60_000,
      elu: () => 0,
      burstIntervalMs: 20,
      burstAbove: 0.25,
      burstElu: () => feed[Math.min(n++, feed.length - 1)]!,
      onBusy: (elu) => busy.push(elu),
    });
    try {
      await until(() => n >= 3, 2000);
      assert.equal(g.optimizing, false, 'short samples under burstAbove keep it held');
      await until(() => g.optimizing, 2000);
      assert.deepEqual(busy, [0.3]);
      const taken = n;
      await sleep(150);
      assert.equal(n, taken, 'no burst sample once it is let go');
    } finally {
      g.stop();
      releaseOptimizer();
    }
  });
});
