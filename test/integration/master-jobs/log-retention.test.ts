import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, exists, job, jobFarm, rejectsWith, text, until, waitJob } from './helpers.js';

const data = (seq: number, s: string) => ({ kind: 'data' as const, seq, stream: 'stdout' as const, data: Buffer.from(s) });

describe('master jobs: log retention', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let s: TestSlave;
  const logPath = (id: number, attempt: number) => join(farm.dir, 'logs', String(Math.floor(id / 1000)), `${id}-${attempt}.log`);

  beforeEach(async function () {
    // Logs kept 3 s after their attempt ends; the retention looks every 100 ms.
    ({ farm, client } = await jobFarm({ logRetentionMs: 3_000, retentionSweepMs: 100 }));
    s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe();
  });
  afterEach(async function () {
    await farm.close();
  });

  it('removes a log once its attempt ended longer ago than the retention, says so on log.read (also after a restart), and never touches a running attempt', async function () {
    const done = (await client.call('job.submit', { job: job({ name: 'done' }) })).job.id;
    await s.nextAssign(done);
    await s.log(done, 1, [data(1, 'built '), data(2, 'ok'), { kind: 'end', seq: 3 }]);
    await s.finish(done, 1);
    await waitJob(client, done, (x) => x.state === 'succeeded', 'succeeded');
    const running = (await client.call('job.submit', { job: job({ name: 'long' }) })).job.id;
    await s.nextAssign(running);
    await waitJob(client, running, (x) => x.state === 'running', 'running');
    await s.log(running, 1, [data(1, 'still going')]);

    // Within the retention: kept.
    assert.equal(text((await client.call('log.read', { jobId: done })).records), 'built ok');
    await until(`the log of job ${done} to be removed`, async () => !(await exists(logPath(done, 1))));
    await rejectsWith(client.call('log.read', { jobId: done }), 'BUILDER_ERR_NOT_FOUND', /the log of attempt 1 of job \d+ was removed on \d{4}-\d\d-\d\dT.* by the log retention/);
    const err = await rejectsWith(client.call('log.read', { jobId: done, attempt: 1 }), 'BUILDER_ERR_NOT_FOUND');
    assert.match(String((err.data as { hint?: string }).hint), /keeps logs for 3 seconds after an attempt ends \(master run --log-retention\)/);
    // The reading did not make the file again.
    assert.equal(await exists(logPath(done, 1)), false);

    // The running attempt is older than the retention by now, and keeps its log.
    assert.equal(await exists(logPath(running, 1)), true);
    assert.equal(text((await client.call('log.read', { jobId: running })).records), 'still going');
    // Once it ends, its turn comes too.
    await s.log(running, 1, [{ kind: 'end', seq: 2 }]);
    await s.finish(running, 1);
    await until(`the log of job ${running} to be removed`, async () => !(await exists(logPath(running, 1))));

    // The removal is in the store: a restarted master says the same.
    await farm.restart();
    const again = await farm.connect(await farm.identity('carol', 'client'));
    try {
      await rejectsWith(again.call('log.read', { jobId: done }), 'BUILDER_ERR_NOT_FOUND', /removed on .* by the log retention/);
      // The job itself stays, with its outcome.
      assert.equal((await again.call('job.get', { id: done })).job.state, 'succeeded');
    } finally {
      await again.close(200);
    }
  });
});
