import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import {
  ArtifactReceiver,
  MAX_REFUSED_KEPT,
  artifactKind,
  collectArtifacts,
  indexFiles,
  readChunk,
  uploadArtifact,
  type UploadTarget,
} from '../../../slave/artifacts/index.js';
import { MAX_PARKED_CHUNKS } from '../../../protocol/transfer/index.js';

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** An UploadTarget straight onto a receiver, with hooks to fail or reorder. */
function directTarget(root: string, opts: { failAt?: number; reorder?: boolean; corrupt?: boolean } = {}): UploadTarget & { receiver?: ArtifactReceiver; calls: number } {
  const t: UploadTarget & { receiver?: ArtifactReceiver; calls: number } = {
    calls: 0,
    async begin(info) {
      t.receiver = await ArtifactReceiver.open(root, info.path, { size: info.size, sha256: info.sha256 }, { maxChunkBytes: 64 * 1024, maxPendingBytes: 1024 * 1024 });
      return { offset: t.receiver.offset };
    },
    async sendChunk(offset, data) {
      t.calls++;
      if (opts.failAt !== undefined && t.calls === opts.failAt) throw new Error('connection reset');
      if (opts.reorder && t.calls % 2 === 1) await new Promise((r) => setTimeout(r, 1));
      const d = opts.corrupt && t.calls === 2 ? Buffer.from(data).fill(0) : data;
      await t.receiver!.write(offset, d);
    },
    async finish() {
      return t.receiver!.finish();
    },
  };
  return t;
}

describe('slave/artifacts', () => {
  let root: string;
  const servers: Server[] = [];
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-artifacts-'));
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    await rm(root, { recursive: true, force: true });
  });

  describe('when collecting an output dir', () => {
    it('takes every regular file with its sha256 and kind, and refuses symlinks, FIFOs, sockets and bad names without following them', async () => {
      const out = join(root, 'output');
      const outside = join(root, 'secret');
      await mkdir(join(out, 'sub/deeper'), { recursive: true });
      await mkdir(outside);
      await writeFile(join(outside, 'key'), 'PRIVATE');
      await writeFile(join(out, 'hello_1.0_amd64.deb'), 'deb!');
      await writeFile(join(out, 'sub/foo-1.0-1.src.rpm'), 'srpm');
      await writeFile(join(out, 'sub/deeper/disk.img'), 'image');
      await writeFile(join(out, 'bad\\name'), 'x');
      await writeFile(join(out, 'ctl\u0001char'), 'x');
      await symlink(join(outside, 'key'), join(out, 'link-to-key'));
      await symlink('../secret', join(out, 'escape-dir'));
      await symlink('/etc/passwd', join(out, 'sub/passwd'));
      execFileSync('mkfifo', [join(out, 'pipe')]);
      const sockPath = join(out, 'sock');
      const srv = createServer();
      servers.push(srv);
      await new Promise<void>((r) => srv.listen(sockPath, r));

      const scan = await collectArtifacts(out);
      assert.deepEqual(
        scan.artifacts.map((a) => [a.path, a.size, a.sha256, a.kind]),
        [
          ['hello_1.0_amd64.deb', 4, sha('deb!'), 'package'],
          ['sub/deeper/disk.img', 5, sha('image'), 'image'],
          ['sub/foo-1.0-1.src.rpm', 4, sha('srpm'), 'package'],
        ],
      );
      const refused = Object.fromEntries(scan.refused.map((r) => [r.path, r.reason]));
      assert.deepEqual(refused, {
        '"bad\\\\name"': 'invalid-name',
        '"ctl\\u0001char"': 'invalid-name',
        'escape-dir': 'symlink',
        'link-to-key': 'symlink',
        pipe: 'fifo',
        sock: 'socket',
        'sub/passwd': 'symlink',
      });
      assert.ok(!scan.artifacts.some((a) => a.sha256 === sha('PRIVATE')), 'nothing outside the output dir is read');
    });

    it('reports an artifact that has an input file\'s name but other content, and not one with the same content', async () => {
      const input = join(root, 'input');
      const out = join(root, 'output');
      await mkdir(join(input, 'src'), { recursive: true });
      await mkdir(join(out, 'src'), { recursive: true });
      await writeFile(join(input, 'src/a.tar.gz'), 'original');
      await writeFile(join(input, 'same.txt'), 'same');
      await writeFile(join(out, 'src/a.tar.gz'), 'tampered');
      await writeFile(join(out, 'same.txt'), 'same');
      const inputs = await indexFiles(input);
      const scan = await collectArtifacts(out, { inputs });
      assert.deepEqual(scan.conflicts, [{ path: 'src/a.tar.gz', inputSha256: sha('original'), artifactSha256: sha('tampered') }]);
      assert.equal(scan.artifacts.length, 2, 'a conflicting artifact is still an artifact, reported');
    });

    it('enforces maxFiles, maxDepth and maxFileBytes, each with its own reason', async () => {
      const out = join(root, 'output');
      await mkdir(join(out, 'a/b/c'), { recursive: true });
      for (const n of ['1', '2', '3']) await writeFile(join(out, n), n);
      await writeFile(join(out, 'a/b/c/deep'), 'd');
      await writeFile(join(out, 'big'), Buffer.alloc(100));
      const scan = await collectArtifacts(out, { maxFiles: 2, maxDepth: 2, maxFileBytes: 50 });
      assert.deepEqual(scan.artifacts.map((a) => a.path), ['1', '2']);
      assert.deepEqual(
        scan.refused.map((r) => [r.path, r.reason]),
        [
          ['3', 'too-many-files'],
          ['a/b/c', 'too-deep'],
          ['big', 'too-large'],
        ],
      );
    });

    it('lists at most MAX_REFUSED_KEPT refused entries, the last saying how many more there were', async () => {
      const out = join(root, 'output');
      await mkdir(out);
      const n = MAX_REFUSED_KEPT + 500;
      for (let i = 0; i < n; i++) await symlink('/etc/passwd', join(out, `l${String(i).padStart(5, '0')}`));
      const scan = await collectArtifacts(out);
      assert.equal(scan.refused.length, MAX_REFUSED_KEPT);
      assert.deepEqual(scan.refused[0], { path: 'l00000', reason: 'symlink', detail: '-> "/etc/passwd"' });
      assert.deepEqual(scan.refused.at(-1), { path: '…', reason: 'too-many-refusals', detail: `${n - (MAX_REFUSED_KEPT - 1)} more entries not listed` });
    });

    it('refuses files another user owns when ownerUid is set (a hard link to the slave\'s files)', async () => {
      const out = join(root, 'output');
      await mkdir(out);
      await writeFile(join(out, 'mine'), 'x');
      const uid = process.getuid!();
      assert.deepEqual((await collectArtifacts(out, { ownerUid: uid })).artifacts.map((a) => a.path), ['mine']);
      const scan = await collectArtifacts(out, { ownerUid: uid + 1 });
      assert.deepEqual(scan.artifacts, []);
      assert.deepEqual(scan.refused.map((r) => [r.path, r.reason]), [['mine', 'foreign-owner']]);
    });

    it('refuses an output dir that the job replaced with a symlink or a file, and takes a missing one as empty', async () => {
      await symlink('/', join(root, 'out-link'));
      assert.deepEqual(await collectArtifacts(join(root, 'out-link')), { artifacts: [], refused: [{ path: '.', reason: 'symlink' }], conflicts: [] });
      await writeFile(join(root, 'out-file'), 'x');
      assert.deepEqual(await collectArtifacts(join(root, 'out-file')), { artifacts: [], refused: [{ path: '.', reason: 'not-a-directory' }], conflicts: [] });
      assert.deepEqual(await collectArtifacts(join(root, 'missing')), { artifacts: [], refused: [], conflicts: [] });
    });

    it('names .deb, .udeb, .rpm, .src.rpm and .dsc packages and everything else images', () => {
      for (const p of ['a.deb', 'x/b.udeb', 'c.rpm', 'd.src.rpm', 'e.dsc', 'F.DEB']) assert.equal(artifactKind(p), 'package', p);
      for (const p of ['a.tar.gz', 'disk.img', 'a.deb.sig', 'rpm']) assert.equal(artifactKind(p), 'image', p);
    });
  });

  describe('when uploading through the windowed uploader into a receiver', () => {
    let srcFile: string;
    let data: Buffer;
    beforeEach(async () => {
      data = randomBytes(1024 * 1024 + 123);
      srcFile = join(root, 'src.bin');
      await writeFile(srcFile, data);
      await mkdir(join(root, 'store'));
    });
    const src = (): { absPath: string; path: string; size: number; sha256: string } => ({ absPath: srcFile, path: 'dir/out.bin', size: data.length, sha256: sha(data) });

    it('delivers the file byte for byte, with chunks completing out of order', async () => {
      const t = directTarget(join(root, 'store'), { reorder: true });
      const res = await uploadArtifact(src(), t, { chunkBytes: 64 * 1024, window: 6 });
      assert.equal(res.resumedAt, 0);
      assert.equal(res.bytesSent, data.length);
      assert.ok((await readFile(join(root, 'store/dir/out.bin'))).equals(data));
    });

    it('resumes after a failed chunk at the offset the receiver reports, sending only the rest', async () => {
      const store = join(root, 'store');
      const t1 = directTarget(store, { failAt: 7 });
      await assert.rejects(uploadArtifact(src(), t1, { chunkBytes: 64 * 1024, window: 4 }), /connection reset/);
      await t1.receiver!.abort(true);
      const t2 = directTarget(store);
      const res = await uploadArtifact(src(), t2, { chunkBytes: 64 * 1024, window: 4 });
      assert.ok(res.resumedAt >= 6 * 64 * 1024, `resumed at ${res.resumedAt}`);
      assert.equal(res.bytesSent, data.length - res.resumedAt);
      assert.ok((await readFile(join(store, 'dir/out.bin'))).equals(data));
    });

    it('fails with BUILDER_ERR_CHECKSUM when the bytes are corrupted in transit, and leaves no file', async () => {
      const store = join(root, 'store');
      await assert.rejects(uploadArtifact(src(), directTarget(store, { corrupt: true }), { chunkBytes: 64 * 1024 }), (e) => isBuilderError(e, 'BUILDER_ERR_CHECKSUM'));
      await assert.rejects(stat(join(store, 'dir/out.bin')), { code: 'ENOENT' });
      await assert.rejects(stat(join(store, 'dir/out.bin.part')), { code: 'ENOENT' });
    });

    it('fails with BUILDER_ERR_CHECKSUM when the file changed since collection', async () => {
      const s = src();
      const other = Buffer.from(data);
      other[5] = other[5]! ^ 0xff;
      await writeFile(srcFile, other);
      const t = directTarget(join(root, 'store'));
      await assert.rejects(uploadArtifact(s, t, { chunkBytes: 64 * 1024 }), (e) => isBuilderError(e, 'BUILDER_ERR_CHECKSUM'));
      await t.receiver!.abort();
    });

    it('readChunk reads a slice and a short tail', async () => {
      assert.ok((await readChunk(srcFile, 10, 100)).equals(data.subarray(10, 110)));
      assert.equal((await readChunk(srcFile, data.length - 3, 100)).length, 3);
    });
  });

  describe('when a receiver gets bad input', () => {
    const meta = { size: 10, sha256: sha('0123456789') };
    it('refuses escaping names, oversize declarations, chunks past the size, oversize chunks and too much ahead of a gap', async () => {
      const store = join(root, 'store');
      await mkdir(store);
      for (const p of ['../x', '/etc/passwd', 'a/../../x', 'a\\..\\x', 'a\0b']) {
        await assert.rejects(ArtifactReceiver.open(store, p, meta), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'), p);
      }
      await assert.rejects(ArtifactReceiver.open(store, 'big', { size: 11, sha256: meta.sha256 }, { maxBytes: 10 }), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      const r = await ArtifactReceiver.open(store, 'f', meta, { maxChunkBytes: 4, maxPendingBytes: 4 });
      await assert.rejects(r.write(8, Buffer.from('abc')), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await assert.rejects(r.write(0, Buffer.from('01234')), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await r.write(4, Buffer.from('4567'));
      await assert.rejects(r.write(8, Buffer.from('89')), (e) => isBuilderError(e, 'BUILDER_ERR_TOO_MANY_IN_FLIGHT'));
      await assert.rejects(r.finish(), (e) => isBuilderError(e, 'BUILDER_ERR_BAD_STATE'));
      await r.write(0, Buffer.from('0123'));
      await r.write(8, Buffer.from('89'));
      await r.write(2, Buffer.from('23')); // a resend below the offset is ignored
      assert.equal((await r.finish()).sha256, meta.sha256);
      assert.equal(await readFile(join(store, 'f'), 'utf8'), '0123456789');
      await assert.rejects(ArtifactReceiver.open(store, 'f', meta), (e) => isBuilderError(e, 'BUILDER_ERR_CONFLICT'));
    });

    it('refuses empty chunks, and parks at most MAX_PARKED_CHUNKS chunks ahead of a gap however small', async () => {
      const store = join(root, 'store');
      await mkdir(store);
      const size = 4 * MAX_PARKED_CHUNKS;
      const data = Buffer.alloc(size, 7);
      const r = await ArtifactReceiver.open(store, 'g', { size, sha256: sha(data) });
      await assert.rejects(r.write(1, Buffer.alloc(0)), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      await assert.rejects(r.write(0, Buffer.alloc(0)), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT'));
      // One-byte chunks past a gap at 0: far under maxPendingBytes, but each is a map entry.
      for (let i = 0; i < MAX_PARKED_CHUNKS; i++) await r.write(2 + 2 * i, data.subarray(0, 1));
      await assert.rejects(r.write(2 + 2 * MAX_PARKED_CHUNKS, data.subarray(0, 1)), (e) => isBuilderError(e, 'BUILDER_ERR_TOO_MANY_IN_FLIGHT'));
      // The gap filled, the parked chunks are written, and the rest completes the file.
      await r.write(0, data);
      assert.equal((await r.finish()).sha256, sha(data));
    });

    it('refuses a symlink planted in the destination tree', async () => {
      const store = join(root, 'store');
      await mkdir(store);
      await mkdir(join(root, 'elsewhere'));
      await symlink(join(root, 'elsewhere'), join(store, 'sub'));
      await assert.rejects(ArtifactReceiver.open(store, 'sub/f', meta), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'));
      await symlink(join(root, 'elsewhere/target'), join(store, 'g.part'));
      await assert.rejects(ArtifactReceiver.open(store, 'g', meta), { code: 'ELOOP' });
    });
  });
});
