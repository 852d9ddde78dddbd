import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Scheduler, type Assignment, type SchedJob, type SlaveSpec } from '../../../master/scheduler/index.js';

/** Rank used by the dispatcher: priority desc, then seq (= id here) asc. */
const ahead = (a: SchedJob, b: SchedJob): boolean => (a.priority !== b.priority ? a.priority > b.priority : a.id < b.id);
const matches = (j: SchedJob, s: SlaveSpec): boolean => s.channels.includes(j.channel) && (j.arch === 'any' || s.arches.includes(j.arch));

const CHANNELS = ['stable', 'testing', 'nightly'];
const ARCHES = ['x86_64', 'aarch64', 'noarch'];

const slaveArb = fc.record({
  channels: fc.subarray(CHANNELS.slice(0, 2), { minLength: 1 }),
  arches: fc.subarray(ARCHES, { minLength: 1 }),
  capacity: fc.integer({ min: 1, max: 8 }),
});

const jobArb = fc.record({
  channel: fc.constantFrom(...CHANNELS),
  arch: fc.constantFrom(...ARCHES, 'any', 'riscv64'),
  slots: fc.integer({ min: 1, max: 8 }),
  priority: fc.integer({ min: 0, max: 3 }),
});

type Cmd =
  | { t: 'job'; job: { channel: string; arch: string; slots: number; priority: number } }
  | { t: 'finish'; pick: number }
  | { t: 'disconnect'; slave: number }
  | { t: 'connect'; slave: number }
  | { t: 'drain'; slave: number; drained: boolean }
  | { t: 'capacity'; slave: number; capacity: number };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: jobArb.map((job) => ({ t: 'job' as const, job })) },
  { weight: 5, arbitrary: fc.nat().map((pick) => ({ t: 'finish' as const, pick })) },
  { weight: 1, arbitrary: fc.nat({ max: 9 }).map((slave) => ({ t: 'disconnect' as const, slave })) },
  { weight: 1, arbitrary: fc.nat({ max: 9 }).map((slave) => ({ t: 'connect' as const, slave })) },
  { weight: 1, arbitrary: fc.record({ slave: fc.nat({ max: 9 }), drained: fc.boolean() }).map((r) => ({ t: 'drain' as const, ...r })) },
  { weight: 1, arbitrary: fc.record({ slave: fc.nat({ max: 9 }), capacity: fc.integer({ min: 1, max: 8 }) }).map((r) => ({ t: 'capacity' as const, ...r })) },
);

/**
 * An independent model of the farm that checks each assignment list the dispatcher returns,
 * in order, against the state before it.
 */
class Model {
  readonly queued = new Map<number, SchedJob>();
  readonly running = new Map<number, { job: SchedJob; slave: string }>();
  readonly used = new Map<string, number>();
  readonly connected = new Set<string>();
  readonly drained = new Set<string>();
  readonly specs = new Map<string, SlaveSpec>();

  usable(name: string): boolean {
    return this.connected.has(name) && !this.drained.has(name);
  }

  free(name: string): number {
    return Math.max(0, this.specs.get(name)!.capacity - (this.used.get(name) ?? 0));
  }

  apply(as: readonly Assignment[]): void {
    for (const a of as) {
      const job = this.queued.get(a.jobId);
      assert.ok(job, `job ${a.jobId} assigned but not queued`);
      const spec = this.specs.get(a.slave)!;
      // Only matching slaves.
      assert.ok(matches(job, spec), `job ${job.id} (${job.channel}/${job.arch}) went to ${a.slave} (${spec.channels.join(',')}/${spec.arches.join(',')})`);
      assert.ok(this.usable(a.slave), `job ${job.id} went to unusable slave ${a.slave}`);
      // Never over capacity.
      assert.ok(job.slots <= this.free(a.slave), `job ${job.id} needs ${job.slots} but ${a.slave} has ${this.free(a.slave)} free`);
      // Priority order: nothing that ranks ahead and fits this slave was passed over.
      for (const k of this.queued.values()) {
        if (k !== job && matches(k, spec) && k.slots <= this.free(a.slave) && ahead(k, job)) {
          assert.fail(`job ${job.id} (p${job.priority}) went to ${a.slave} ahead of job ${k.id} (p${k.priority}) which fits there too`);
        }
      }
      this.queued.delete(a.jobId);
      this.running.set(a.jobId, { job, slave: a.slave });
      this.used.set(a.slave, (this.used.get(a.slave) ?? 0) + job.slots);
    }
  }

  finish(jobId: number): void {
    const r = this.running.get(jobId)!;
    this.running.delete(jobId);
    this.used.set(r.slave, this.used.get(r.slave)! - r.job.slots);
  }

  /** At rest, a queued job that fits a usable slave is held back only by that slave's reservation for a job ranked ahead of it. */
  checkAtRest(s: Scheduler): void {
    for (const [name, spec] of this.specs) {
      const view = s.slave(name)!;
      assert.equal(view.used, this.used.get(name) ?? 0, `used slots of ${name}`);
      if (!this.usable(name)) continue;
      for (const k of this.queued.values()) {
        if (!matches(k, spec) || k.slots > this.free(name)) continue;
        const r = view.reservedFor === null ? undefined : this.queued.get(view.reservedFor);
        assert.ok(r !== undefined && r !== k && ahead(r, k), `job ${k.id} fits idle slave ${name} (free ${this.free(name)}) but was not dispatched (reserved for ${String(view.reservedFor)})`);
      }
    }
  }
}

describe('master/scheduler properties', () => {
  describe('when random jobs and slaves come and go', () => {
    it('sends jobs only to matching, usable slaves, never over capacity, in priority order, and leaves no fitting job idle', () => {
      fc.assert(
        fc.property(fc.array(slaveArb, { minLength: 1, maxLength: 5 }), fc.array(cmdArb, { minLength: 30, maxLength: 150 }), (slaveDefs, cmds) => {
          const s = new Scheduler({ now: () => 0 });
          const m = new Model();
          const name = (i: number) => `s${i % slaveDefs.length}`;
          slaveDefs.forEach((d, i) => {
            const spec: SlaveSpec = { name: `s${i}`, ...d };
            m.specs.set(spec.name, spec);
            m.connected.add(spec.name);
            m.apply(s.slaveConnected(spec));
            m.checkAtRest(s);
          });
          let nextId = 1;
          for (const c of cmds) {
            switch (c.t) {
              case 'job': {
                const job: SchedJob = { id: nextId++, ...c.job };
                m.queued.set(job.id, job);
                m.apply(s.jobQueued(job));
                break;
              }
              case 'finish': {
                const ids = [...m.running.keys()];
                if (ids.length === 0) continue;
                const id = ids[c.pick % ids.length]!;
                m.finish(id);
                m.apply(s.jobFinished(id).assignments);
                break;
              }
              case 'disconnect':
                m.connected.delete(name(c.slave));
                m.apply(s.slaveDisconnected(name(c.slave)));
                break;
              case 'connect':
                m.connected.add(name(c.slave));
                m.apply(s.slaveConnected(m.specs.get(name(c.slave))!));
                break;
              case 'drain':
                if (c.drained) m.drained.add(name(c.slave));
                else m.drained.delete(name(c.slave));
                m.apply(s.slaveUpdated(name(c.slave), { drained: c.drained }));
                break;
              case 'capacity': {
                const spec = { ...m.specs.get(name(c.slave))!, capacity: c.capacity };
                m.specs.set(spec.name, spec);
                m.apply(s.slaveUpdated(spec.name, { capacity: c.capacity }));
                break;
              }
            }
            // A capacity cut may leave a slave over its new capacity; it only gets new work once under it.
            m.checkAtRest(s);
            assert.equal(s.queuedCount, m.queued.size);
          }
        }),
        { numRuns: 300 },
      );
    });
  });

  describe('when new jobs are placed before they are stored (takeForNew, then holdStored)', () => {
    it('decides exactly as jobQueued after the store: same slave, same other assignments, same state after', () => {
      const key = (as: readonly Assignment[]) => as.map((a) => `${a.jobId}>${a.slave}/${a.slots}`).sort();
      fc.assert(
        fc.property(fc.array(slaveArb, { minLength: 1, maxLength: 5 }), fc.array(cmdArb, { minLength: 30, maxLength: 150 }), (slaveDefs, cmds) => {
          // a: the old path (store queued, then jobQueued); b: the new one (hold, store dispatched, holdStored).
          const a = new Scheduler({ now: () => 0 });
          const b = new Scheduler({ now: () => 0 });
          const name = (i: number) => `s${i % slaveDefs.length}`;
          const specs = slaveDefs.map((d, i): SlaveSpec => ({ name: `s${i}`, ...d }));
          const same = (x: readonly Assignment[], y: readonly Assignment[], what: string) => assert.deepEqual(key(y), key(x), what);
          for (const spec of specs) same(a.slaveConnected(spec), b.slaveConnected(spec), `connect ${spec.name}`);
          const running: number[] = [];
          const track = (as: readonly Assignment[]) => running.push(...as.map((x) => x.jobId));
          let nextId = 1;
          for (const c of cmds) {
            let ra: Assignment[];
            let rb: Assignment[];
            switch (c.t) {
              case 'job': {
                const job: SchedJob = { id: nextId++, ...c.job };
                ra = a.jobQueued(job);
                const p = b.takeForNew(c.job);
                if (p.hold !== undefined) {
                  b.holdStored(p.hold, job);
                  rb = [...p.assignments, { jobId: job.id, slave: p.hold.slave, slots: p.hold.slots }];
                } else rb = [...p.assignments, ...b.jobQueued(job)];
                break;
              }
              case 'finish': {
                if (running.length === 0) continue;
                const id = running.splice(c.pick % running.length, 1)[0]!;
                ra = a.jobFinished(id).assignments;
                rb = b.jobFinished(id).assignments;
                break;
              }
              case 'disconnect':
                ra = a.slaveDisconnected(name(c.slave));
                rb = b.slaveDisconnected(name(c.slave));
                break;
              case 'connect':
                ra = a.slaveConnected(specs[c.slave % specs.length]!);
                rb = b.slaveConnected(specs[c.slave % specs.length]!);
                break;
              case 'drain':
                ra = a.slaveUpdated(name(c.slave), { drained: c.drained });
                rb = b.slaveUpdated(name(c.slave), { drained: c.drained });
                break;
              case 'capacity':
                ra = a.slaveUpdated(name(c.slave), { capacity: c.capacity });
                rb = b.slaveUpdated(name(c.slave), { capacity: c.capacity });
                break;
            }
            same(ra, rb, JSON.stringify(c));
            track(ra);
            assert.equal(b.queuedCount, a.queuedCount);
            for (const spec of specs) {
              const va = a.slave(spec.name)!;
              const vb = b.slave(spec.name)!;
              assert.deepEqual([vb.used, [...vb.jobs].sort(), vb.reservedFor], [va.used, [...va.jobs].sort(), va.reservedFor], `slave ${spec.name} after ${JSON.stringify(c)}`);
            }
          }
        }),
        { numRuns: 300 },
      );
    });
  });

  describe('when slaves fail jobs in setup at random', () => {
    it('quarantines after N in a row, sends nothing to a quarantined slave, and a failed job avoids its slave when another can take it', () => {
      const N = 3;
      const Q_MS = 1_000;
      fc.assert(
        fc.property(
          fc.array(slaveArb, { minLength: 1, maxLength: 4 }),
          fc.array(
            fc.oneof(
              { weight: 4, arbitrary: jobArb.map((job) => ({ t: 'job' as const, job })) },
              { weight: 4, arbitrary: fc.record({ pick: fc.nat(), setup: fc.boolean() }).map((r) => ({ t: 'end' as const, ...r })) },
              { weight: 1, arbitrary: fc.integer({ min: 1, max: 1_500 }).map((ms) => ({ t: 'time' as const, ms })) },
            ),
            { minLength: 30, maxLength: 150 },
          ),
          (slaveDefs, cmds) => {
            let now = 0;
            const s = new Scheduler({ now: () => now, quarantineAfter: N, quarantineMs: Q_MS, acceptTimeoutMs: 1e9 });
            const specs = slaveDefs.map((d, i): SlaveSpec => ({ name: `s${i}`, ...d }));
            const fails = new Map<string, number>();
            const quarantinedUntil = new Map<string, number>();
            const running = new Map<number, { job: SchedJob; slave: string }>();
            const queued = new Map<number, SchedJob>();
            const avoid = new Map<number, string>();
            const used = new Map<string, number>();
            const check = (as: readonly Assignment[]) => {
              for (const a of as) {
                const job = queued.get(a.jobId)!;
                const spec = specs.find((x) => x.name === a.slave)!;
                assert.ok(matches(job, spec));
                assert.ok((quarantinedUntil.get(a.slave) ?? 0) <= now, `job ${job.id} went to quarantined ${a.slave}`);
                assert.ok((used.get(a.slave) ?? 0) + job.slots <= spec.capacity, 'over capacity');
                const bad = avoid.get(job.id);
                if (bad === a.slave) {
                  const other = specs.some((x) => x.name !== bad && matches(job, x) && x.capacity >= job.slots && (quarantinedUntil.get(x.name) ?? 0) <= now);
                  assert.ok(!other, `job ${job.id} went back to ${bad} where it failed in setup although another slave could take it`);
                }
                avoid.delete(job.id);
                queued.delete(job.id);
                running.set(job.id, { job, slave: a.slave });
                used.set(a.slave, (used.get(a.slave) ?? 0) + job.slots);
              }
            };
            for (const spec of specs) check(s.slaveConnected(spec));
            let id = 1;
            for (const c of cmds) {
              if (c.t === 'job') {
                const job: SchedJob = { id: id++, ...c.job };
                queued.set(job.id, job);
                check(s.jobQueued(job));
              } else if (c.t === 'end') {
                const ids = [...running.keys()];
                if (ids.length === 0) continue;
                const jid = ids[c.pick % ids.length]!;
                const { job, slave } = running.get(jid)!;
                running.delete(jid);
                used.set(slave, used.get(slave)! - job.slots);
                const r = s.jobFinished(jid, { setupFailure: c.setup });
                let expectQ = false;
                if (c.setup) {
                  const n = (fails.get(slave) ?? 0) + 1;
                  fails.set(slave, n === N ? 0 : n);
                  expectQ = n === N;
                  if (expectQ) quarantinedUntil.set(slave, now + Q_MS);
                } else fails.set(slave, 0);
                assert.deepEqual(r.quarantined, expectQ ? { slave, until: now + Q_MS } : undefined);
                check(r.assignments);
                if (c.setup) {
                  // The job comes back for another attempt, avoiding that slave.
                  queued.set(jid, job);
                  avoid.set(jid, slave);
                  check(s.jobQueued(job));
                }
              } else {
                now += c.ms;
                const t = s.tick();
                assert.deepEqual(t.expired, []);
                check(t.assignments);
              }
            }
          },
        ),
        { numRuns: 200 },
      );
    });
  });

  describe('when a large job waits behind an endless stream of small ones', () => {
    it('runs the large job as soon as the jobs running on the slave kept for it have ended, whatever the completion order', () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 2, max: 8 }), { minLength: 1, maxLength: 4 }),
          fc.integer({ min: 0, max: 2 }),
          fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 50, maxLength: 200 }),
          fc.array(fc.nat(), { minLength: 200, maxLength: 200 }),
          (caps, bigPrio, smallSlots, finishPicks) => {
            const s = new Scheduler({ now: () => 0 });
            const maxCap = Math.max(...caps);
            const running: number[] = [];
            caps.forEach((capacity, i) => {
              for (const a of s.slaveConnected({ name: `s${i}`, channels: ['c'], arches: ['x86_64'], capacity })) running.push(a.jobId);
            });
            let id = 1;
            const feed = (slots: number, priority: number) => {
              for (const a of s.jobQueued({ id: id++, channel: 'c', arch: 'x86_64', slots, priority })) running.push(a.jobId);
            };
            // Fill the farm (and some queue) with small jobs first, then the large one.
            for (let i = 0; i < maxCap * caps.length; i++) feed(1, bigPrio);
            const bigId = id;
            feed(maxCap, bigPrio);
            let kept: Set<number> | undefined;
            const started = () => running.includes(bigId);
            const watch = () => {
              if (kept !== undefined || started()) return;
              for (let i = 0; i < caps.length; i++) {
                const v = s.slave(`s${i}`)!;
                if (v.reservedFor === bigId) kept = new Set(v.jobs);
              }
            };
            watch();
            // From here on only small jobs of equal or lower priority arrive, and running jobs end in a random order.
            for (let step = 0; !started() && step < smallSlots.length && running.length > 0; step++) {
              feed(smallSlots[step]!, bigPrio - (step % 2));
              const [done] = running.splice(finishPicks[step]! % running.length, 1);
              for (const a of s.jobFinished(done!).assignments) running.push(a.jobId);
              kept?.delete(done!);
              watch();
              if (kept !== undefined && kept.size === 0) assert.ok(started(), `the jobs on the slave kept for job ${bigId} have ended but it did not start: ${s.explain(bigId)}`);
            }
            // If it has not started, it is waiting on its kept slave, whose jobs are all older than it.
            if (!started()) assert.ok(kept !== undefined && kept.size > 0, `job ${bigId} waits without a kept slave: ${s.explain(bigId)}`);
          },
        ),
        { numRuns: 200 },
      );
    });

    it('runs the large job once the jobs that were running when it arrived have ended (oldest-first completion)', () => {
      fc.assert(
        fc.property(fc.array(fc.integer({ min: 2, max: 6 }), { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 100, maxLength: 100 }), (caps, smalls) => {
          const s = new Scheduler({ now: () => 0 });
          const running: number[] = [];
          caps.forEach((capacity, i) => s.slaveConnected({ name: `s${i}`, channels: ['c'], arches: ['x86_64'], capacity }));
          let id = 1;
          const feed = (slots: number) => {
            for (const a of s.jobQueued({ id: id++, channel: 'c', arch: 'x86_64', slots, priority: 0 })) running.push(a.jobId);
          };
          const total = caps.reduce((a, b) => a + b, 0);
          for (let i = 0; i < total; i++) feed(1);
          const bigId = id;
          const need = Math.max(...caps);
          feed(need);
          const before = running.length;
          let completions = 0;
          for (const n of smalls) {
            if (running.includes(bigId)) break;
            feed(n);
            const done = running.shift()!;
            completions++;
            for (const a of s.jobFinished(done).assignments) running.push(a.jobId);
          }
          assert.ok(running.includes(bigId), `big job never started: ${s.explain(bigId)}`);
          assert.ok(completions <= before, `big job started after ${completions} completions; ${before} were running when it arrived`);
        }),
        { numRuns: 200 },
      );
    });
  });
});
