import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isBuilderError } from '../../../protocol/errors.js';
import { Scheduler, type SchedJob } from '../../../master/scheduler/index.js';
import { IndexedHeap } from '../../../master/scheduler/indexed-heap.js';

class FakeClock {
  t = 1_000_000;
  now = (): number => this.t;
}

let nextId = 1;
function job(p: Partial<SchedJob> = {}): SchedJob {
  return { id: nextId++, channel: 'stable', arch: 'x86_64', slots: 1, priority: 0, ...p };
}

describe('master/scheduler IndexedHeap', () => {
  it('pops in order after random pushes and removals, and lists the first k in order', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.boolean())), fc.integer({ min: 1, max: 20 }), (ops, k) => {
        type It = { v: number; heapIndex: number };
        const h = new IndexedHeap<It>((a, b) => a.v < b.v);
        const live: It[] = [];
        for (const [v, rm] of ops) {
          if (rm && live.length > 0) h.remove(live.splice(v % live.length, 1)[0]!);
          else {
            const it = { v, heapIndex: -1 };
            h.push(it);
            live.push(it);
          }
        }
        const sorted = live.map((x) => x.v).sort((a, b) => a - b);
        assert.deepEqual([...h.ordered(k)].map((x) => x.v), sorted.slice(0, k));
        const out: number[] = [];
        while (h.size > 0) {
          const x = h.peek()!;
          h.remove(x);
          out.push(x.v);
        }
        assert.deepEqual(out, sorted);
      }),
    );
  });
});

describe('master/scheduler Scheduler', () => {
  let clock: FakeClock;
  let s: Scheduler;
  beforeEach(() => {
    clock = new FakeClock();
    s = new Scheduler({ now: clock.now, quarantineAfter: 3, quarantineMs: 60_000, acceptTimeoutMs: 5_000 });
  });

  describe('when jobs are queued before any slave', () => {
    it('dispatches them by priority, then age, when a slave connects', () => {
      const a = job({ priority: 0 });
      const b = job({ priority: 5 });
      const c = job({ priority: 5 });
      const d = job({ priority: 1, arch: 'any' });
      assert.deepEqual(s.jobsQueued([a, b, c, d]), []);
      const out = s.slaveConnected({ name: 'w1', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
      assert.deepEqual(out.map((x) => x.jobId), [b.id, c.id, d.id, a.id]);
    });

    it('sends a job only to a slave of its channel and arch; noarch is just an arch name', () => {
      s.slaveConnected({ name: 'arm', channels: ['stable'], arches: ['aarch64'], capacity: 2 });
      s.slaveConnected({ name: 'noarch', channels: ['stable'], arches: ['noarch'], capacity: 2 });
      assert.deepEqual(s.jobQueued(job({ arch: 'x86_64' })), []);
      assert.equal(s.jobQueued(job({ arch: 'noarch' }))[0]?.slave, 'noarch');
      assert.equal(s.jobQueued(job({ arch: 'aarch64' }))[0]?.slave, 'arm');
      assert.deepEqual(s.jobQueued(job({ channel: 'testing', arch: 'any' })), []);
    });
  });

  describe('when a slave fails jobs in setup', () => {
    it('quarantines it after N in a row, sends the failed job elsewhere, and takes it back when the quarantine ends', () => {
      s.slaveConnected({ name: 'bad', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const jobs = [job(), job(), job()];
      let first = s.jobsQueued(jobs);
      assert.equal(first[0]?.slave, 'bad');
      s.slaveConnected({ name: 'good', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      // good took the second job; bad fails its job in setup; the job is requeued and avoids bad.
      let failed = first[0]?.jobId ?? -1;
      let r = s.jobFinished(failed, { setupFailure: true });
      assert.equal(r.quarantined, undefined);
      // bad now takes the third job (the requeued one is not back yet).
      assert.equal(r.assignments[0]?.slave, 'bad');
      // The requeued job goes to good once good is free, not to bad.
      const onGood = s.jobsOf('good')[0]!;
      s.jobFinished(onGood);
      const again = s.jobQueued({ ...jobs.find((j) => j.id === failed)!, seq: failed });
      assert.equal(again[0]?.slave, 'good');
      s.jobStarted(again[0].jobId);
      // Two more setup failures in a row on bad: quarantined.
      failed = r.assignments[0]?.jobId ?? -1;
      r = s.jobFinished(failed, { setupFailure: true });
      assert.equal(r.quarantined, undefined);
      first = s.jobQueued(job());
      assert.equal(first[0]?.slave, 'bad');
      r = s.jobFinished(first[0]?.jobId ?? -1, { setupFailure: true });
      assert.deepEqual(r.quarantined, { slave: 'bad', until: clock.t + 60_000 });
      assert.deepEqual(s.jobQueued(job()), []);
      const waiting = s.jobQueued(job({ slots: 1 }));
      assert.deepEqual(waiting, []);
      assert.ok(s.slave('bad')!.quarantinedUntil !== null);
      assert.equal(s.nextWakeAt(), clock.t + 60_000);
      clock.t += 60_000;
      const t = s.tick();
      assert.equal(t.assignments[0]?.slave, 'bad');
    });

    it('lets a job that avoids the only matching slave run there rather than wait forever', () => {
      s.slaveConnected({ name: 'only', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const j = job();
      const [a] = s.jobQueued(j);
      s.jobFinished(a!.jobId, { setupFailure: true });
      assert.equal(s.jobQueued(j)[0]?.slave, 'only');
    });

    it('resets the count after a job that got past setup', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      for (let i = 0; i < 5; i++) {
        const [a] = s.jobQueued(job());
        const r = s.jobFinished(a!.jobId, { setupFailure: i % 2 === 0 });
        assert.equal(r.quarantined, undefined);
      }
    });
  });

  describe('when an attempt ends without a result and the job goes back to the queue', () => {
    it('offers the freed slots to the requeued job with the others, by priority then age', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const high = job({ priority: 9 });
      const low = job({ priority: 0 });
      assert.deepEqual(s.jobQueued(high).map((a) => a.jobId), [high.id]);
      s.jobStarted(high.id);
      assert.deepEqual(s.jobQueued(low), []);
      // The slave came back without the attempt: the job is requeued, not failed in setup.
      const r = s.jobFinished(high.id, { requeue: high });
      assert.deepEqual(r.assignments, [{ jobId: high.id, slave: 'w', slots: 1 }]);
      assert.match(s.explain(low.id), /slot/);
      // A requeue of lower priority than a waiting job leaves the slot to that job.
      s.jobStarted(high.id);
      const lower = s.jobFinished(high.id, { requeue: { ...high, priority: -1 } });
      assert.deepEqual(lower.assignments, [{ jobId: low.id, slave: 'w', slots: 1 }]);
    });

    it('refuses a requeue that names another job', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const a = job();
      s.jobQueued(a);
      assert.throws(() => s.jobFinished(a.id, { requeue: job() }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
    });
  });

  describe('when a slave does not accept an assignment in time', () => {
    it('takes it back at the deadline (tick), counts a setup failure, and dispatches it elsewhere', () => {
      s.slaveConnected({ name: 'slow', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const j = job();
      assert.equal(s.jobQueued(j)[0]?.slave, 'slow');
      s.slaveConnected({ name: 'fast', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      assert.equal(s.nextWakeAt(), clock.t + 5_000);
      clock.t += 4_999;
      assert.deepEqual(s.tick().expired, []);
      clock.t += 1;
      const t = s.tick();
      assert.deepEqual(t.expired.map(({ gen: _gen, ...a }) => a), [{ jobId: j.id, slave: 'slow', slots: 1 }]);
      // Reported, not freed: the store decides (the slave may have accepted while the start's
      // write was slow). Reported once.
      assert.equal(s.phaseOf(j.id), 'assigned');
      assert.equal(s.slave('slow')!.used, 1);
      assert.deepEqual(s.tick().expired, []);
      assert.equal(s.nextWakeAt(), undefined);
      // The caller took it back in the store: a setup failure of that slave, and the job goes elsewhere.
      assert.deepEqual(s.jobFinished(j.id, { setupFailure: true, requeue: j }).assignments, [{ jobId: j.id, slave: 'fast', slots: 1 }]);
      assert.equal(s.slave('slow')!.setupFailures, 1);
      s.jobStarted(j.id);
      clock.t += 10_000;
      assert.deepEqual(s.tick().expired, []);
      assert.equal(s.phaseOf(j.id), 'running');
    });
  });

  describe('when a deadline report could not be handled and is handed back (reportAgain)', () => {
    it('reports it again at the time given while it is the same stay on the same slave, and drops a stale one', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const j = job({ timeoutMs: 1_000 });
      s.jobQueued(j);
      clock.t += 5_000;
      const [e] = s.tick().expired;
      assert.ok(e !== undefined);
      // Still assigned: reported again at the time given, once.
      s.reportAgain(e, 'expired', clock.t + 1_000);
      s.reportAgain(e, 'expired', clock.t + 9_000);
      assert.equal(s.nextWakeAt(), clock.t + 1_000);
      clock.t += 1_000;
      assert.deepEqual(s.tick().expired, [e]);
      // It started meanwhile: the accept report is stale, and must not become a timeout.
      s.jobStarted(j.id);
      s.reportAgain(e, 'expired', clock.t + 1_000);
      s.reportAgain(e, 'timedOut', clock.t + 1_000);
      assert.equal(s.nextWakeAt(), clock.t + 1_000 + 60_000, 'only its own master-side deadline (timeout + grace)');
      // Requeued and placed again on the same slave: the old report does not cut the new accept time.
      s.jobFinished(j.id, { requeue: j });
      assert.equal(s.phaseOf(j.id), 'assigned');
      s.reportAgain(e, 'expired', clock.t + 1_000);
      assert.equal(s.nextWakeAt(), clock.t + 5_000);
    });
  });

  describe('when a running job outlives its timeout', () => {
    it('reports it once at timeout + grace (master-side timeout), including a job restored after a restart', () => {
      s = new Scheduler({ now: clock.now, timeoutGraceMs: 1_000 });
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 2 });
      const j = job({ timeoutMs: 10_000 });
      s.jobQueued(j);
      s.jobStarted(j.id);
      const held = job({ timeoutMs: 5_000 });
      s.jobHeld(held, 'w', 'running', clock.t - 5_000);
      assert.equal(s.nextWakeAt(), clock.t + 1_000);
      clock.t += 1_000;
      assert.deepEqual(s.tick().timedOut.map(({ gen: _gen, ...a }) => a), [{ jobId: held.id, slave: 'w', slots: 1 }]);
      clock.t += 9_999;
      assert.deepEqual(s.tick().timedOut, []);
      clock.t += 1;
      assert.deepEqual(s.tick().timedOut.map(({ gen: _gen, ...a }) => a), [{ jobId: j.id, slave: 'w', slots: 1 }]);
      assert.deepEqual(s.tick().timedOut, [], 'reported once');
      assert.equal(s.phaseOf(j.id), 'running', 'still holds its slots until the caller ends it');
      s.jobFinished(j.id);
      s.jobFinished(held.id);
      assert.equal(s.nextWakeAt(), undefined);
      const none = job();
      s.jobQueued(none);
      s.jobStarted(none.id);
      assert.equal(s.nextWakeAt(), undefined, 'no timeout, no deadline');
    });
  });

  describe('when slots are fragmented', () => {
    it('keeps the slave with the most free slots for the large job and backfills the others', () => {
      s.slaveConnected({ name: 'a', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
      s.slaveConnected({ name: 'b', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
      const smalls = s.jobsQueued(Array.from({ length: 8 }, () => job()));
      assert.equal(smalls.length, 8);
      const big = job({ slots: 4 });
      assert.deepEqual(s.jobQueued(big), []);
      assert.match(s.explain(big.id), /waiting for 4 free slots on a, kept for it \(0 free now\)/);
      // Small jobs keep arriving; as slots free on a, nothing new lands on a.
      const onA = s.jobsOf('a');
      for (const id of onA.slice(0, 3)) {
        const r = s.jobFinished(id);
        for (const x of r.assignments) assert.notEqual(x.slave, 'a');
        s.jobQueued(job());
      }
      assert.match(s.explain(big.id), /3 free now/);
      const r = s.jobFinished(onA[3]!);
      assert.deepEqual(r.assignments, [{ jobId: big.id, slave: 'a', slots: 4 }]);
    });
  });

  describe('when asked why a job waits', () => {
    it('names the missing subscription, drained and quarantined slaves, capacity, free slots and queue position', () => {
      const j = job({ channel: 'testing', arch: 'riscv64', slots: 4 });
      s.jobQueued(j);
      assert.equal(s.explain(j.id), 'no slave subscribed to channel testing with arch riscv64');
      s.slaveConnected({ name: 'r1', channels: ['testing'], arches: ['riscv64'], capacity: 2, drained: true });
      assert.equal(s.explain(j.id), 'all matching slaves are drained (r1)');
      s.slaveDisconnected('r1');
      assert.match(s.explain(j.id), /is connected \(known: r1\)/);
      s.slaveConnected({ name: 'r1', channels: ['testing'], arches: ['riscv64'], capacity: 2, drained: false, quarantinedUntil: clock.t + 1000 });
      assert.match(s.explain(j.id), /all matching slaves are quarantined .*r1 until/);
      s.slaveUpdated('r1', { quarantinedUntil: null });
      assert.equal(s.explain(j.id), 'needs 4 slots; the largest matching slave (r1) has capacity 2');
      const filler = s.jobsQueued([job({ channel: 'testing', arch: 'riscv64', priority: 9 }), job({ channel: 'testing', arch: 'riscv64', priority: 9 })]);
      assert.equal(filler.length, 2);
      s.slaveUpdated('r1', { capacity: 6 });
      // 6 capacity, 2 used: 4 free -> it runs at once.
      assert.equal(s.phaseOf(j.id), 'assigned');
      const k = job({ channel: 'testing', arch: 'riscv64', slots: 3 });
      s.jobQueued(k);
      assert.match(s.explain(k.id), /waiting for 3 free slots/);
      const l = job({ channel: 'testing', arch: 'riscv64', slots: 3 });
      s.jobQueued(l);
      assert.match(s.explain(l.id), /waiting for 3 free slots; largest free is 0; position 2 in queue behind 1 higher-priority or older job$/);
      assert.equal(s.explain(j.id), 'dispatched to r1; waiting for it to accept');
      s.jobStarted(j.id);
      assert.equal(s.explain(j.id), 'running on r1');
      assert.equal(s.explain(123456), 'job 123456 is not waiting in the dispatcher');
    });
  });

  describe('when a new job is placed before it is stored (takeForNew)', () => {
    const spec = (p: Partial<SchedJob> = {}) => ({ channel: 'stable', arch: 'x86_64', slots: 1, priority: 0, ...p });

    it('holds its slots on the slave jobQueued would pick, invisible to jobsOf and the accept deadline until stored', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 3 });
      const p = s.takeForNew(spec({ slots: 2, timeoutMs: 1_000 }));
      assert.deepEqual(p.assignments, []);
      assert.equal(p.hold?.slave, 'w');
      assert.equal(p.hold?.slots, 2);
      assert.equal(s.slave('w')!.used, 2);
      assert.deepEqual(s.jobsOf('w'), []);
      assert.deepEqual(s.slave('w')!.jobs, []);
      assert.equal(s.nextWakeAt(), undefined);
      // A write that takes longer than the accept timeout does not lose the slots meanwhile.
      clock.t += 60_000;
      assert.deepEqual(s.tick().expired, []);
      const j = job({ slots: 2, timeoutMs: 1_000 });
      s.holdStored(p.hold, j);
      assert.deepEqual(s.jobsOf('w'), [j.id]);
      assert.equal(s.phaseOf(j.id), 'assigned');
      assert.equal(s.nextWakeAt(), clock.t + 5_000);
      assert.throws(() => s.holdStored(p.hold!, j), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFLICT'));
      // From here it is an ordinary assignment: started, timed out master-side, finished.
      s.jobStarted(j.id);
      clock.t += 1_000 + s.options.timeoutGraceMs;
      assert.deepEqual(s.tick().timedOut.map((a) => a.jobId), [j.id]);
      s.jobFinished(j.id);
      assert.equal(s.slave('w')!.used, 0);
    });

    it('gives the slots back when the write fails, and they go to a job waiting for them', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 2 });
      const p = s.takeForNew(spec());
      assert.ok(p.hold);
      const big = job({ slots: 2 });
      assert.deepEqual(s.jobQueued(big), []);
      assert.deepEqual(s.holdReleased(p.hold), [{ jobId: big.id, slave: 'w', slots: 2 }]);
      assert.equal(s.slave('w')!.used, 2);
      assert.deepEqual(s.holdReleased(p.hold), [], 'a second release changes nothing');
    });

    it('holds nothing when the job would wait, and never lets it overtake an older job kept for a slave', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 2 });
      const running = job();
      assert.equal(s.jobQueued(running).length, 1);
      const big = job({ slots: 2 });
      assert.deepEqual(s.jobQueued(big), []);
      // One slot is free, but w is kept for the older 2-slot job: a new 1-slot job waits, as jobQueued would decide.
      const p = s.takeForNew(spec());
      assert.deepEqual(p, { assignments: [] });
      assert.equal(s.queuedCount, 1);
      assert.equal(s.slave('w')!.used, 1);
      assert.equal(s.slave('w')!.reservedFor, big.id);
      // With a job waiting, nothing is tried, even for a higher priority: the caller stores the
      // job queued and jobQueued decides (there it goes ahead of the older one).
      assert.deepEqual(s.takeForNew(spec({ priority: 5 })), { assignments: [] });
      assert.equal(s.queuedCount, 1);
      assert.equal(s.slave('w')!.reservedFor, big.id);
    });

    it('holds nothing and changes nothing while jobs wait, so no kept slave moves (the case the property test found)', () => {
      const all = ['c1', 'c2', 'c3'];
      s.slaveConnected({ name: 'x', channels: all, arches: ['x86_64'], capacity: 4 });
      s.slaveConnected({ name: 'y', channels: all, arches: ['x86_64'], capacity: 4 });
      // Running: 2 slots on x, 4 on y. Waiting: H (4 slots, c1) and S (1 slot, c2), each kept on a slave.
      assert.equal(s.jobQueued(job({ channel: 'c3', slots: 2, priority: 100 })).length, 1);
      assert.equal(s.jobQueued(job({ channel: 'c3', slots: 4, priority: 100 })).length, 1);
      assert.deepEqual(s.jobQueued(job({ channel: 'c1', slots: 4 })), []);
      assert.deepEqual(s.jobQueued(job({ channel: 'c2', slots: 1 })), []);
      const before = ['x', 'y'].map((n) => s.slave(n)!.reservedFor);
      // A new 4-slot job of priority 10 (c3): jobQueued would keep a slave for it and assign
      // nothing. Trying it and taking it back gave S a slot on x, ahead of it.
      const p = s.takeForNew({ channel: 'c3', arch: 'x86_64', slots: 4, priority: 10 });
      assert.deepEqual(p, { assignments: [] });
      assert.deepEqual(['x', 'y'].map((n) => s.slave(n)!.reservedFor), before);
      assert.equal(s.slave('x')!.used, 2);
      assert.equal(s.queuedCount, 2);
    });

    it('counts the slots again if the hold was lost before the job was stored', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const p = s.takeForNew(spec());
      s.holdReleased(p.hold!);
      const j = job();
      s.holdStored(p.hold!, j);
      assert.equal(s.phaseOf(j.id), 'assigned');
      assert.equal(s.slave('w')!.used, 1);
    });
  });

  describe('when the master restarts', () => {
    it('counts the slots of jobs held by a slave before it reconnects, and refuses duplicates', () => {
      s.jobHeld(job({ slots: 3 }), 'w');
      const q = job({ slots: 2 });
      s.jobQueued(q);
      const r = s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
      assert.deepEqual(r, []);
      assert.equal(s.slave('w')!.used, 3);
      assert.throws(() => s.jobQueued(q), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFLICT'));
      const [held] = s.jobsOf('w');
      assert.equal(s.jobFinished(held!).assignments[0]?.jobId, q.id);
    });
  });

  describe('when given bad input', () => {
    it('refuses non-positive slots and capacity', () => {
      assert.throws(() => s.jobQueued(job({ slots: 0 })), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      assert.throws(() => s.slaveConnected({ name: 'w', channels: [], arches: [], capacity: 0 }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      assert.throws(() => new Scheduler({ quarantineAfter: 0 }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    });
  });

  describe('when the head of a class is larger than every usable slave', () => {
    it('keeps a slave for the next large job of the class, which newer small jobs do not pass', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
      const running = s.jobsQueued([job(), job(), job(), job()]).map((a) => a.jobId);
      assert.equal(running.length, 4);
      const huge = job({ slots: 16 });
      const big = job({ slots: 4 });
      s.jobsQueued([huge, big]);
      let passed = 0;
      for (let round = 0; round < 20; round++) {
        s.jobQueued(job());
        for (const a of s.jobFinished(running.shift()!).assignments) {
          if (a.jobId === big.id) {
            assert.ok(passed === 0, `${passed} newer 1-slot jobs passed the 4-slot job`);
            assert.match(s.explain(huge.id), /needs 16 slots; the largest matching slave \(w\) has capacity 4/);
            return;
          }
          passed++;
          running.push(a.jobId);
        }
      }
      assert.fail(`the 4-slot job never ran; ${passed} newer 1-slot jobs passed it (explain: ${s.explain(big.id)})`);
    });

    it('says why a large job waits while the only slave big enough is drained or gone, and runs it there once it is back', () => {
      s.slaveConnected({ name: 'small', channels: ['stable'], arches: ['x86_64'], capacity: 4 });
      s.slaveConnected({ name: 'big', channels: ['stable'], arches: ['x86_64'], capacity: 8, drained: true });
      const j = job({ slots: 8 });
      assert.deepEqual(s.jobQueued(j), []);
      assert.equal(s.explain(j.id), 'needs 8 slots; no matching slave with that many can take it now (big: drained)');
      s.slaveDisconnected('big');
      assert.equal(s.explain(j.id), 'needs 8 slots; no matching slave with that many can take it now (big: disconnected)');
      s.slaveConnected({ name: 'big', channels: ['stable'], arches: ['x86_64'], capacity: 8, drained: false });
      // Undrained and back: it runs there at once.
      assert.equal(s.phaseOf(j.id), 'assigned');
      assert.equal(s.slave('big')!.used, 8);
    });
  });

  describe('when explaining an avoidance', () => {
    it('names the avoided slave only while another slave could take the job', () => {
      s.slaveConnected({ name: 'a', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      const x = job();
      assert.equal(s.jobQueued(x)[0]?.slave, 'a');
      const j = job({ avoid: ['a'] });
      s.jobQueued(j);
      // No other slave: the avoidance does not hold, so it is not given as a reason.
      assert.doesNotMatch(s.explain(j.id), /avoiding/);
      s.slaveConnected({ name: 'b', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      // b took it at once; with b busy too, a queued job avoiding a says so.
      assert.equal(s.phaseOf(j.id), 'assigned');
      const k = job({ avoid: ['a'] });
      s.jobQueued(k);
      assert.match(s.explain(k.id), /avoiding a after a setup failure/);
      assert.doesNotMatch(s.explain(k.id), /avoiding a, b/);
    });
  });

  describe('when a slave known only from restored jobs is updated before it reconnects', () => {
    it('takes the drain without a capacity, and the slave gets nothing when it reconnects drained', () => {
      const held = job();
      s.jobHeld(held, 'w1', 'running');
      assert.deepEqual(s.slaveUpdated('w1', { drained: true }), []);
      assert.equal(s.slave('w1')!.drained, true);
      assert.throws(() => s.slaveUpdated('w1', { capacity: 0 }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      s.jobQueued(job());
      assert.deepEqual(s.slaveConnected({ name: 'w1', channels: ['stable'], arches: ['x86_64'], capacity: 2 }), []);
    });
  });

  describe('when a slave reconnects before its quarantine is stored', () => {
    it('keeps the quarantine decided here over the older row the store gave', () => {
      s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1 });
      let q;
      for (let i = 0; i < 3; i++) {
        const [a] = s.jobQueued(job());
        q = s.jobFinished(a!.jobId, { setupFailure: true }).quarantined;
      }
      assert.ok(q !== undefined);
      s.slaveDisconnected('w');
      assert.deepEqual(s.slaveConnected({ name: 'w', channels: ['stable'], arches: ['x86_64'], capacity: 1, quarantinedUntil: null }), []);
      assert.equal(s.slave('w')!.quarantinedUntil, q.until);
    });
  });
});
