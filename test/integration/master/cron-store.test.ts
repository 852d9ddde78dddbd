import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CronRunner, type CronTimers } from '../../../master/cron/index.js';
import { MasterStore, type Job, type NewJob } from '../../../master/store/index.js';

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
  /** The earliest pending timer, if any. */
  get nextAt(): number | undefined {
    let at: number | undefined;
    for (const t of this.pending.values()) if (at === undefined || t.at < at) at = t.at;
    return at;
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

const template: NewJob = { name: 'tick', channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } };
const iso = (t: number) => new Date(t).toISOString();

/** Runs every timer up to `until` in time order, letting the runner settle after each. */
async function runUntil(t: { v: number }, timers: ManualTimers, r: CronRunner, until: number): Promise<void> {
  for (let i = 0; i < 1_000_000; i++) {
    const at = timers.nextAt;
    if (at === undefined || at > until) break;
    t.v = Math.max(t.v, at);
    timers.due();
    await r.idle();
  }
  t.v = until;
}

describe('master/cron with the SQLite store', function () {
  this.timeout(60_000);
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

  /** A store and a started runner on manual timers, the clock at `at` (move it with `t.v`); what fires and fails is collected. */
  async function runnerAt(at: string) {
    const t = { v: Date.parse(at) };
    const now = (): number => t.v;
    const store = await MasterStore.open({ dir, now });
    open.push(store);
    const timers = new ManualTimers(now);
    const fired: Job[] = [];
    const errors: string[] = [];
    const r = new CronRunner(store, (j) => fired.push(j), { now, timers, onError: (e) => errors.push((e as Error).message) });
    open.push(r);
    await r.start();
    return { t, now, store, timers, fired, errors, r };
  }

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

  describe('when a time zone changes its clock by 30 or 45 minutes', () => {
    it('Pacific/Chatham */15 at the end of DST: one tick makes one job, and the next time is after now', async () => {
      const { t, store, timers, fired, r } = await runnerAt('2026-04-04T12:50:00Z');
      const s = await r.add({ id: 'chatham', cron: '*/15 * * * *', tz: 'Pacific/Chatham', template });
      assert.equal(iso(s.nextFireAt!), '2026-04-04T13:00:00.000Z');
      t.v = Date.parse('2026-04-04T13:00:00Z');
      // The clock stands still: cron-parser's next time (12:15Z) was due at once, and fired again and again.
      for (let i = 0; i < 20; i++) {
        timers.due();
        await r.idle();
      }
      assert.equal(fired.length, 1);
      assert.equal(iso((await store.getSchedule('chatham'))!.nextFireAt!), '2026-04-04T13:15:00.000Z'); // 03:00 +13:45
      await runUntil(t, timers, r, Date.parse('2026-04-04T15:30:00Z'));
      // 03:45 +13:45 is 02:45 +12:45 (14:00Z): the local times 02:45..03:30 come twice and fire once.
      assert.deepEqual(
        fired.map((j) => iso(j.createdAt).slice(11, 16)),
        ['13:00', '13:15', '13:30', '13:45', '15:00', '15:15', '15:30'],
      );
    });

    it('Australia/Lord_Howe 0 3 * * * on the day DST ends: fires at 03:00 local on both days, not 22.5 h late', async () => {
      const { t, store, timers, fired, errors, r } = await runnerAt('2026-04-03T15:30:00Z');
      const s = await r.add({ id: 'lhi', cron: '0 3 * * *', tz: 'Australia/Lord_Howe', template });
      assert.equal(iso(s.nextFireAt!), '2026-04-03T16:00:00.000Z'); // 03:00 +11:00 on 4 April
      await runUntil(t, timers, r, Date.parse('2026-04-03T16:02:00Z'));
      assert.deepEqual({ jobs: fired.length, errors }, { jobs: 1, errors: [] });
      // cron-parser throws "loop limit exceeded" for every start up to 14:30Z the next day.
      assert.equal(iso((await store.getSchedule('lhi'))!.nextFireAt!), '2026-04-04T16:30:00.000Z'); // 03:00 +10:30 on 5 April
      await runUntil(t, timers, r, Date.parse('2026-04-05T16:30:00Z'));
      assert.deepEqual(fired.map((j) => iso(j.createdAt)), ['2026-04-03T16:00:00.000Z', '2026-04-04T16:30:00.000Z', '2026-04-05T16:30:00.000Z']);
      assert.deepEqual(errors, []);
    });
  });

  describe('when an expression uses H (hashed)', () => {
    it('draws its values once per schedule: H H * * * fires once a day, at the same time', async () => {
      const { t, now, store, timers, fired, r } = await runnerAt('2026-05-01T00:00:30Z');
      const s = await r.add({ id: 'daily-3f2a9c1e', cron: 'H H * * *', template });
      await runUntil(t, timers, r, Date.parse('2026-05-31T00:00:30Z'));
      assert.equal(fired.length, 30);
      const times = new Set(fired.map((j) => iso(j.createdAt).slice(11)));
      assert.deepEqual([...times], [iso(s.nextFireAt!).slice(11)]);
      // The same id draws the same time after a restart (and on another master).
      const r2 = new CronRunner(store, () => undefined, { now, timers: new ManualTimers(now) });
      open.push(r2);
      await r2.start();
      await r2.pause('daily-3f2a9c1e');
      assert.equal(iso((await r2.resume('daily-3f2a9c1e')).nextFireAt!).slice(11), [...times][0]);
    });
  });

  describe('when a template no longer validates at fire time', () => {
    it('stores the error on the schedule, tries again at its next tick (not every retryMs), and clears it once a fire succeeds', async () => {
      const t = { v: Date.parse('2026-05-01T10:00:30Z') };
      const now = () => t.v;
      const s1 = await MasterStore.open({ dir, now });
      await s1.createSchedule({ id: 'big', cron: '0 * * * *', tz: 'UTC', template: { ...template, slots: 8 }, nextFireAt: Date.parse('2026-05-01T11:00:00Z') });
      await s1.close();
      const store = await MasterStore.open({ dir, now, maxSlots: 4 }); // restarted with a lower limit
      const timers = new ManualTimers(now);
      const errors: string[] = [];
      const r = new CronRunner(store, () => undefined, { now, timers, onError: (e) => errors.push((e as Error).message) });
      await r.start();
      await runUntil(t, timers, r, Date.parse('2026-05-01T13:30:00Z'));
      // Three ticks, three tries (every 30 s it was 300).
      assert.deepEqual(errors, ['slots must be an integer in 1..4', 'slots must be an integer in 1..4', 'slots must be an integer in 1..4']);
      const s = (await r.list())[0]!;
      assert.deepEqual([s.lastError, iso(s.lastErrorAt!), iso(s.nextFireAt!), s.lastFiredAt], ['slots must be an integer in 1..4', '2026-05-01T13:00:00.000Z', '2026-05-01T14:00:00.000Z', null]);
      await r.stop();
      await store.close();
      // Restarted with room for it again: the next tick fires, and the error is gone.
      const fixed = await MasterStore.open({ dir, now });
      open.push(fixed);
      const timers2 = new ManualTimers(now);
      const fired: Job[] = [];
      const r2 = new CronRunner(fixed, (j) => fired.push(j), { now, timers: timers2 });
      open.push(r2);
      await r2.start();
      await runUntil(t, timers2, r2, Date.parse('2026-05-01T14:00:00Z'));
      assert.equal(fired.length, 1);
      const after = (await r2.list())[0]!;
      assert.deepEqual([after.lastError, after.lastErrorAt, iso(after.lastFiredAt!)], [undefined, undefined, '2026-05-01T14:00:00.000Z']);
    });
  });
});
