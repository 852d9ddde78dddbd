import assert from 'node:assert/strict';
import type { CronTimers } from '../../../master/cron/index.js';
import type { Job } from '../../../master/store/index.js';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, writeLock } from './helpers.js';

/** Cron timers that go off only when the test says so. */
class ManualTimers implements CronTimers {
  private readonly pending = new Set<{ fn: () => void }>();
  setTimeout(fn: () => void): unknown {
    const h = { fn };
    this.pending.add(h);
    return h;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as { fn: () => void });
  }
  /** Runs the armed timer (the runner arms one at a time); the runner fires what is due at the fake time. */
  goOff(): void {
    const [h] = this.pending;
    assert.ok(h !== undefined, 'the cron runner armed no timer');
    this.pending.delete(h);
    h.fn();
  }
}

/** One turn of the event loop: every microtask queued so far has run (a write queued by it is in the write queue). */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('master jobs: a submit while another job is being stored queued', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let slave: TestSlave;
  let t: number;
  let timers: ManualTimers;

  beforeEach(async function () {
    t = Date.parse('2026-06-01T10:00:30Z');
    timers = new ManualTimers();
    ({ farm, client } = await jobFarm({ cron: { now: () => t, timers } }));
    slave = await TestSlave.enroll(farm, 'w1');
    await slave.connect();
    // One slot: whoever the dispatcher gives it to, the other job waits.
    await slave.subscribe({ capacity: 1 });
  });
  afterEach(async function () {
    await farm.close();
  });

  /**
   * Finishes the job holding the slot and checks that the other one gets it next: both run,
   * one after the other.
   */
  async function runBoth(first: number, second: number): Promise<void> {
    const a = await slave.nextAssign(first);
    await slave.finish(first, a.attempt);
    await slave.nextAssign(second);
    assert.deepEqual(slave.assigned.map((x) => x.jobId), [first, second]);
  }

  describe('when a cron fire is being committed', function () {
    /**
     * A schedule of priority `cronPriority` fires while the write lock is held; a submit of
     * `submitPriority` comes in during that commit, with the farm's one slot free.
     */
    async function fireThenSubmit(cronPriority: number, submitPriority: number): Promise<{ fired: number; late: Job }> {
      const { schedule } = await client.call('schedule.create', { cron: '* * * * *', template: job({ name: 'nightly', priority: cronPriority }) });
      t = schedule.nextFireAt!;
      const store = farm.master.jobs.store;
      const lock = await writeLock(store.options.file);
      let late: Promise<Job>;
      try {
        timers.goOff();
        await turn();
        // The fire is under way, its write waits for the lock: no job yet, the slot still free.
        assert.deepEqual(await store.listJobs({}), []);
        assert.equal(farm.master.jobs.sched.slave('w1')!.free, 1);
        late = farm.master.jobs.submit(job({ name: 'late', priority: submitPriority }), 'alice');
        // Past the dispatcher's decision: its write is queued behind the fire's.
        await turn();
      } finally {
        await lock.release();
      }
      const l = await late;
      await farm.master.jobs.schedules.idle();
      const fired = (await store.getSchedule(schedule.id))!.lastJobId;
      assert.ok(fired !== null, 'the schedule fired');
      assert.ok(fired < l.id, 'the fire was stored first');
      return { fired, late: l };
    }

    it('a submit of lower priority does not take the free slot in one commit: it queues, and the fired job runs first', async function () {
      const { fired, late } = await fireThenSubmit(5, 0);
      assert.deepEqual([late.state, late.slave], ['queued', null]);
      await runBoth(fired, late.id);
    });

    it('a submit of the same priority queues too: the older job (the fired one) runs first', async function () {
      const { fired, late } = await fireThenSubmit(3, 3);
      assert.equal(late.state, 'queued');
      await runBoth(fired, late.id);
    });

    it('a submit of higher priority still takes the free slot in one commit, and the fired job waits', async function () {
      const { fired, late } = await fireThenSubmit(0, 5);
      assert.deepEqual([late.state, late.slave], ['dispatched', 'w1']);
      assert.equal((await farm.master.jobs.store.getJob(fired))!.state, 'queued');
      await runBoth(late.id, fired);
    });
  });

  describe('when another submit is being stored queued', function () {
    /**
     * A submit of `firstPriority` finds no slot (the slave is draining itself) and is being
     * stored queued while the write lock is held; the slave takes jobs again; a second submit
     * of `secondPriority` comes in during the first one's commit.
     */
    async function submitThenSubmit(firstPriority: number, secondPriority: number): Promise<{ first: Job; second: Job }> {
      await slave.peer.call('slave.draining', { draining: true });
      const svc = farm.master.jobs;
      const lock = await writeLock(svc.store.options.file);
      let first: Promise<Job>;
      let second: Promise<Job>;
      try {
        first = svc.submit(job({ name: 'first', priority: firstPriority }), 'alice');
        await turn();
        // Undraining reads the store only: it is not held up by the lock.
        await slave.peer.call('slave.draining', { draining: false });
        assert.equal(svc.sched.slave('w1')!.free, 1);
        second = svc.submit(job({ name: 'second', priority: secondPriority }), 'bob');
        await turn();
      } finally {
        await lock.release();
      }
      const f = await first;
      assert.equal(f.state, 'queued');
      return { first: f, second: await second };
    }

    it('a submit of no higher priority queues behind it', async function () {
      const { first, second } = await submitThenSubmit(5, 5);
      assert.equal(second.state, 'queued');
      await runBoth(first.id, second.id);
    });

    it('a submit of higher priority still takes the free slot in one commit', async function () {
      const { first, second } = await submitThenSubmit(0, 9);
      assert.deepEqual([second.state, second.slave], ['dispatched', 'w1']);
      await runBoth(second.id, first.id);
    });
  });

  describe('when a job is being requeued', function () {
    it('a submit of lower priority does not take the free slot the requeued job waits for: it queues, and the requeued job runs first', async function () {
      const svc = farm.master.jobs;
      const w2 = await TestSlave.enroll(farm, 'w2');
      await w2.connect();
      await w2.subscribe({ capacity: 1 });
      const first = await svc.submit(job({ name: 'first', priority: 5 }), 'alice');
      assert.equal(first.state, 'dispatched');
      const [on, other] = first.slave === 'w1' ? [slave, w2] : [w2, slave];
      const a = await on.nextAssign(first.id);
      await on.until(() => svc.sched.slave(on.name)!.free === 0 && svc.sched.slave(other.name)!.free === 1, 'the first job running');
      // Its start committed too: a report that comes while the start is being committed waits
      // for that write, which the lock below would hold up.
      for (let t0 = Date.now(); (await svc.store.getJob(first.id))!.state !== 'running'; ) {
        if (Date.now() - t0 > 10_000) throw new Error('the first job was not stored running');
        await new Promise((r) => setTimeout(r, 5));
      }
      const lock = await writeLock(svc.store.options.file);
      let late: Promise<Job>;
      let reported: Promise<unknown>;
      try {
        // A setup failure on its slave: the job is requeued (attempt 2) and avoids that slave, so
        // the other slave's free slot is the one it waits for. Its requeue waits for the lock.
        reported = on.finish(first.id, a.attempt, { state: 'failed', exitCode: null, reason: 'work dir cannot be made', setupFailure: true });
        await on.until(() => svc.storingQueuedJobs > 0, 'the requeue under way');
        assert.equal(svc.sched.slave(other.name)!.free, 1);
        late = svc.submit(job({ name: 'late', priority: 0 }), 'bob');
        await turn();
      } finally {
        await lock.release();
      }
      const l = await late;
      await reported;
      assert.deepEqual([l.state, l.slave], ['queued', null]);
      const again = await other.nextAssign(first.id);
      assert.equal(again.attempt, 2);
      // The late job takes the slot the requeued one avoids.
      await on.nextAssign(l.id);
      assert.equal(svc.storingQueuedJobs, 0);
    });
  });
});
