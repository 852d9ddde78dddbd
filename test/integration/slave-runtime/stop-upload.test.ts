import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuilderError } from '../../../protocol/index.js';
import { fastRuntimeOptions, slaveTestBed, startRuntime, until } from './helpers/setup.js';

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
