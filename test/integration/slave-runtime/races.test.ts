import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SlaveRuntime } from '../../../slave/index.js';
import { fastRuntimeOptions, killGroups, slaveTestBed, startRuntime, until } from './helpers/setup.js';
import type { TestMaster } from './helpers/test-master.js';

describe('slave runtime: attempts that end while the next one arrives', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-races-');
  let dir: string;
  let master: TestMaster;
  let rt: SlaveRuntime | undefined;
  const pids: number[] = [];
  beforeEach(async function () {
    ({ dir, master } = bed);
    await master.listen(0);
  });
  afterEach(async function () {
    killGroups(pids);
    if (rt !== undefined) {
      const r = rt;
      rt = undefined;
      for (const a of r.attempts()) if (a.pid !== undefined) pids.push(a.pid);
      await r.shutdown();
    }
    await master.close();
  });

  it('accepts the next attempt of a job whose abandoned attempt is still dying (the master dispatches right after the subscribe)', async function () {
    rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 2 }));
    await master.assign({ jobId: 50, command: { kind: 'script', text: "trap 'sleep 0.3; exit 1' TERM; sleep 30 & wait" } });
    await until(() => rt!.attempts()[0]?.pid !== undefined, 'the job to start');
    await sleep(100);
    master.abandonAll = true;
    const n = master.subscribes.length;
    master.dropConnections();
    await until(() => master.subscribes.length > n && master.slave !== undefined, 'the re-subscribe');
    // Refused ("already runs here"), it would count as a setup failure of this slave and use up an attempt.
    assert.deepEqual(await master.assign({ jobId: 50, attempt: 2, command: { kind: 'argv', argv: ['true'] } }), { accepted: true });
    assert.equal((await master.waitFinish(50, 2)).finish?.state, 'succeeded');
  });
});
