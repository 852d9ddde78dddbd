import assert from 'node:assert/strict';
import { ProcessFarm, sleep, waitFor, type JobView } from '../../helpers/process-farm.js';

/**
 * Schedules through a real `master run` process. Cron has minute resolution by default;
 * `master run --cron-seconds` accepts six-field (seconds) expressions, which keeps this test to
 * seconds. The jobs need no slave: what is checked is when the master queues them.
 */
describe('when a cron schedule runs in a real master', function () {
  this.timeout(90_000);
  let farm: ProcessFarm;

  afterEach(async function () {
    await farm?.stop();
  });

  const periodS = 3;
  const periodMs = periodS * 1000;

  async function jobsOf(scheduleId: string): Promise<JobView[]> {
    const { jobs } = await farm.call('job.list', { channel: 'cron', limit: 1000 });
    return jobs.filter((j) => j.scheduleId === scheduleId).sort((a, b) => a.id - b.id);
  }

  it('fires on time, and once (not once per tick) after the master was down over several ticks', async function () {
    farm = await ProcessFarm.start({ shareCa: true, masterArgs: ['--cron-seconds'] });
    const { schedule } = await farm.call('schedule.create', {
      cron: `*/${periodS} * * * * *`,
      template: { name: 'tick', channel: 'cron', arch: 'x86_64', command: { kind: 'script', text: 'true' } },
    });
    assert.ok(schedule.nextFireAt !== null);
    assert.equal(schedule.nextFireAt % periodMs, 0, 'the next firing is on a tick');

    // On time: three firings, each on its tick (queued within a second after it), one per tick.
    const fired = await waitFor('3 firings', async () => {
      const j = await jobsOf(schedule.id);
      return j.length >= 3 ? j : undefined;
    }, 5 * periodMs);
    const ticks = fired.slice(0, 3).map((j) => {
      const tick = Math.floor(j.createdAt / periodMs) * periodMs;
      assert.ok(j.createdAt - tick < 1000, `job ${j.id} queued ${j.createdAt - tick} ms after its tick`);
      return tick;
    });
    assert.deepEqual(ticks, [ticks[0]!, ticks[0]! + periodMs, ticks[0]! + 2 * periodMs]);

    // Down over several ticks: kill right after a firing, come back mid-way between two ticks.
    const before = await waitFor('a fresh firing', async () => {
      const j = await jobsOf(schedule.id);
      const last = j.at(-1)!;
      return Date.now() - last.createdAt < 500 && j.length > 3 ? j : undefined;
    }, 3 * periodMs, 20);
    await farm.killMaster();
    const downAt = Date.now();
    const lastTick = Math.floor(before.at(-1)!.createdAt / periodMs) * periodMs;
    // Come back half a period after the 3rd missed tick.
    const backAt = lastTick + 3 * periodMs + periodMs / 2;
    // Start ~0.8 s early: a master takes 0.5-1.5 s to listen on a loaded machine, and must not
    // straddle the next tick (its catch-up and that tick would then be two firings).
    await sleep(Math.max(0, backAt - Date.now() - 800));
    await farm.restartMaster();
    const upAt = Date.now();
    assert.ok(upAt - downAt >= 2.5 * periodMs, `the master was down only ${upAt - downAt} ms`);
    const missed = Math.floor(upAt / periodMs) - Math.floor(lastTick / periodMs);
    assert.ok(missed >= 2, `only ${missed} ticks were missed`);

    // The overdue schedule fires once at start-up, then waits for the next tick.
    const catchUp = await waitFor('the catch-up firing', async () => {
      const j = await jobsOf(schedule.id);
      return j.length > before.length ? j : undefined;
    }, periodMs);
    const nextTick = (Math.floor(upAt / periodMs) + 1) * periodMs;
    // At start-up, not the next regular tick taken for it (waitFor above would accept either).
    assert.ok(catchUp.at(-1)!.createdAt < nextTick, `the catch-up was queued at ${catchUp.at(-1)!.createdAt}, not before the next tick ${nextTick}`);
    await sleep(Math.max(0, nextTick - Date.now() - 300));
    const beforeNextTick = await jobsOf(schedule.id);
    assert.equal(
      beforeNextTick.length,
      before.length + 1,
      `${beforeNextTick.length - before.length} firings for ${missed} missed ticks (down at ${downAt}, up at ${upAt}, created at ${beforeNextTick
        .slice(before.length)
        .map((j) => j.createdAt)
        .join(', ')})`,
    );
    assert.ok(catchUp.at(-1)!.createdAt >= upAt - 1000);

    // Then it is back on its ticks.
    const after = await waitFor('the next regular firing', async () => {
      const j = await jobsOf(schedule.id);
      return j.length > beforeNextTick.length ? j : undefined;
    }, 2 * periodMs);
    const regular = after.at(-1)!;
    assert.ok(regular.createdAt - Math.floor(regular.createdAt / periodMs) * periodMs < 1000);

    // The schedule survived the crash, with its last firing recorded.
    const { schedules } = await farm.call('schedule.list', {});
    const s = schedules.find((x) => x.id === schedule.id)!;
    assert.ok(s.lastFiredAt !== null && s.lastFiredAt >= upAt - 1000);
    // Paused, it stops firing; removed, it is gone.
    await farm.call('schedule.pause', { id: schedule.id, paused: true });
    const paused = (await jobsOf(schedule.id)).length;
    await sleep(periodMs + 500);
    assert.equal((await jobsOf(schedule.id)).length, paused);
    await farm.call('schedule.remove', { id: schedule.id });
    assert.equal((await farm.call('schedule.list', {})).schedules.length, 0);
  });
});
