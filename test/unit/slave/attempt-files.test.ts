import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AttemptDirPool, AttemptFiles, listAttemptDirs, type StoredOutcome } from '../../../slave/runtime/attempt-files.js';
import { LogSpool } from '../../../slave/spool/index.js';

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

  describe('when attempt dirs are recycled through a pool', () => {
    it('keeps a finished attempt dir emptied, and the next attempt reuses it (same inodes) with only its own lines and log', async () => {
      const pool = new AttemptDirPool(root, 2);
      const a = new AttemptFiles(root, 1, 1, pool);
      await a.create({ jobId: 1, attempt: 1, slots: 1, name: 'first', acceptedAt: 1 });
      await a.writePid(4242, '987');
      await a.writeOutcome(outcome);
      const spoolA = await LogSpool.create(a.spoolDir);
      await spoolA.append([{ seq: 1, stream: 'stdout', data: Buffer.from('old output') }]);
      await spoolA.end();
      await spoolA.close();
      const journalIno = (await stat(a.journalPath)).ino;
      const segIno = (await stat(join(a.dir, 'seg-0000000001.log'))).ino;
      await a.remove();
      // Emptied and renamed to a name the recovery scan ignores.
      const names = await readdir(root);
      assert.deepEqual(names, ['.recycled.1']);
      assert.deepEqual(await listAttemptDirs(root), []);
      for (const f of await readdir(join(root, '.recycled.1'))) assert.equal((await stat(join(root, '.recycled.1', f))).size, 0, f);
      assert.equal(pool.size, 1);

      const b = new AttemptFiles(root, 2, 1, pool);
      await b.create({ jobId: 2, attempt: 1, slots: 2, name: 'second', acceptedAt: 2 });
      const spoolB = await LogSpool.create(b.spoolDir);
      await spoolB.append([{ seq: 1, stream: 'stderr', data: Buffer.from('new') }]);
      await spoolB.close();
      await b.close();
      assert.equal(pool.size, 0);
      assert.deepEqual(await readdir(root), ['2-1']);
      assert.equal((await stat(b.journalPath)).ino, journalIno, 'the journal inode is reused');
      assert.equal((await stat(join(b.dir, 'seg-0000000001.log'))).ino, segIno, 'the segment inode is reused');
      const j = await new AttemptFiles(root, 2, 1).load();
      assert.deepEqual(j.record, { jobId: 2, attempt: 1, slots: 2, name: 'second', acceptedAt: 2 });
      assert.equal(j.pid, undefined, 'nothing of the first attempt is left');
      assert.equal(j.outcome, undefined);
      const reopened = await LogSpool.open(b.spoolDir);
      const recs = await reopened.read(1);
      await reopened.close();
      assert.deepEqual(recs.map((r) => (r.kind === 'data' ? `${r.seq}:${r.stream}:${r.data.toString()}` : r.kind)), ['1:stderr:new']);
      assert.equal(reopened.ended, false);
    });

    it('removes anything else a recycled dir holds before reusing it, and removes dirs once the pool is full', async () => {
      const pool = new AttemptDirPool(root, 1);
      const a = new AttemptFiles(root, 1, 1, pool);
      await a.create({ jobId: 1, attempt: 1, slots: 1, name: 'a', acceptedAt: 1 });
      const b = new AttemptFiles(root, 2, 1, pool);
      await b.create({ jobId: 2, attempt: 1, slots: 1, name: 'b', acceptedAt: 1 });
      // A second segment (a log over 4 MiB) and a stray file: not kept for the next attempt.
      await writeFile(join(a.dir, 'seg-0000000002.log'), 'x'.repeat(100));
      await a.remove();
      await b.remove();
      assert.deepEqual((await readdir(root)).sort(), ['.recycled.1'], 'the pool holds one dir; the other was removed');
      assert.deepEqual(await readdir(join(root, '.recycled.1')), ['attempt.jsonl']);
      await writeFile(join(root, '.recycled.1', 'stray'), 'x');
      const c = new AttemptFiles(root, 3, 1, pool);
      await c.create({ jobId: 3, attempt: 1, slots: 1, name: 'c', acceptedAt: 1 });
      await c.close();
      assert.deepEqual(await readdir(c.dir), ['attempt.jsonl']);
    });

    it('does not reuse a recycled dir over an older run of the same attempt that still has files, and starts fresh instead', async () => {
      const pool = new AttemptDirPool(root, 2);
      const a = new AttemptFiles(root, 1, 1, pool);
      await a.create({ jobId: 1, attempt: 1, slots: 1, name: 'a', acceptedAt: 1 });
      await a.remove();
      await mkdir(join(root, '5-1'));
      await writeFile(join(root, '5-1', 'attempt.jsonl'), JSON.stringify({ t: 'pid', pid: 77, startTime: null }) + '\n');
      const b = new AttemptFiles(root, 5, 1, pool);
      await b.create({ jobId: 5, attempt: 1, slots: 1, name: 'b', acceptedAt: 9 });
      await b.close();
      const j = await new AttemptFiles(root, 5, 1).load();
      assert.equal(j.pid, undefined);
      assert.equal(j.record?.acceptedAt, 9);
      assert.equal(pool.size, 1, 'the recycled dir stays in the pool');
    });

    it('clears the recycled dirs a previous process left (at start-up)', async () => {
      await mkdir(join(root, '.recycled.4'));
      await writeFile(join(root, '.recycled.4', 'attempt.jsonl'), 'x');
      await mkdir(join(root, '3-1'));
      const pool = new AttemptDirPool(root, 4);
      assert.equal(await pool.clear(), 1);
      assert.deepEqual(await readdir(root), ['3-1']);
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
