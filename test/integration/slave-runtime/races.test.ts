import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SlaveRuntime } from '../../../slave/index.js';
import { BuilderError } from '../../../protocol/index.js';
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

  it("a cancel during the input fetch leaves no file of the old attempt in the next attempt's input dir", async function () {
    rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 1 }));
    const a = master.addInput(Buffer.from('aaaaaaaaaa'));
    const b = master.addInput(Buffer.from('bbbbbbbbbbbb'));
    master.on('peer', (peer) =>
      setImmediate(() =>
        peer.handle('input.read', async (p) => {
          if (p.sha256 === a.sha256) await sleep(600);
          const buf = master.inputs.get(p.sha256);
          if (buf === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', 'no such input');
          return { data: buf.subarray(p.offset, p.offset + p.length) as Uint8Array<ArrayBuffer> };
        }),
      ),
    );
    master.dropConnections();
    await until(() => master.slave !== undefined && master.subscribes.length >= 2, 'reconnect');
    await sleep(50);
    await master.assign({ jobId: 60, command: { kind: 'argv', argv: ['true'] }, inputs: [{ name: 'a.txt', ...a }, { name: 'sub/b.txt', ...b }] });
    await sleep(150);
    const c = await master.cancel(60, 1, 'cancelled');
    assert.deepEqual(c, { found: true });
    await master.assign({ jobId: 61, command: { kind: 'script', text: 'sleep 1; cd "$BUILDER_INPUT" && find . -mindepth 1 | sort' } });
    await master.waitFinish(61);
    assert.equal(master.text(61), '');
  });
});

describe('slave runtime: a stop while an artifact uploads', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-stop-upload-');
  it('stops within the deliver timeout while a large artifact upload to a slow master is under way', async function () {
    const { dir, master } = bed;
    await master.listen(0);
    const rt = await startRuntime(fastRuntimeOptions(dir, master.address, { deliverTimeoutMs: 300 }));
    master.on('peer', (peer) =>
      setImmediate(() =>
        peer.handle('artifact.chunk', async (p) => {
          const a = master.get(p.jobId, p.attempt);
          const r = a.receivers.get(p.path);
          if (r === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'no upload begun');
          a.chunkCalls++;
          await sleep(250);
          await r.write(p.offset, Buffer.from(p.data));
          return {};
        }),
      ),
    );
    master.dropConnections();
    await until(() => master.slave !== undefined && master.subscribes.length >= 2, 'reconnect');
    await sleep(50);
    await master.assign({ jobId: 70, command: { kind: 'script', text: 'head -c 24M /dev/zero > "$BUILDER_OUTPUT/big"' } });
    await until(() => { try { return master.get(70).chunkCalls > 0; } catch { return false; } }, 'the upload to start');
    const report = await rt.shutdown();
    // Stopped at the deliver timeout, not after the whole file (96 chunks of 256 KiB, a quarter
    // second each here): the attempt is kept on disk and its upload resumes at the next start.
    const chunks = master.get(70).chunkCalls;
    await master.close();
    assert.ok(chunks < 48, `${chunks} chunks sent after the deliver timeout of 300 ms`);
    assert.deepEqual(report.kept, ['70-1']);
  });
});
