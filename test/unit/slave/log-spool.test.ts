import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import { LogSpool, SpoolSender, listSpools, spoolDirFor, type LogChunk, type SpoolRecord } from '../../../slave/spool/index.js';

function chunk(seq: number, stream: 'stdout' | 'stderr', text: string): LogChunk {
  return { seq, stream, data: Buffer.from(text) };
}

async function readAll(spool: LogSpool, from = 1): Promise<SpoolRecord[]> {
  const out: SpoolRecord[] = [];
  let next = from;
  for (;;) {
    const recs = await spool.read(next, 1000);
    const last = recs[recs.length - 1];
    if (last === undefined) return out;
    out.push(...recs);
    next = last.seq + 1;
  }
}

function text(recs: readonly SpoolRecord[]): string {
  return recs.map((r) => (r.kind === 'data' ? `${r.seq}:${r.stream}:${r.data.toString()}` : `${r.seq}:${r.kind}`)).join(' ');
}

describe('slave/spool LogSpool', () => {
  let root: string;
  const open_: LogSpool[] = [];
  async function mk(dir = join(root, 'a-1'), opts = {}): Promise<LogSpool> {
    const s = await LogSpool.open(dir, opts);
    open_.push(s);
    return s;
  }
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-spool-'));
  });
  afterEach(async () => {
    for (const s of open_.splice(0)) await s.close();
    await rm(root, { recursive: true, force: true });
  });

  describe('when chunks of both streams are appended', () => {
    it('reads them back in seq order from any seq, with the stream of each', async () => {
      const s = await mk();
      await s.append([chunk(1, 'stdout', 'a'), chunk(2, 'stderr', 'b')]);
      await s.append([chunk(3, 'stdout', 'c')]);
      assert.equal(text(await readAll(s)), '1:stdout:a 2:stderr:b 3:stdout:c');
      assert.equal(text(await readAll(s, 2)), '2:stderr:b 3:stdout:c');
      assert.equal(s.lastSeq, 3);
    });

    it('refuses a seq that does not increase, and a chunk over maxRecordBytes', async () => {
      const s = await mk(undefined, { maxBytes: 4096, segmentBytes: 1024, maxRecordBytes: 100 });
      await s.append([chunk(5, 'stdout', 'x')]);
      await assert.rejects(s.append([chunk(5, 'stdout', 'y')]), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await assert.rejects(s.append([chunk(6, 'stdout', 'z'.repeat(101))]), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      assert.equal(text(await readAll(s)), '5:stdout:x');
    });

    it('limits one read to about maxBytes but always returns at least one record', async () => {
      const s = await mk();
      await s.append([chunk(1, 'stdout', 'x'.repeat(600)), chunk(2, 'stdout', 'y'.repeat(600)), chunk(3, 'stdout', 'z')]);
      const r = await s.read(1, 100);
      assert.deepEqual(r.map((x) => x.seq), [1]);
      assert.deepEqual((await s.read(2, 10_000)).map((x) => x.seq), [2, 3]);
    });
  });

  describe('when the receiver acknowledges', () => {
    it('drops acknowledged segments from disk and never returns acknowledged records', async () => {
      const s = await mk(undefined, { maxBytes: 64 * 1024, segmentBytes: 1024, maxRecordBytes: 512 });
      for (let i = 1; i <= 40; i++) await s.append([chunk(i, 'stdout', 'x'.repeat(200))]);
      const before = (await readdir(s.dir)).filter((n) => n.startsWith('seg-')).length;
      assert.ok(before >= 8, `expected several segments, got ${before}`);
      await s.ack(30);
      const after = (await readdir(s.dir)).filter((n) => n.startsWith('seg-')).length;
      assert.ok(after < before);
      assert.ok(s.bytes < 11 * 216 + 1024, `bytes ${s.bytes}`);
      const recs = await readAll(s, s.ackedSeq + 1);
      assert.deepEqual(recs.map((r) => r.seq), Array.from({ length: 10 }, (_, i) => 31 + i));
      await assert.rejects(s.ack(41), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
    });
  });

  describe('when the slave process restarts', () => {
    it('reopens the spool, keeps unacknowledged records, continues after the last seq and resends from a seq', async () => {
      const dir = join(root, 'job7-2');
      const s = await mk(dir, { maxBytes: 64 * 1024, segmentBytes: 1024, maxRecordBytes: 512 });
      for (let i = 1; i <= 20; i++) await s.append([chunk(i, i % 2 ? 'stdout' : 'stderr', `line${i}`)]);
      await s.ack(12);
      await s.close();
      const r = await mk(dir, { maxBytes: 64 * 1024, segmentBytes: 1024, maxRecordBytes: 512 });
      assert.equal(r.lastSeq, 20);
      assert.equal(r.ackedSeq, 12);
      assert.deepEqual((await readAll(r, 13)).map((x) => x.seq), [13, 14, 15, 16, 17, 18, 19, 20]);
      assert.equal(text(await readAll(r, 19)), '19:stdout:line19 20:stderr:line20');
      await r.append([chunk(21, 'stdout', 'after')]);
      await assert.rejects(r.append([chunk(20, 'stdout', 'again')]), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      assert.equal(await r.end(), 22);
      await r.close();
      const again = await mk(dir);
      assert.equal(again.ended, true);
      assert.equal(text(await readAll(again, 20)), '20:stderr:line20 21:stdout:after 22:end');
      assert.deepEqual(await listSpools(root), [{ jobId: 'job7', attempt: 2, dir }]);
    });

    it('removes a half-written marker left by a crash and keeps the segment it was to replace', async () => {
      const dir = join(root, 'm-1');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'kept')]);
      await s.close();
      const seg = (await readdir(dir)).find((n) => n.startsWith('seg-'))!;
      await writeFile(join(dir, `${seg}.tmp`), 'half a marker');
      const r = await mk(dir);
      assert.equal(text(await readAll(r)), '1:stdout:kept');
      assert.ok(!(await readdir(dir)).some((n) => n.endsWith('.tmp')));
    });

    it('cuts a torn last record instead of replaying it', async () => {
      const dir = join(root, 'j-1');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'whole'), chunk(2, 'stdout', 'torn-record')]);
      await s.close();
      const seg = (await readdir(dir)).find((n) => n.startsWith('seg-'))!;
      const size = (await stat(join(dir, seg))).size;
      const fh = await open(join(dir, seg), 'r+');
      await fh.truncate(size - 3);
      await fh.close();
      const r = await mk(dir);
      assert.equal(r.lastSeq, 1);
      assert.equal(text(await readAll(r)), '1:stdout:whole');
      await r.append([chunk(2, 'stderr', 'new')]);
      assert.equal(text(await readAll(r)), '1:stdout:whole 2:stderr:new');
    });
  });

  describe('when a short log is written, ended and acknowledged as it goes (the usual attempt)', () => {
    it('uses one segment file for its whole life, and no other file', async () => {
      const dir = join(root, 'short-1');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'a')]);
      await s.ack(1);
      await s.append([chunk(2, 'stderr', 'b')]);
      await s.ack(2);
      await s.ack(await s.end());
      assert.equal(s.complete, true);
      assert.equal(s.bytes, 0);
      assert.deepEqual(await readdir(dir), ['seg-0000000001.log']);
    });

    it('remembers the acknowledgement (and so the last seq and the end) in that file across a reopen', async () => {
      const dir = join(root, 'short-2');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'a'), chunk(2, 'stdout', 'b')]);
      const end = await s.end();
      await s.ack(end);
      await s.close();
      const r = await mk(dir);
      assert.equal(r.ackedSeq, 3);
      assert.equal(r.lastSeq, 3);
      assert.equal(r.complete, true);
      assert.deepEqual(await readAll(r), []);
      assert.deepEqual(await readdir(dir), ['seg-0000000001.log']);
    });

    it('keeps other files of its directory (it shares the attempt dir with the journal)', async () => {
      const dir = join(root, 'shared-1');
      await mkdir(dir);
      await writeFile(join(dir, 'attempt.jsonl'), '{}\n');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'a')]);
      await s.ack(1);
      await s.close();
      assert.deepEqual((await readdir(dir)).sort(), ['attempt.jsonl', 'seg-0000000001.log']);
    });

    it('treats a segment without its header (another format) as empty instead of misreading it', async () => {
      const dir = join(root, 'old-1');
      await mkdir(dir);
      await writeFile(join(dir, 'seg-0000000001.log'), Buffer.from('sixteen bytes...and more garbage'));
      const s = await mk(dir);
      assert.equal(s.lastSeq, 0);
      assert.deepEqual(await readAll(s), []);
      await s.append([chunk(1, 'stdout', 'new')]);
      assert.equal(text(await readAll(s)), '1:stdout:new');
    });
  });

  describe('when unacknowledged output goes over maxBytes', () => {
    it('keeps the start and the newest output, replaces the middle with one dropped marker, and stays under the limit', async () => {
      const opts = { maxBytes: 16 * 1024, segmentBytes: 4 * 1024, maxRecordBytes: 1024 };
      const s = await mk(undefined, opts);
      let total = 0;
      for (let i = 1; i <= 200; i++) {
        await s.append([chunk(i, 'stdout', `${String(i).padStart(4, '0')}`.repeat(64))]);
        total += 256;
        assert.ok(s.bytes <= opts.maxBytes, `spool holds ${s.bytes} bytes after seq ${i}`);
      }
      const recs = await readAll(s);
      const markers = recs.filter((r) => r.kind === 'dropped');
      assert.equal(markers.length, 1);
      const m = markers[0]!;
      assert.equal(m.kind, 'dropped');
      const data = recs.filter((r) => r.kind === 'data');
      assert.equal(data[0]?.seq, 1, 'the start of the log is kept');
      assert.equal(data[data.length - 1]?.seq, 200, 'the newest output is kept');
      if (m.kind === 'dropped') {
        const kept = data.reduce((n, r) => n + (r.kind === 'data' ? r.data.length : 0), 0);
        assert.equal(kept + m.droppedBytes, total, 'kept + dropped = written');
        assert.equal(s.droppedBytes, m.droppedBytes);
        // Every seq is either returned or inside the marker's range.
        const seen = new Set(data.map((r) => r.seq));
        for (let i = 1; i <= 200; i++) assert.ok(seen.has(i) || (i >= m.fromSeq && i <= m.toSeq), `seq ${i} unaccounted`);
      }
      // Seqs still increase strictly across the marker.
      for (let i = 1; i < recs.length; i++) assert.ok(recs[i]!.seq > recs[i - 1]!.seq);
    });

    it('refuses options where the kept segments could not fit (segmentBytes > maxBytes / 4)', async () => {
      await assert.rejects(LogSpool.open(join(root, 'x-1'), { maxBytes: 1000, segmentBytes: 500 }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    });
  });

  describe('when a new spool is created over a first segment that is still there', () => {
    it('empties it (same file) and reads back only its own records', async () => {
      const dir = join(root, 'r-1');
      const old = await mk(dir);
      await old.append([chunk(1, 'stdout', 'stale one'), chunk(2, 'stdout', 'stale two')]);
      await old.close();
      const ino = (await stat(join(dir, 'seg-0000000001.log'))).ino;
      const s = await LogSpool.create(dir);
      open_.push(s);
      await s.append([chunk(1, 'stderr', 'fresh')]);
      assert.equal((await stat(join(dir, 'seg-0000000001.log'))).ino, ino);
      assert.equal(text(await readAll(s)), '1:stderr:fresh');
      await s.close();
      assert.equal(text(await readAll(await mk(dir))), '1:stderr:fresh');
    });
  });

  describe('when a SpoolSender pumps the spool to a receiver', () => {
    it('delivers everything in order, survives a failed send by restarting at the receiver\'s seq, and finishes at the end record', async () => {
      const s = await mk(undefined, { maxBytes: 1024 * 1024, segmentBytes: 8 * 1024, maxRecordBytes: 1024 });
      const received = new Map<number, string>();
      let failNext = 3;
      let errors = 0;
      const sender = new SpoolSender(
        s,
        async (recs) => {
          await new Promise((r) => setImmediate(r));
          if (--failNext === 0) throw new Error('connection lost');
          for (const r of recs) if (!received.has(r.seq)) received.set(r.seq, r.kind === 'data' ? r.data.toString() : r.kind);
        },
        {
          maxBatchBytes: 200,
          window: 3,
          onError: () => {
            errors++;
            // The "master" reports the first seq it lacks; restart there.
            let have = 0;
            while (received.has(have + 1)) have++;
            setImmediate(() => sender.start(have + 1));
          },
        },
      );
      sender.start();
      for (let i = 1; i <= 100; i++) await s.append([chunk(i, i % 3 ? 'stdout' : 'stderr', `l${i}-`.padEnd(50, '.'))]);
      await s.end();
      await sender.done;
      assert.equal(errors, 1);
      assert.equal(received.size, 101);
      for (let i = 1; i <= 100; i++) assert.equal(received.get(i), `l${i}-`.padEnd(50, '.'));
      assert.equal(received.get(101), 'end');
      assert.equal(s.complete, true);
      assert.ok(s.bytes === 0, `acknowledged data should be gone, ${s.bytes} bytes left`);
    });

    it('with holdEnd, never sends the end record and is done once everything before it is acknowledged (also for a log that is only its end)', async () => {
      for (const lines of [3, 0]) {
        const s = await mk(join(root, `h-${lines}`));
        const sent: string[] = [];
        const sender = new SpoolSender(
          s,
          async (recs) => {
            await new Promise((r) => setImmediate(r));
            for (const r of recs) sent.push(r.kind === 'data' ? r.data.toString() : r.kind);
          },
          { holdEnd: true },
        );
        sender.start();
        for (let i = 1; i <= lines; i++) await s.append([chunk(i, 'stdout', `l${i}`)]);
        const end = await s.end();
        await sender.done;
        assert.deepEqual(sent, Array.from({ length: lines }, (_, i) => `l${i + 1}`));
        assert.equal(end, lines + 1);
        assert.equal(s.ackedSeq, lines, 'acknowledged through the record before the end');
        assert.equal(s.complete, false, 'the end is left to the caller');
        await s.ack(end);
        assert.equal(s.complete, true);
      }
    });
  });

  describe('when it is closed twice at once', () => {
    it('resolves both calls (the second gets the first one\'s close), and the spool is closed after either', async () => {
      const s = await mk();
      await s.append([chunk(1, 'stdout', 'a')]);
      const first = s.close();
      const second = s.close();
      await Promise.all([first, second]);
      assert.equal(s.isClosed, true);
      await s.close();
      await assert.rejects(s.append([chunk(2, 'stdout', 'b')]), (e) => isBuilderError(e, 'BUILDER_ERR_BAD_STATE'));
    });
  });

  describe('when the segment header cannot be written (a file size limit of 0: every write fails with EFBIG)', () => {
    // A child process under `ulimit -f 0` (Node ignores SIGXFSZ, so the write fails instead of
    // killing it) opens the spool and lists its own descriptors that still point into the dir.
    const spoolModule = new URL('../../../slave/spool/index.js', import.meta.url).href;
    function underNoWrites(how: 'create' | 'open', dir: string): Promise<{ code: string; leaked: string[] }> {
      const script = `
        import { readdirSync, readlinkSync } from 'node:fs';
        import { LogSpool } from ${JSON.stringify(spoolModule)};
        const dir = ${JSON.stringify(dir)};
        let code = 'none';
        try { await LogSpool.${how}(dir); } catch (e) { code = e.code; }
        const leaked = readdirSync('/proc/self/fd').flatMap((f) => {
          try { const t = readlinkSync('/proc/self/fd/' + f); return t.startsWith(dir + '/') ? [t] : []; } catch { return []; }
        });
        process.stdout.write(JSON.stringify({ code, leaked }));`;
      return new Promise((resolve, reject) => {
        execFile('sh', ['-c', 'ulimit -f 0 && exec "$0" --input-type=module -e "$1"', process.execPath, script], { timeout: 20_000 }, (err, stdout, stderr) => {
          if (err !== null) reject(new Error(`${err.message}\n${stderr}`));
          else resolve(JSON.parse(stdout) as { code: string; leaked: string[] });
        });
      });
    }

    it('create fails with the write error and leaves no descriptor open', async () => {
      const dir = join(root, 'c-1');
      await mkdir(dir);
      assert.deepEqual(await underNoWrites('create', dir), { code: 'EFBIG', leaked: [] });
    });

    it('open of an existing spool fails with the write error and leaves no descriptor open', async () => {
      const dir = join(root, 'o-1');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'kept')]);
      await s.close();
      assert.deepEqual(await underNoWrites('open', dir), { code: 'EFBIG', leaked: [] });
      assert.equal(text(await readAll(await mk(dir))), '1:stdout:kept');
    });
  });

  describe('when the disk is full (a 64 KiB tmpfs; needs root)', () => {
    let mnt: string;
    let mounted = false;
    beforeEach(async function () {
      mnt = join(root, 'mnt');
      await mkdir(mnt);
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { stdio: 'ignore' });
        mounted = true;
      } catch {
        this.skip();
      }
    });
    afterEach(async () => {
      for (const s of open_.splice(0)) await s.close();
      if (mounted) execFileSync('umount', [mnt]);
      mounted = false;
    });

    /** Fills what is left of the file system. */
    async function fill(): Promise<void> {
      await assert.rejects(writeFile(join(mnt, 'filler'), Buffer.alloc(128 * 1024)), /ENOSPC/);
    }

    it('an append that does not fit stores none of its chunks, and the log still ends (with the loss marked) and is delivered', async () => {
      const dir = join(mnt, 'a-1');
      const s = await mk(dir);
      await s.append([chunk(1, 'stdout', 'hello\n')]);
      const before = (await stat(join(dir, 'seg-0000000001.log'))).size;
      await assert.rejects(s.append([chunk(2, 'stderr', 'x'), { seq: 3, stream: 'stdout', data: Buffer.alloc(200 * 1024, 0x61) }]), /ENOSPC/);
      assert.equal(s.lastSeq, 1);
      assert.equal((await stat(join(dir, 'seg-0000000001.log'))).size, before, 'the partial write is cut off');
      const end = await s.end({ toSeq: 3, droppedBytes: 200 * 1024 + 1 });
      assert.equal(end, 4);
      assert.equal(s.endInMemory, false);
      const recs = await readAll(s);
      assert.equal(text(recs), '1:stdout:hello\n 3:dropped 4:end');
      assert.deepEqual(recs[1], { kind: 'dropped', seq: 3, fromSeq: 2, toSeq: 3, droppedBytes: 200 * 1024 + 1 });
      // What the slave's sender does with it: everything before the end is sent, and it is done.
      const sent: SpoolRecord[] = [];
      const sender = new SpoolSender(s, async (r) => void sent.push(...r), { holdEnd: true });
      sender.start(1);
      await sender.done;
      assert.equal(text(sent), '1:stdout:hello\n 3:dropped');
      // A reopen reads the marker as part of the log, not as a dropped segment.
      await s.close();
      const again = await mk(dir);
      assert.equal(again.ended, true);
      assert.equal(again.droppedBytes, 0);
      assert.equal(text(await readAll(again, 4)), '4:end');
    });

    it('an append that fails in a segment it started removes that segment, and appends go on once there is room', async () => {
      const dir = join(mnt, 'a-1');
      const s = await mk(dir, { maxBytes: 1024 * 1024, segmentBytes: 8 * 1024, maxRecordBytes: 8 * 1024 });
      await s.append([chunk(1, 'stdout', 'first')]);
      const big = Array.from({ length: 12 }, (_, i): LogChunk => ({ seq: i + 2, stream: 'stdout', data: Buffer.alloc(8 * 1024, 0x62) }));
      await assert.rejects(s.append(big), /ENOSPC/);
      assert.equal(s.lastSeq, 1);
      assert.deepEqual(await readdir(dir), ['seg-0000000001.log']);
      await s.append([chunk(14, 'stdout', 'after')]);
      await s.end();
      assert.equal(text(await readAll(s)), '1:stdout:first 14:stdout:after 15:end');
    });

    it('an end that cannot be written is kept in memory: read, acknowledged, and the spool complete', async () => {
      const dir = join(mnt, 'a-1');
      const s = await mk(dir);
      // The segment ends at a page boundary (16 + 16 + 4064 bytes): the end needs a new page.
      await s.append([{ seq: 1, stream: 'stdout', data: Buffer.alloc(4064, 0x63) }]);
      await fill();
      const end = await s.end({ toSeq: 2, droppedBytes: 10 });
      assert.equal(end, 3);
      assert.equal(s.endInMemory, true);
      assert.equal((await stat(join(dir, 'seg-0000000001.log'))).size, 4096);
      assert.equal(text(await readAll(s)), `1:stdout:${'c'.repeat(4064)} 2:dropped 3:end`);
      const sent: SpoolRecord[] = [];
      const sender = new SpoolSender(s, async (r) => void sent.push(...r), { holdEnd: true });
      sender.start(1);
      await sender.done;
      assert.deepEqual(sent.map((r) => `${r.seq}:${r.kind}`), ['1:data', '2:dropped']);
      await s.ack(end);
      assert.equal(s.complete, true);
      assert.equal(s.endInMemory, false);
      assert.deepEqual(await s.read(1), []);
    });
  });

  it('spoolDirFor refuses a job id that would escape the spool root', () => {
    assert.throws(() => spoolDirFor(root, '../x', 1), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'));
    assert.throws(() => spoolDirFor(root, 'ok', 0), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
  });
});
