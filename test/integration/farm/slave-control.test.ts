import assert from 'node:assert/strict';
import { readdir, readlink } from 'node:fs/promises';
import { ProcessFarm, sleep, waitFor } from '../../helpers/process-farm.js';
import { RunLog, masterTimings, readSlotRecord, slotEvents } from './setup.js';

/** Pids of live processes whose working directory is inside `dir` (a slave's job processes). */
async function processesUnder(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if ((await readlink(`/proc/${e}/cwd`)).startsWith(`${dir}/`)) out.push(Number(e));
    } catch {
      /* gone, or a zombie */
    }
  }
  return out;
}

describe('when a slave does not answer, or is stopped with SIGTERM', function () {
  this.timeout(90_000);
  let farm: ProcessFarm;

  afterEach(async function () {
    await farm?.stop();
  });

  it('takes back an assignment a frozen slave does not accept in time, runs it elsewhere, and kills the late acceptance', async function () {
    farm = await ProcessFarm.start({ shareCa: true, masterArgs: masterTimings({ graceMs: 30_000, acceptTimeoutMs: 1000 }) });
    const sleepy = await farm.addSlave({ name: 'sleepy', channels: ['accept'], enroll: 'direct' });
    const awake = await farm.addSlave({ name: 'awake', channels: ['accept'], enroll: 'direct' });
    const runs = new RunLog(farm, 'accept');
    // Only the frozen slave can take the job at first.
    await farm.call('slave.drain', { name: awake.name, drained: true });
    process.kill(sleepy.pid, 'SIGSTOP');
    let continued = false;
    try {
      // The job writes no output: the woken slave learns that its acceptance came too late only
      // from the master (attempt.cancel), not from a refused log batch.
      const job = await farm.submitScript([runs.line('start'), 'sleep 2', runs.line('end')].join('\n'), { name: 'frozen', channel: 'accept', maxAttempts: 3 });
      const d1 = await farm.waitJob(job.id, ['dispatched']);
      assert.equal(d1.job.slave, sleepy.name);
      await farm.call('slave.drain', { name: awake.name, drained: false });
      // Past the accept timeout the job goes to the other slave.
      const d2 = await farm.waitJob(job.id, ['running'], 20_000);
      assert.equal(d2.job.slave, awake.name);
      assert.equal(d2.job.attempt, 2);
      process.kill(sleepy.pid, 'SIGCONT');
      continued = true;

      const d = await farm.waitJob(job.id, undefined, 20_000);
      assert.equal(d.job.state, 'succeeded', `${d.job.state} ${String(d.job.reason)}`);
      assert.deepEqual(
        d.attempts.map((a) => [a.attempt, a.slave]),
        [
          [1, sleepy.name],
          [2, awake.name],
        ],
      );
      assert.notEqual(d.attempts[0]!.state, 'succeeded');
      // The woken slave may have started its stale attempt; it must be killed, not finished.
      await waitFor('no job process left on the woken slave', async () => (await processesUnder(sleepy.dir)).length === 0, 10_000);
      const lines = await runs.read();
      assert.deepEqual(
        lines.filter((l) => l.event === 'end').map((l) => l.attempt),
        [2],
        'only attempt 2 ran to its end',
      );
      // And the woken slave's slots are free again (its own record).
      await waitFor('the woken slave released its slot', async () => {
        const ev = slotEvents(await readSlotRecord(sleepy.dir).catch(() => []));
        return ev.length === 0 || ev.at(-1)!.usedAfter === 0;
      });
      assert.equal((await farm.getJob(job.id)).job.state, 'succeeded');
    } finally {
      if (!continued) process.kill(sleepy.pid, 'SIGCONT');
    }
  });

  it('lets a slave stopped with SIGTERM finish its job, take nothing new, and exit 0', async function () {
    farm = await ProcessFarm.start({ shareCa: true, masterArgs: masterTimings({ graceMs: 30_000 }) });
    const slave = await farm.addSlave({ name: 'drainer', channels: ['drain'], capacity: 2, enroll: 'direct', args: ['--drain-timeout', '30s'] });
    const runs = new RunLog(farm, 'drain');
    const first = await farm.submitScript([runs.line('start'), 'sleep 2', 'echo finished', runs.line('end')].join('\n'), { name: 'in-flight', channel: 'drain' });
    await farm.waitJob(first.id, ['running']);
    await waitFor('the job started', async () => (await runs.read()).length === 1);
    process.kill(slave.pid, 'SIGTERM');
    await sleep(300);
    const second = await farm.submitScript(runs.line('start'), { name: 'after-term', channel: 'drain' });

    const exit = await slave.process!.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    const d = await farm.waitJob(first.id, undefined, 10_000);
    assert.equal(d.job.state, 'succeeded', `${d.job.state} ${String(d.job.reason)}`);
    assert.equal(d.attempts.length, 1);
    const text = Buffer.concat((await farm.readLog(first.id)).flatMap((r) => (r.kind === 'data' ? [Buffer.from(r.data)] : []))).toString();
    assert.equal(text, 'finished\n');
    // The draining slave took nothing new.
    const s = await farm.getJob(second.id);
    assert.equal(s.job.state, 'queued');
    assert.ok(s.waiting);
    assert.deepEqual(
      (await runs.read()).map((l) => `${l.jobId} ${l.event}`),
      [`${first.id} start`, `${first.id} end`],
    );
    // Started again, it takes the job that waited.
    await slave.restart();
    const s2 = await farm.waitJob(second.id, undefined, 20_000);
    assert.equal(s2.job.state, 'succeeded');
    assert.equal(s2.job.attempt, 1);
  });
});
