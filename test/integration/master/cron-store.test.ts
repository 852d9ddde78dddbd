import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CronRunner, type CronTimers } from '../../../master/cron/index.js';
import { MasterStore, type Job } from '../../../master/store/index.js';

/** Timers that never go off by themselves: the test calls `due()` to run what is due at the fake time. */
class ManualTimers implements CronTimers {
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  private seq = 0;
  constructor(private readonly now: () => number) {}
  setTimeout(fn: () => void, ms: number): unknown {
    this.pending.set(++this.seq, { at: this.now() + ms, fn });
    return this.seq;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }
  due(): void {
    for (const [id, t] of [...this.pending]) {
      if (t.at <= this.now()) {
        this.pending.delete(id);
        t.fn();
      }
    }
  }
}

describe('master/cron with the SQLite store', () => {
  let dir: string;
  const open: Array<MasterStore | CronRunner> = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'builder-cron-'));
  });
  afterEach(async () => {
    for (const x of open.splice(0).reverse()) {
      if (x instanceof CronRunner) await x.stop();
      else await x.close();
    }
    await rm(dir, { recursive: true, force: true });
  });

  describe('when the master is down over several ticks and restarts', () => {
    it('creates exactly one job for the missed ticks, durably, and goes on from now', async () => {
      let t = Date.parse('2026-05-01T10:00:30Z');
      const now = () => t;
      const fired: Job[] = [];
      const store1 = await MasterStore.open({ dir, now });
      open.push(store1);
      const timers1 = new ManualTimers(now);
      const r1 = new CronRunner(store1, (j) => fired.push(j), { now, timers: timers1 });
      open.push(r1);
      await r1.start();
      await r1.add({ id: 'every-minute', cron: '* * * * *', template: { name: 'tick', channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } } });
      t = Date.parse('2026-05-01T10:01:00Z');
      timers1.due();
      await r1.idle();
      assert.equal(fired.length, 1);
      // Master goes down (store closed without the runner doing anything more).
      await r1.stop();
      await store1.close();
      open.length = 0;

      t = Date.parse('2026-05-01T10:17:10Z'); // 16 ticks missed
      const store2 = await MasterStore.open({ dir, now });
      open.push(store2);
      const r2 = new CronRunner(store2, (j) => fired.push(j), { now, timers: new ManualTimers(now) });
      open.push(r2);
      await r2.start();
      assert.equal(fired.length, 2);
      const jobs = await store2.listJobs();
      assert.deepEqual(jobs.map((j) => [j.scheduleId, j.state]), [['every-minute', 'queued'], ['every-minute', 'queued']]);
      const s = (await store2.getSchedule('every-minute'))!;
      assert.equal(new Date(s.lastFiredAt!).toISOString(), '2026-05-01T10:17:10.000Z');
      assert.equal(new Date(s.nextFireAt!).toISOString(), '2026-05-01T10:18:00.000Z');
      // A second start (say, a crash right after the fire committed) does not fire again.
      const r3 = new CronRunner(store2, (j) => fired.push(j), { now, timers: new ManualTimers(now) });
      open.push(r3);
      await r3.start();
      assert.equal(fired.length, 2);
      assert.equal((await store2.listJobs()).length, 2);
    });
  });
});
