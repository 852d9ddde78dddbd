import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isBuilderError } from '../../../protocol/errors.js';
import { SlotPool, type SlotEvent, type SlotLease } from '../../../slave/executor/index.js';

/** Recomputes the peak of slots in use from the event log alone. */
function peakFromEvents(events: readonly SlotEvent[]): number {
  let used = 0;
  let peak = 0;
  for (const e of events) {
    used += e.event === 'start' ? e.slots : -e.slots;
    peak = Math.max(peak, used);
  }
  return peak;
}

describe('slave/executor SlotPool', () => {
  describe('when a random mix of weighted jobs competes for the slots', () => {
    it('never has more slots in use than its capacity, by its own record', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 8 }),
          fc.array(fc.record({ op: fc.constantFrom('acquire', 'acquire', 'release', 'drain', 'undrain'), weight: fc.integer({ min: 1, max: 8 }), pick: fc.nat() }), { maxLength: 200 }),
          (capacity, ops) => {
            let clock = 0;
            const pool = new SlotPool(capacity, { now: () => ++clock });
            const held: SlotLease[] = [];
            let n = 0;
            for (const o of ops) {
              if (o.op === 'acquire') {
                const w = Math.min(o.weight, capacity);
                const lease = pool.tryAcquire(`k${n++}`, w);
                const fits = !pool.draining && held.reduce((s, l) => s + l.slots, 0) + w <= capacity;
                assert.equal(lease !== undefined, fits, 'acquire succeeds exactly when it fits and the pool is not draining');
                if (lease) {
                  // Its slot numbers are in range and held by no other lease (they name work dirs).
                  assert.equal(lease.indices.length, w);
                  const others = new Set(held.flatMap((l) => l.indices));
                  for (const i of lease.indices) assert.ok(i >= 0 && i < capacity && !others.has(i), `slot ${i} given twice or out of range`);
                  held.push(lease);
                }
              } else if (o.op === 'release' && held.length > 0) {
                held.splice(o.pick % held.length, 1)[0]!.release();
              } else if (o.op === 'drain') {
                pool.drain();
              } else if (o.op === 'undrain') {
                pool.undrain();
              }
              assert.ok(pool.used <= capacity);
            }
            const rec = pool.record();
            assert.ok(rec.maxConcurrentSlots <= capacity);
            assert.equal(peakFromEvents(rec.events), rec.maxConcurrentSlots);
          },
        ),
        { numRuns: 300 },
      );
    });
  });

  it('refuses a job heavier than the capacity and a key that is already held', () => {
    const pool = new SlotPool(2);
    assert.throws(() => pool.tryAcquire('big', 3), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
    pool.tryAcquire('a', 1);
    assert.throws(() => pool.tryAcquire('a', 1), (e) => isBuilderError(e, 'BUILDER_ERR_CONFLICT'));
  });

  it('keeps at most maxRecordEvents events and counts the dropped ones', () => {
    const pool = new SlotPool(1, { maxRecordEvents: 3 });
    for (let i = 0; i < 3; i++) pool.tryAcquire(`k${i}`, 1)!.release();
    const rec = pool.record();
    assert.equal(rec.events.length, 3);
    assert.equal(rec.droppedEvents, 3);
    assert.equal(rec.events[rec.events.length - 1]?.key, 'k2');
  });

  describe('when drained', () => {
    it('takes nothing new, lets what runs finish, reports the deadline, and takes work again when undrained', async () => {
      const pool = new SlotPool(3);
      const a = pool.tryAcquire('a', 1)!;
      const b = pool.tryAcquire('b', 2)!;
      pool.drain();
      assert.equal(pool.tryAcquire('c', 1), undefined);
      assert.equal(pool.free, 0);
      assert.deepEqual(await pool.drainAndWait(0), { drained: false, running: ['a', 'b'] });
      const waiting = pool.drainAndWait(60_000);
      a.release();
      b.release();
      assert.deepEqual(await waiting, { drained: true, running: [] });
      assert.equal(pool.tryAcquire('d', 1), undefined, 'still draining after the wait');
      pool.undrain();
      assert.ok(pool.tryAcquire('d', 1));
    });
  });
});
