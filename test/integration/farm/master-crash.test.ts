import assert from 'node:assert/strict';
import { ProcessFarm, waitFor } from '../../helpers/process-farm.js';
import { Gate, RunLog, masterTimings } from './setup.js';

describe('when the master is killed with SIGKILL while jobs are queued and running', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;

  afterEach(async function () {
    await farm?.stop();
  });

  it('ends all 54 jobs after a restart, each exactly once, and does not rerun the 4 its slaves reported', async function () {
    // A long grace: the slaves come back well within it, so nothing may be requeued.
    farm = await ProcessFarm.start({ shareCa: true, masterArgs: masterTimings({ graceMs: 30_000 }) });
    const s1 = await farm.addSlave({ name: 'crash-a', capacity: 2, enroll: 'direct' });
    const s2 = await farm.addSlave({ name: 'crash-b', capacity: 2, enroll: 'direct' });
    // Two of the running jobs end while the master is down, two after the slaves are back.
    const whileDown = new Gate(farm, 'while-down');
    const afterBack = new Gate(farm, 'after-back');
    const runs = new RunLog(farm, 'crash');

    const running: number[] = [];
    for (let i = 0; i < 4; i++) {
      const j = await farm.submitScript([runs.line('start'), 'echo "before the crash"', (i < 2 ? whileDown : afterBack).waitLine(), 'echo "after the crash"', runs.line('end')].join('\n'), {
        name: `long-${i}`,
        priority: 10,
      });
      running.push(j.id);
    }
    for (const id of running) await farm.waitJob(id, ['running'], 20_000);
    const queued: number[] = [];
    for (let i = 0; i < 50; i++) queued.push((await farm.submitScript([runs.line('start'), runs.line('end')].join('\n'), { name: `short-${i}` })).id);
    for (const id of queued) assert.equal((await farm.getJob(id)).job.state, 'queued', `job ${id} should wait for a slot`);
    // The slaves really are running the 4: each wrote its start line.
    await waitFor('4 long jobs started', async () => (await runs.read()).filter((l) => l.event === 'start').length === 4);

    await farm.killMaster();
    await whileDown.open();
    await waitFor('2 long jobs to end while the master is down', async () => (await runs.read()).filter((l) => l.event === 'end').length === 2);
    await farm.restartMaster();
    await farm.waitSlaveConnected(s1.name);
    await farm.waitSlaveConnected(s2.name);
    await afterBack.open();

    const all = [...running, ...queued];
    const done = await farm.waitJobs(all, 60_000);
    assert.equal(done.size, 54);
    for (const id of all) {
      const d = done.get(id)!;
      assert.equal(d.job.state, 'succeeded', `job ${id}: ${d.job.state} (${String(d.job.reason)})`);
    }
    // The 4 running ones finished on their first attempt, on the slave that had them.
    for (const id of running) {
      const d = done.get(id)!;
      assert.equal(d.job.attempt, 1, `job ${id} was rerun`);
      assert.equal(d.attempts.length, 1, `job ${id} has ${d.attempts.length} attempts`);
      assert.ok([s1.name, s2.name].includes(d.attempts[0]!.slave));
      const text = Buffer.concat((await farm.readLog(id)).flatMap((r) => (r.kind === 'data' ? [Buffer.from(r.data)] : []))).toString();
      assert.equal(text, 'before the crash\nafter the crash\n', `job ${id}: log across the crash`);
    }
    for (const id of queued) assert.equal(done.get(id)!.attempts.length, 1, `job ${id} has ${done.get(id)!.attempts.length} attempts`);

    // None ran twice: the jobs' own record has one start and one end per job.
    const lines = await runs.read();
    for (const id of all) {
      const mine = lines.filter((l) => l.jobId === id);
      assert.deepEqual(
        mine.map((l) => `${l.attempt} ${l.event}`),
        ['1 start', '1 end'],
        `job ${id} ran ${mine.filter((l) => l.event === 'start').length} times`,
      );
    }
  });
});
