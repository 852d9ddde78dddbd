import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SlaveRuntime } from '../../../slave/index.js';
import { attemptDirs, fastRuntimeOptions, slaveTestBed, startRuntime, stopRuntime, until } from './helpers/setup.js';
import type { TestMaster } from './helpers/test-master.js';

describe('slave runtime: a disk that fills while a job writes its log (attempts on a 96 KiB tmpfs; needs root)', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-disk-full-');
  let dir: string;
  let master: TestMaster;
  let rt: SlaveRuntime | undefined;
  let mnt: string | undefined;
  const pids: number[] = [];

  beforeEach(async function () {
    ({ dir, master } = bed);
    await master.listen(0);
    const attempts = join(dir, 'attempts');
    await mkdir(attempts, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=96k', 'tmpfs', attempts], { stdio: 'ignore' });
      mnt = attempts;
    } catch {
      this.skip();
    }
  });
  afterEach(async function () {
    const r = rt;
    rt = undefined;
    await stopRuntime(r, pids);
    await master.close();
    if (mnt !== undefined) execFileSync('umount', [mnt]);
    mnt = undefined;
  });

  describe('when a batch of output does not fit', function () {
    it('marks the output it could not store as dropped, ends the log and reports the attempt', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { executor: { killGraceMs: 500, pipeCloseTimeoutMs: 500, flushIntervalMs: 20, batchBytes: 200 * 1024 } }));
      await master.assign({ jobId: 70, command: { kind: 'script', text: "echo hello; sleep 0.3; head -c 400000 /dev/zero | tr '\\0' a; echo; echo bye" } });
      const a = await master.waitFinish(70, 1, 20_000);
      assert.equal(master.text(70), 'hello\n');
      const [first, dropped, end] = a.records;
      assert.equal(a.records.length, 3);
      assert.deepEqual(first, { kind: 'data', seq: 1, stream: 'stdout', data: Buffer.from('hello\n') });
      assert.ok(dropped?.kind === 'dropped' && dropped.fromSeq === 2 && dropped.toSeq === dropped.seq, JSON.stringify(dropped));
      assert.equal(dropped.droppedBytes, 400_000 + 1 + 4, 'every byte of output after "hello" is counted');
      assert.deepEqual(end, { kind: 'end', seq: dropped.seq + 1 });
      assert.equal(a.finish!.logEnd, end.seq);
      assert.equal(a.finish!.state, 'succeeded');
      assert.match(a.finish!.reason ?? '', /400005 bytes of output lost on the slave \(ENOSPC\)/);
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
      assert.deepEqual(await attemptDirs(dir), []);
    });
  });

  describe('when the disk stays full, so that not even the end of the log can be written', function () {
    it('delivers the end from memory and reports the attempt', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      // The master stores slowly: the first output stays in the spool until the log has ended.
      master.logDelayMs = 1_500;
      // 4,064 bytes in one record fill the segment to a page boundary (16 + 16 + 4,064): on a full
      // tmpfs, any record after them needs a page that is not there.
      await master.assign({ jobId: 71, command: { kind: 'script', text: "head -c 4064 /dev/zero | tr '\\0' c; sleep 0.5; echo more" } });
      const segment = join(mnt!, '71-1', 'seg-0000000001.log');
      await until(async () => (await stat(segment).catch(() => undefined))?.size === 4096, 'the first output in the spool');
      await assert.rejects(writeFile(join(mnt!, 'filler'), Buffer.alloc(128 * 1024)), /ENOSPC/);
      const a = await master.waitFinish(71, 1, 20_000);
      assert.deepEqual(
        a.records.map((r) => `${r.seq}:${r.kind}`),
        ['1:data', '2:dropped', '3:end'],
      );
      assert.match(a.finish!.reason ?? '', /5 bytes of output lost on the slave \(ENOSPC\)/);
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
    });
  });
});
