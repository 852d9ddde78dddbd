import assert from 'node:assert/strict';
import { isBuilderError } from '../../../protocol/errors.js';
import { CronRunner, checkCronExpression, type CronStore, type CronTimers } from '../../../master/cron/index.js';
import type { FireResult, Job, NewJob, NewSchedule, Schedule } from '../../../master/store/index.js';

/** Fake time: timers run only when the test advances the clock. */
class FakeTime implements CronTimers {
  t: number;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  constructor(start: string) {
    this.t = Date.parse(start);
  }
  now = (): number => this.t;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }
  /** Moves the clock to `iso`, running each timer at its time and letting the runner settle. */
  async advanceTo(iso: string, runner: CronRunner): Promise<void> {
    const target = Date.parse(iso);
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.pending) if (e[1].at <= target && (next === undefined || e[1].at < next[1].at)) next = e;
      if (next === undefined) break;
      this.pending.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await runner.idle();
    }
    this.t = target;
  }
}

/** An in-memory CronStore with the same compare-and-set contract as MasterStore.fireSchedule. */
class MemStore implements CronStore {
  readonly schedules = new Map<string, Schedule>();
  readonly jobs: Job[] = [];
  failNext = 0;
  /** fireSchedule calls so far (made, whether they succeeded or not). */
  fireCalls = 0;
  async listSchedules(): Promise<Schedule[]> {
    return [...this.schedules.values()].map((s) => ({ ...s }));
  }
  async getSchedule(id: string): Promise<Schedule | undefined> {
    const s = this.schedules.get(id);
    return s && { ...s };
  }
  async createSchedule(n: NewSchedule): Promise<Schedule> {
    const s: Schedule = { id: n.id, cron: n.cron, tz: n.tz, template: n.template, paused: n.paused ?? false, nextFireAt: n.nextFireAt, lastFiredAt: null, lastJobId: null, createdAt: 0 };
    this.schedules.set(s.id, s);
    return { ...s };
  }
  async setSchedulePaused(id: string, paused: boolean, nextFireAt: number | null): Promise<Schedule | undefined> {
    const s = this.schedules.get(id);
    if (!s) return undefined;
    s.paused = paused;
    s.nextFireAt = paused ? null : nextFireAt;
    return { ...s };
  }
  async removeSchedule(id: string): Promise<boolean> {
    return this.schedules.delete(id);
  }
  async fireSchedule(id: string, expected: number, next: number, firedAt: number): Promise<FireResult> {
    this.fireCalls++;
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('disk full');
    }
    const s = this.schedules.get(id);
    if (!s || s.paused || s.nextFireAt !== expected) return { ok: false, schedule: s && { ...s } };
    const job = { id: this.jobs.length + 1, name: s.template.name, createdAt: firedAt } as Job;
    this.jobs.push(job);
    Object.assign(s, { nextFireAt: next, lastFiredAt: firedAt, lastJobId: job.id });
    return { ok: true, job, schedule: { ...s } };
  }
  async noteScheduleFailure(id: string, expected: number, next: number, error: string, at: number): Promise<Schedule | undefined> {
    const s = this.schedules.get(id);
    if (s && !s.paused && s.nextFireAt === expected) Object.assign(s, { nextFireAt: next, lastError: error, lastErrorAt: at });
    return s && { ...s };
  }
}

const template: NewJob = { name: 'nightly', channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } };
const iso = (t: number) => new Date(t).toISOString();

describe('master/cron', () => {
  let time: FakeTime;
  let store: MemStore;
  let fired: Array<{ at: string; job: number }>;
  const runners: CronRunner[] = [];
  function runner(extra: Partial<ConstructorParameters<typeof CronRunner>[2]> = {}): CronRunner {
    const r = new CronRunner(store, (job) => fired.push({ at: iso(time.t), job: job.id }), { now: time.now, timers: time, ...extra });
    runners.push(r);
    return r;
  }
  const ats = (): string[] => fired.map((f) => f.at);
  beforeEach(() => {
    time = new FakeTime('2026-03-01T00:01:00Z');
    store = new MemStore();
    fired = [];
  });
  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
  });

  describe('when a schedule is due', () => {
    it('fires on its tick, not before, and then on every tick', async () => {
      const r = runner({ maxTimerMs: 3600_000 });
      await r.start();
      const s = await r.add({ id: 'every-5', cron: '*/5 * * * *', template });
      assert.equal(iso(s.nextFireAt!), '2026-03-01T00:05:00.000Z');
      assert.equal(iso(r.nextWakeAt!), '2026-03-01T00:05:00.000Z');
      await time.advanceTo('2026-03-01T00:04:59.999Z', r);
      assert.deepEqual(ats(), []);
      await time.advanceTo('2026-03-01T00:20:00Z', r);
      assert.deepEqual(ats(), ['2026-03-01T00:05:00.000Z', '2026-03-01T00:10:00.000Z', '2026-03-01T00:15:00.000Z', '2026-03-01T00:20:00.000Z']);
      const after = store.schedules.get('every-5')!;
      assert.equal(iso(after.lastFiredAt!), '2026-03-01T00:20:00.000Z');
      assert.equal(iso(after.nextFireAt!), '2026-03-01T00:25:00.000Z');
    });

    it('re-arms long waits in steps of maxTimerMs and still fires on time', async () => {
      const r = runner({ maxTimerMs: 60_000 });
      await r.start();
      await r.add({ id: 'daily', cron: '0 3 * * *', template });
      assert.equal(iso(r.nextWakeAt!), '2026-03-01T00:02:00.000Z');
      await time.advanceTo('2026-03-01T03:00:00Z', r);
      assert.deepEqual(ats(), ['2026-03-01T03:00:00.000Z']);
    });
  });

  describe('when the wall clock jumps forward (a suspend, an NTP step)', () => {
    it('fires within a minute of the tick, not up to an hour late', async () => {
      // Node timers run on a monotonic clock; the runner reads the wall clock.
      let mono = 0;
      const pending = new Map<number, { at: number; fn: () => void }>();
      let seq = 0;
      const monotonic: CronTimers = {
        setTimeout: (fn, ms) => (pending.set(++seq, { at: mono + ms, fn }), seq),
        clearTimeout: (h) => void pending.delete(h as number),
      };
      const r = new CronRunner(store, (job) => fired.push({ at: iso(time.t), job: job.id }), { now: time.now, timers: monotonic });
      runners.push(r);
      const step = async (ms: number) => {
        mono += ms;
        time.t += ms;
        for (const [id, t] of [...pending]) {
          if (t.at > mono) continue;
          pending.delete(id);
          t.fn();
        }
        await r.idle();
      };
      await r.start();
      await r.add({ id: 'at-3', cron: '0 3 * * *', template });
      await step(60_000);
      time.t = Date.parse('2026-03-01T02:59:00Z'); // the host slept, or NTP stepped the clock
      for (let i = 0; i < 2; i++) await step(60_000);
      assert.deepEqual(ats(), ['2026-03-01T03:00:00.000Z']);
    });
  });

  describe('when the master was down over several ticks', () => {
    it('fires an overdue schedule once at start, then continues from now', async () => {
      const r1 = runner();
      await r1.start();
      await r1.add({ id: 'every-5', cron: '*/5 * * * *', template });
      await time.advanceTo('2026-03-01T00:05:00Z', r1);
      assert.equal(fired.length, 1);
      await r1.stop();
      // Down for an hour: twelve ticks missed.
      time.t = Date.parse('2026-03-01T01:07:30Z');
      const r2 = runner();
      await r2.start();
      assert.deepEqual(ats(), ['2026-03-01T00:05:00.000Z', '2026-03-01T01:07:30.000Z']);
      assert.equal(iso(store.schedules.get('every-5')!.nextFireAt!), '2026-03-01T01:10:00.000Z');
      await time.advanceTo('2026-03-01T01:10:00Z', r2);
      assert.equal(fired.length, 3);
    });
  });

  describe('when a schedule is paused, resumed or removed', () => {
    it('does not fire while paused, resumes from the next tick without catch-up, and stops when removed', async () => {
      const r = runner();
      await r.start();
      await r.add({ id: 'hourly', cron: '0 * * * *', template });
      await r.pause('hourly');
      assert.equal(store.schedules.get('hourly')!.nextFireAt, null);
      await time.advanceTo('2026-03-01T05:30:00Z', r);
      assert.deepEqual(ats(), []);
      const s = await r.resume('hourly');
      assert.equal(iso(s.nextFireAt!), '2026-03-01T06:00:00.000Z');
      await time.advanceTo('2026-03-01T06:00:00Z', r);
      assert.equal(fired.length, 1);
      await r.remove('hourly');
      await time.advanceTo('2026-03-01T09:00:00Z', r);
      assert.equal(fired.length, 1);
      assert.equal(r.nextWakeAt, undefined);
      await assert.rejects(r.pause('hourly'), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_NOT_FOUND'));
    });

    it('starts paused schedules paused', async () => {
      const r = runner();
      await r.start();
      await r.add({ id: 'later', cron: '* * * * *', template, paused: true });
      await time.advanceTo('2026-03-01T00:10:00Z', r);
      assert.deepEqual(ats(), []);
    });
  });

  describe('when firing fails', () => {
    it('reports the error, waits retryMs, and fires once when the store is back', async () => {
      const errors: unknown[] = [];
      const r = runner({ retryMs: 10_000, onError: (e) => errors.push(e) });
      await r.start();
      await r.add({ id: 'every-min', cron: '* * * * *', template });
      store.failNext = 2;
      await time.advanceTo('2026-03-01T00:02:00Z', r);
      assert.equal(errors.length, 1);
      await time.advanceTo('2026-03-01T00:02:10Z', r);
      assert.equal(errors.length, 2);
      assert.deepEqual(ats(), []);
      await time.advanceTo('2026-03-01T00:02:20Z', r);
      assert.deepEqual(ats(), ['2026-03-01T00:02:20.000Z']);
      assert.equal(iso(store.schedules.get('every-min')!.nextFireAt!), '2026-03-01T00:03:00.000Z');
    });

    it('follows the store when the schedule changed under it (no double fire)', async () => {
      const r = runner();
      await r.start();
      await r.add({ id: 'every-min', cron: '* * * * *', template });
      // Another writer already fired this tick.
      store.schedules.get('every-min')!.nextFireAt = Date.parse('2026-03-01T00:03:00Z');
      await time.advanceTo('2026-03-01T00:02:30Z', r);
      assert.deepEqual(ats(), []);
      await time.advanceTo('2026-03-01T00:03:00Z', r);
      assert.deepEqual(ats(), ['2026-03-01T00:03:00.000Z']);
    });
  });

  describe('when a fire is under way', () => {
    it('tells onFiring with the template before the store write, and settles it after onFired, or after a failure', async () => {
      const events: string[] = [];
      const r = new CronRunner(store, (job) => events.push(`fired ${job.id}`), {
        now: time.now,
        timers: time,
        retryMs: 10_000,
        onError: () => events.push('error'),
        onFiring: (t, id) => {
          events.push(`firing ${id} ${t.name} priority ${t.priority ?? '-'} after ${store.fireCalls} writes`);
          return () => events.push('settled');
        },
      });
      runners.push(r);
      await r.start();
      await r.add({ id: 'every-min', cron: '* * * * *', template: { ...template, priority: 7 } });
      store.failNext = 1;
      await time.advanceTo('2026-03-01T00:02:00Z', r);
      await time.advanceTo('2026-03-01T00:02:10Z', r);
      assert.deepEqual(events, [
        'firing every-min nightly priority 7 after 0 writes',
        'settled',
        'error',
        'firing every-min nightly priority 7 after 1 writes',
        'fired 1',
        'settled',
      ]);
    });
  });

  describe('when given a bad expression', () => {
    it('refuses six-field (seconds) expressions unless allowed, and malformed ones, with a clear error', async () => {
      const r = runner();
      await r.start();
      await assert.rejects(r.add({ id: 'secs', cron: '*/10 * * * * *', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT') && /seconds are not allowed/.test(e.message));
      await assert.rejects(r.add({ id: 'x', cron: '@secondly', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await assert.rejects(r.add({ id: 'x', cron: '61 * * * *', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT') && /61/.test(e.message));
      await assert.rejects(r.add({ id: 'x', cron: '0 0 30 2 *', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await assert.rejects(r.add({ id: 'x', cron: '* * *', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT') && /3 fields/.test(e.message));
      await assert.rejects(r.add({ id: 'x', cron: '* * * * *', tz: 'Mars/Olympus', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await assert.rejects(r.add({ id: '../x', cron: '* * * * *', template }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'));
      assert.equal(store.schedules.size, 0);
      assert.equal(checkCronExpression('*/10 * * * * *', { allowSeconds: true, tz: 'UTC' }), '*/10 * * * * *');
    });

    it('accepts an @ alias in any case, and stores it in lower case', async () => {
      const r = runner();
      await r.start();
      const s = await r.add({ id: 'weekly', cron: '@WEEKLY', template });
      assert.equal(s.cron, '@weekly');
      assert.equal(iso(s.nextFireAt!), '2026-03-08T00:00:00.000Z');
    });

    it('honours the time zone', async () => {
      const r = runner();
      await r.start();
      const s = await r.add({ id: 'paris', cron: '0 2 * * *', tz: 'Europe/Paris', template });
      assert.equal(iso(s.nextFireAt!), '2026-03-01T01:00:00.000Z');
    });
  });
});
