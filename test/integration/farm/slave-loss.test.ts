import assert from 'node:assert/strict';
import { ProcessFarm, sleep, waitFor } from '../../helpers/process-farm.js';
import { RunLog, masterTimings } from './setup.js';

describe('when a slave goes away mid-job', function () {
  this.timeout(90_000);
  let farm: ProcessFarm;

  afterEach(async function () {
    await farm?.stop();
  });

  it('reruns the job of a SIGKILLed slave on another slave, where it succeeds (attempts = 2)', async function () {
    farm = await ProcessFarm.start({ shareCa: true, masterArgs: masterTimings({ graceMs: 1500 }) });
    const doomed = await farm.addSlave({ name: 'doomed', enroll: 'direct' });
    const runs = new RunLog(farm, 'kill');
    // Attempt 1 would run for a long time; attempt 2 is quick.
    const job = await farm.submitScript(
      [runs.line('start'), 'echo "attempt $BUILDER_ATTEMPT"', 'if [ "$BUILDER_ATTEMPT" = 1 ]; then sleep 30; fi', runs.line('end')].join('\n'),
      { name: 'survivor', maxAttempts: 3 },
    );
    await farm.waitJob(job.id, ['running']);
    await waitFor('attempt 1 started', async () => (await runs.read()).length === 1);
    const rescuer = await farm.addSlave({ name: 'rescuer', enroll: 'direct' });

    await doomed.kill();
    const d = await farm.waitJob(job.id, undefined, 30_000);
    assert.equal(d.job.state, 'succeeded', `${d.job.state} ${String(d.job.reason)}`);
    assert.equal(d.job.attempt, 2);
    assert.equal(d.attempts.length, 2);
    assert.deepEqual(
      d.attempts.map((a) => [a.attempt, a.slave]),
      [
        [1, doomed.name],
        [2, rescuer.name],
      ],
    );
    assert.notEqual(d.attempts[0]!.state, 'succeeded');
    assert.equal(d.attempts[1]!.state, 'succeeded');
    const text = Buffer.concat((await farm.readLog(job.id, 2)).flatMap((r) => (r.kind === 'data' ? [Buffer.from(r.data)] : []))).toString();
    assert.equal(text, 'attempt 2\n');
    const lines = await runs.read();
    assert.deepEqual(
      lines.map((l) => `${l.attempt} ${l.event} ${l.workdir.startsWith(`${rescuer.dir}/`) ? rescuer.name : doomed.name}`),
      [`1 start ${doomed.name}`, `2 start ${rescuer.name}`, `2 end ${rescuer.name}`],
    );
  });

  it('keeps the job and its whole log, in order, when the connection drops for a few seconds', async function () {
    // The grace is far longer than the cut: the slave is expected back, the job must not move.
    farm = await ProcessFarm.start({ shareCa: true, masterArgs: masterTimings({ graceMs: 30_000 }) });
    const slave = await farm.addSlave({ name: 'flaky', viaProxy: true, enroll: 'direct' });
    const proxy = slave.proxy!;
    const runs = new RunLog(farm, 'cut');
    const n = 80;
    const script = [
      runs.line('start'),
      `i=1; while [ $i -le ${n} ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.05; done`,
      runs.line('end'),
    ].join('\n');
    const job = await farm.submitScript(script, { name: 'talker', maxAttempts: 3 });
    const running = await farm.waitJob(job.id, ['running']);
    assert.equal(running.job.slave, slave.name);
    // A slave that would take the job if the master wrongly gave it back to the queue.
    await farm.addSlave({ name: 'standby', enroll: 'direct' });
    // Some output has arrived, then the connection drops mid-job.
    await waitFor('the first lines on the master', async () => {
      const r = await farm.call('log.read', { jobId: job.id, fromSeq: 1 });
      return r.records.length > 0;
    });
    const acceptedBefore = proxy.accepted;
    await proxy.cut();
    await sleep(3000);
    const during = await farm.getJob(job.id);
    assert.equal(during.job.state, 'running', 'the job must stay with its slave during the grace period');
    await proxy.restore();

    const d = await farm.waitJob(job.id, undefined, 30_000);
    assert.ok(proxy.accepted > acceptedBefore, 'the slave never reconnected through the proxy');
    assert.equal(d.job.state, 'succeeded', `${d.job.state} ${String(d.job.reason)}`);
    assert.equal(d.attempts.length, 1, 'the job was rerun');
    assert.equal(d.job.slave, slave.name);
    assert.deepEqual(
      (await runs.read()).map((l) => l.event),
      ['start', 'end'],
    );

    // The master's copy of the log: every seq once, in order, nothing dropped, then the end.
    const records = await farm.readLog(job.id, 1);
    assert.deepEqual(
      records.map((r) => r.seq),
      records.map((_r, i) => i + 1),
    );
    assert.equal(records.at(-1)!.kind, 'end');
    assert.ok(!records.some((r) => r.kind === 'dropped'));
    const text = (stream: 'stdout' | 'stderr') => Buffer.concat(records.flatMap((r) => (r.kind === 'data' && r.stream === stream ? [Buffer.from(r.data)] : []))).toString();
    const expect = (p: string) => Array.from({ length: n }, (_v, i) => `${p} ${i + 1}\n`).join('');
    assert.equal(text('stdout'), expect('out'));
    assert.equal(text('stderr'), expect('err'));
  });
});
