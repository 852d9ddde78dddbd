import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AttemptFiles, type StoredOutcome } from '../../../slave/runtime/attempt-files.js';

const outcome: StoredOutcome = { state: 'succeeded', exitCode: 0, signal: null, reason: null, setupFailure: false, refused: [], conflicts: [], artifacts: [{ path: 'a.deb', absPath: '/w/a.deb', size: 3, sha256: 'ab'.repeat(32) }], lastSeq: 4 };

describe('slave/runtime AttemptFiles (the attempt journal)', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-journal-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  describe('when an attempt is accepted, runs, ends and uploads', () => {
    it('keeps everything in one journal file and reads it back', async () => {
      const f = new AttemptFiles(root, 12, 2);
      await f.create({ jobId: 12, attempt: 2, slots: 3, name: 'pkg', acceptedAt: 1000 });
      await Promise.all([f.writePid(4242, '987'), f.writeOutcome(outcome)]);
      await f.appendUpload({ path: 'a.deb', size: 3, sha256: 'ab'.repeat(32) });
      await f.close();
      assert.deepEqual(await readdir(f.dir), ['attempt.jsonl']);
      const j = await new AttemptFiles(root, 12, 2).load();
      assert.deepEqual(j.record, { jobId: 12, attempt: 2, slots: 3, name: 'pkg', acceptedAt: 1000 });
      assert.deepEqual(j.pid, { pid: 4242, startTime: '987' });
      assert.deepEqual(j.outcome, outcome);
      assert.deepEqual([...j.uploads.values()], [{ path: 'a.deb', size: 3, sha256: 'ab'.repeat(32) }]);
    });
  });

  describe('when the slave died in the middle of an append', () => {
    it('ignores the torn last line, cuts it before appending again, and reads the new lines', async () => {
      const f = new AttemptFiles(root, 7, 1);
      await f.create({ jobId: 7, attempt: 1, slots: 1, name: 'x', acceptedAt: 1 });
      await f.writeOutcome(outcome);
      await f.close();
      // Half of an upload line: the crash came mid-write.
      await appendFile(f.journalPath, JSON.stringify({ t: 'upload', path: 'a.deb', size: 3, sha256: 'ab'.repeat(32) }).slice(0, 30));
      const again = new AttemptFiles(root, 7, 1);
      const j = await again.load();
      assert.equal(j.outcome?.state, 'succeeded');
      assert.equal(j.uploads.size, 0, 'the torn upload line does not count');
      await again.reopen();
      await again.appendUpload({ path: 'a.deb', failed: 'changed', detail: 'x' });
      await again.close();
      const text = await readFile(again.journalPath, 'utf8');
      assert.ok(text.endsWith('\n') && text.split('\n').every((l) => l === '' || JSON.parse(l) !== undefined), `every line is whole JSON:\n${text}`);
      assert.deepEqual([...(await again.load()).uploads.values()], [{ path: 'a.deb', failed: 'changed', detail: 'x' }]);
    });

    it('reports no outcome when the outcome line itself is torn (the attempt counts as still running)', async () => {
      const f = new AttemptFiles(root, 8, 1);
      await f.create({ jobId: 8, attempt: 1, slots: 1, name: 'x', acceptedAt: 1 });
      await f.writePid(999999, undefined);
      await f.close();
      await appendFile(f.journalPath, JSON.stringify({ t: 'outcome', outcome }).slice(0, -5));
      const j = await new AttemptFiles(root, 8, 1).load();
      assert.equal(j.outcome, undefined);
      assert.deepEqual(j.pid, { pid: 999999, startTime: undefined });
    });
  });

  describe('when the disk fills up in the middle of an append', () => {
    it('cuts the partial line back, so the next append after space came back is read', async function () {
      // A real full file system: a 64 KiB tmpfs (needs root and mount; skipped where not allowed).
      const mnt = join(root, 'small');
      await mkdir(mnt);
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { stdio: 'ignore' });
      } catch {
        this.skip();
      }
      try {
        const f = new AttemptFiles(mnt, 7, 1);
        await f.create({ jobId: 7, attempt: 1, slots: 1, name: 'full', acceptedAt: 1 });
        // Fill the file system, then free one page: the next big line is written in part, then fails.
        const filler = await open(join(mnt, 'filler'), 'w');
        const page = Buffer.alloc(4096, 1);
        try {
          for (;;) await filler.write(page);
        } catch (e) {
          assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
        }
        const { size } = await filler.stat();
        await filler.truncate(size - 4096);
        await assert.rejects(f.appendUpload({ path: 'x'.repeat(3 * 4096), size: 1, sha256: 'ab'.repeat(32) }), /ENOSPC/);
        await filler.close();
        await rm(join(mnt, 'filler'));
        await f.appendUpload({ path: 'after.deb', size: 3, sha256: 'cd'.repeat(32) });
        await f.close();
        const text = await readFile(join(f.dir, 'attempt.jsonl'), 'utf8');
        assert.equal(text.split('\n').length, 3, `two whole lines and nothing glued:\n${text.slice(0, 300)}`);
        const j = await new AttemptFiles(mnt, 7, 1).load();
        assert.deepEqual([...j.uploads.keys()], ['after.deb']);
      } finally {
        execFileSync('umount', [mnt], { stdio: 'ignore' });
      }
    });
  });

  describe('when the journal holds lines it does not expect', () => {
    it('ignores garbage, unknown kinds and an accepted line of another attempt', async () => {
      const dir = join(root, '9-1');
      await mkdir(dir);
      const lines = ['not json', '{"t":"weird"}', JSON.stringify({ t: 'accepted', jobId: 10, attempt: 1, slots: 1 }), JSON.stringify({ t: 'pid', pid: 1 }), JSON.stringify({ t: 'outcome', outcome: { state: 'failed' } })];
      await writeFile(join(dir, 'attempt.jsonl'), lines.join('\n') + '\n');
      const j = await new AttemptFiles(root, 9, 1).load();
      assert.deepEqual(j, { record: undefined, pid: undefined, outcome: undefined, uploads: new Map() });
    });

    it('still finds the pid of an attempt dir an older slave version left (to kill its leftovers)', async () => {
      const dir = join(root, '3-1');
      await mkdir(dir);
      await writeFile(join(dir, 'attempt.json'), '{}');
      await writeFile(join(dir, 'pid'), '12345 678\n');
      const j = await new AttemptFiles(root, 3, 1).load();
      assert.equal(j.record, undefined);
      assert.deepEqual(j.pid, { pid: 12345, startTime: '678' });
    });
  });
});
