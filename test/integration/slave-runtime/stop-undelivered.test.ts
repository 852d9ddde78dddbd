import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuilderError } from '../../../protocol/index.js';
import type { ShutdownReport, SlaveRuntime } from '../../../slave/index.js';
import { attemptDirs, fastRuntimeOptions, slaveTestBed, startRuntime, until } from './helpers/setup.js';
import type { TestMaster } from './helpers/test-master.js';

describe('slave runtime: a stop while a finished attempt (no artifacts) waits to be delivered', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-stop-undelivered-');
  let dir: string;
  let master: TestMaster;
  let rt: SlaveRuntime | undefined;

  beforeEach(async function () {
    ({ dir, master } = bed);
    await master.listen(0);
  });
  afterEach(async function () {
    const r = rt;
    rt = undefined;
    // A runtime whose shutdown hung stays hung: the test has failed already; do not wait for it.
    if (r !== undefined) await Promise.race([r.shutdown(), sleep(5_000)]);
    await master.close();
  });

  /** shutdown()'s report, or undefined if it has not returned within `ms`. */
  async function stopWithin(r: SlaveRuntime, ms: number): Promise<ShutdownReport | undefined> {
    const report = await Promise.race([r.shutdown(), sleep(ms).then(() => undefined)]);
    if (report !== undefined) rt = undefined;
    return report;
  }

  describe('when the master is down', function () {
    it('stops at the deliver timeout and keeps the attempt on disk for the next start', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { deliverTimeoutMs: 500 }));
      await master.assign({ jobId: 80, command: { kind: 'script', text: 'echo before; sleep 0.5; echo after' } });
      await until(() => master.text(80).includes('before'), 'the job to start');
      // The connection drops, the sender stops with "after" unsent, and the job ends meanwhile.
      await master.close();
      await until(() => rt!.attempts()[0]?.phase === 'delivering', 'the job to end');
      const report = await stopWithin(rt, 10_000);
      assert.ok(report !== undefined, 'shutdown() never returned');
      assert.deepEqual(report.kept, ['80-1']);
      assert.deepEqual(await attemptDirs(dir), ['80-1']);
    });
  });

  describe('when the master refuses the log and the slave waits to resend it', function () {
    it('stops at the deliver timeout instead of waiting for the resend', async function () {
      // Every attempt.log fails (not as stale, not as a lost connection): the sender stops and a
      // resend is due retryDelayMs later, well after the stop.
      master.on('peer', (peer) =>
        setImmediate(() =>
          peer.handle('attempt.log', () => {
            throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'log store busy');
          }),
        ),
      );
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { deliverTimeoutMs: 500, retryDelayMs: 30_000 }));
      await master.assign({ jobId: 81, command: { kind: 'script', text: 'echo hello' } });
      await until(() => rt!.attempts()[0]?.phase === 'delivering', 'the job to end');
      const report = await stopWithin(rt, 10_000);
      assert.ok(report !== undefined, 'shutdown() never returned');
      assert.deepEqual(report.kept, ['81-1']);
    });
  });
});
