import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessFarm, waitFor } from '../../helpers/process-farm.js';
import { assertCleanError, builderCli } from './cli-helpers.js';

/**
 * Six-field cron expressions end to end: `builder schedule` passes them on, and the master
 * decides: `master run --cron-seconds` accepts them, a master without the flag refuses them.
 */
describe('a cron expression with a seconds field', function () {
  this.timeout(60_000);
  let withFlag: ProcessFarm;
  let without: ProcessFarm;
  let tmp: string;
  const env = () => ({ BUILDER_CONFIG_DIR: join(tmp, 'no-config') });
  const on = (farm: () => ProcessFarm) => builderCli(() => ['--master', farm().masterAddress, '--identity', farm().adminDir], env);
  const cliWith = on(() => withFlag);
  const cliWithout = on(() => without);
  const job = ['--name', 'tick', '--channel', 'nowhere', '--arch', 'x86_64'];

  before(async function () {
    tmp = await mkdtemp(join(tmpdir(), 'builder-cron-seconds-'));
    [withFlag, without] = await Promise.all([ProcessFarm.start({ shareCa: true, masterArgs: ['--cron-seconds'] }), ProcessFarm.start({ shareCa: true })]);
  });
  after(async function () {
    await Promise.all([withFlag?.stop(), without?.stop()]);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('is accepted by `master run --cron-seconds`, and fires every second', async function () {
    const r = await cliWith(['schedule', ...job, '--cron', '* * * * * *', '--json', '--', 'true']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { id: string; cron: string; nextFireAt: number };
    assert.equal(s.cron, '* * * * * *');
    // Two fires within seconds: the seconds field is honoured (read as minutes, it would take a minute).
    const jobs = await waitFor(
      'two jobs fired by the schedule',
      async () => {
        const { jobs: list } = await withFlag.call('job.list', {});
        const fired = list.filter((j) => j.name === 'tick');
        return fired.length >= 2 ? fired : undefined;
      },
      10_000,
      100,
    );
    assert.ok(jobs.length >= 2);
    assert.match((await cliWith(['unschedule', s.id])).stdout, /removed/);
    const sec = await cliWith(['schedule', ...job, '--cron', '@secondly', '--json', '--', 'true']);
    assert.equal(sec.code, 0, sec.stderr);
    assert.equal((JSON.parse(sec.stdout) as { cron: string }).cron, '@secondly');
  });

  it('is refused by a master without the flag: one line with a hint, exit 2, nothing stored', async function () {
    assertCleanError(
      await cliWithout(['schedule', ...job, '--cron', '*/5 * * * * *', '--', 'true']),
      /^Error: cron expression "\*\/5 \* \* \* \* \*" has six fields \(seconds\); seconds are not allowed\nHint: .*master run --cron-seconds/m,
      2,
    );
    assertCleanError(await cliWithout(['schedule', ...job, '--cron', '@secondly', '--', 'true']), /^Error: @secondly fires every second; per-second schedules are not allowed\nHint: .*--cron-seconds/m, 2);
    const { schedules } = await without.call('schedule.list', {});
    assert.deepEqual(schedules, []);
    // Five fields still work there.
    assert.equal((await cliWithout(['schedule', ...job, '--cron', '0 3 * * *', '--', 'true'])).code, 0);
  });

  it('is still checked by builder schedule for what no master accepts: seven fields, a bad seconds value', async function () {
    assertCleanError(await cliWith(['schedule', ...job, '--cron', '* * * * * * *', '--', 'true']), /has 7 fields; expected 5/, 2);
    assertCleanError(await cliWith(['schedule', ...job, '--cron', '61 * * * * *', '--', 'true']), /^Error: invalid cron expression "61 \* \* \* \* \*"/m, 2);
  });
});
