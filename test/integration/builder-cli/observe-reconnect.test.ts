import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessFarm, sleep } from '../../helpers/process-farm.js';
import { RunningBin } from '../../helpers/procs.js';
import { assertCleanError, builderCli } from './cli-helpers.js';

/**
 * `builder observe` across a master restart: a real `master run` SIGKILLed by pid and started
 * again on the same dir and port while a real slave runs the job.
 */
describe('builder observe when the master goes away mid-follow', function () {
  this.timeout(60_000);
  let farm: ProcessFarm;
  let tmp: string;
  const env = () => ({ NO_COLOR: '1', BUILDER_CONFIG_DIR: join(tmp, 'no-config') });
  const conn = () => ['--master', farm.masterAddress, '--identity', farm.adminDir];
  const cli = builderCli(conn, env);
  const observe = (id: number, extra: string[] = []) => {
    const obs = new RunningBin('builder', ['observe', String(id), ...conn(), ...extra], env());
    const exited = once(obs.child, 'exit').then(([code]) => code as number | null);
    return { obs, exited };
  };

  before(async function () {
    farm = await ProcessFarm.start({ shareCa: true });
    tmp = await mkdtemp(join(tmpdir(), 'builder-observe-reconnect-'));
    await farm.addSlave({ name: 'w1', enroll: 'direct', capacity: 2 });
  });
  after(async function () {
    await farm?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('reconnects after a restart and prints every line once, in order, then exits with the job\'s outcome', async function () {
    const n = 40;
    const job = await farm.submitScript(`for i in $(seq 1 ${n}); do echo "line $i"; sleep 0.1; done; echo "done" >&2; exit 7`, { name: 'counting' });
    const { obs, exited } = observe(job.id);
    try {
      await obs.waitFor(/^line 5$/m);
      const firstPid = farm.master.pid;
      await farm.killMaster();
      await obs.waitFor(/\[builder\] lost the master/);
      // Down long enough for a few refused connection attempts (0.2 s, then 0.4 s, ...).
      await sleep(700);
      await farm.restartMaster();
      assert.notEqual(farm.master.pid, firstPid);
      assert.equal(await exited, 10, obs.stderr);
      // The job went on while the master was down; nothing printed twice, nothing lost.
      const expected = Array.from({ length: n }, (_, i) => `line ${i + 1}\n`).join('');
      assert.equal(obs.stdout, expected, `stdout:\n${obs.stdout}\nstderr:\n${obs.stderr}`);
      const lost = obs.stderr.match(/^\[builder\] lost the master \(connection closed\); reconnecting for up to 1m00s$/gm) ?? [];
      const back = obs.stderr.match(/^\[builder\] reconnected to the master after \d+(\.\d)?m?s; resuming job \d+'s log at record \d+$/gm) ?? [];
      assert.equal(lost.length, 1, obs.stderr);
      assert.equal(back.length, 1, obs.stderr);
      assert.ok(obs.stderr.indexOf(lost[0]) < obs.stderr.indexOf(back[0]), obs.stderr);
      assert.match(obs.stderr, /^done$/m);
      assert.match(obs.stderr, new RegExp(`^\\[builder\\] job ${job.id} failed \\(exit 7[,)]`, 'm'));
    } finally {
      await obs.stop('SIGKILL');
    }
  });

  it('exits 3 with one clear line once --reconnect-for has passed, and at once with --reconnect-for 0', async function () {
    const job = await farm.submitScript('echo started; sleep 30', { name: 'stays' });
    const patient = observe(job.id, ['--reconnect-for', '1s']);
    const impatient = observe(job.id, ['--reconnect-for', '0']);
    try {
      await patient.obs.waitFor(/^started$/m);
      await impatient.obs.waitFor(/^started$/m);
      await farm.killMaster();
      const t0 = Date.now();
      assert.equal(await impatient.exited, 3, impatient.obs.stderr);
      assert.equal(await patient.exited, 3, patient.obs.stderr);
      const waited = Date.now() - t0;
      assert.ok(waited >= 700, `gave up after ${waited} ms, before its 1 s`);

      assert.doesNotMatch(impatient.obs.stderr, /reconnecting/);
      assert.match(impatient.obs.stderr, /^Error: lost the connection to the master \(connection closed\)\nHint: the job keeps running on the farm; builder observe \d+ follows it again\n$/m);
      assert.match(patient.obs.stderr, /^\[builder\] lost the master \(connection closed\); reconnecting for up to 1\.0s$/m);
      assert.match(
        patient.obs.stderr,
        new RegExp(`^Error: lost the connection to the master \\(connection closed\\) and could not reconnect within 1s \\(last attempt: nothing listens at 127\\.0\\.0\\.1:${farm.mainPort}\\)\\nHint: the job keeps running on the farm; builder observe ${job.id} follows it again\\n$`, 'm'),
      );
      assert.doesNotMatch(patient.obs.stderr + impatient.obs.stderr, /^\s+at /m, 'stack trace printed');
    } finally {
      await patient.obs.stop('SIGKILL');
      await impatient.obs.stop('SIGKILL');
      await farm.restartMaster();
    }
  });

  it('refuses a --reconnect-for that is not a duration: one line, exit 2', async function () {
    assertCleanError(await cli(['observe', '1', '--reconnect-for', 'soon']), /^Error: invalid --reconnect-for "soon"$/m, 2);
    assertCleanError(await cli(['observe', '1', '--reconnect-for', '-5s']), /invalid --reconnect-for "-5s"/, 2);
  });
});
