import assert from 'node:assert/strict';
import { watch } from 'node:fs';
import { readFile, readdir, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, rejectsWith, sha, waitJob } from './helpers.js';

describe('master jobs: artifacts', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let admin: RpcPeer;
  let s: TestSlave;

  beforeEach(async function () {
    ({ farm, client, admin } = await jobFarm());
    s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe();
  });
  afterEach(async function () {
    await farm.close();
  });

  async function runJob(name = 'hello'): Promise<number> {
    const { job: j } = await client.call('job.submit', { job: job({ name }) });
    await s.nextAssign(j.id);
    await waitJob(client, j.id, (x) => x.state === 'running', 'running');
    return j.id;
  }

  describe('when an attempt ends with packages and images', function () {
    it('files packages into one incoming batch with the listing written last, and images under images/<name>/<id>/', async function () {
      const id = await runJob('hello');
      const deb = Buffer.from('!<arch>\nnot really a deb but bytes');
      const orig = Buffer.from('source tarball bytes');
      const dsc = Buffer.from(`Format: 3.0 (quilt)\nSource: hello\nChecksums-Sha256:\n ${sha(orig)} ${orig.length} hello_1.0.orig.tar.gz\nFiles:\n 0123 ${orig.length} hello_1.0.orig.tar.gz\n`);
      const img = Buffer.alloc(300_000, 7);
      const files: Array<[string, Buffer]> = [
        ['debs/hello_1.0-1_amd64.deb', deb],
        ['hello_1.0-1.dsc', dsc],
        ['hello_1.0.orig.tar.gz', orig],
        ['disk/root.img', img],
      ];
      const arts = [];
      for (const [p, b] of files) {
        const r = await s.upload(id, 1, p, b);
        assert.deepEqual(r, { size: b.length, sha256: sha(b) });
        arts.push({ path: p, size: b.length, sha256: sha(b) });
      }
      const incoming = join(farm.dir, 'incoming');
      const events: string[] = [];
      const w = watch(incoming, (_e, f) => {
        if (f !== null && !events.includes(f)) events.push(f);
      });
      try {
        await s.finish(id, 1, { artifacts: arts });
        await new Promise((res) => setTimeout(res, 100));
      } finally {
        w.close();
      }
      const batch = `job-${id}-a1`;
      // The listing appears after the batch directory (it is renamed from a dotfile, last).
      const bi = events.indexOf(batch);
      const li = events.indexOf(`${batch}.listing.json`);
      assert.ok(bi >= 0 && li > bi, `events in order: ${events.join(', ')}`);
      const listing = JSON.parse(await readFile(join(incoming, `${batch}.listing.json`), 'utf8'));
      assert.deepEqual(
        { ...listing, files: [...listing.files].sort((a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1)) },
        {
          version: 1,
          batch,
          job: String(id),
          channel: 'stable',
          files: [
            { name: 'hello_1.0-1.dsc', size: dsc.length, sha256: sha(dsc) },
            { name: 'hello_1.0-1_amd64.deb', size: deb.length, sha256: sha(deb) },
            { name: 'hello_1.0.orig.tar.gz', size: orig.length, sha256: sha(orig) },
          ],
        },
      );
      assert.deepEqual((await readdir(join(incoming, batch))).sort(), ['hello_1.0-1.dsc', 'hello_1.0-1_amd64.deb', 'hello_1.0.orig.tar.gz']);
      assert.deepEqual(await readFile(join(incoming, batch, 'hello_1.0-1_amd64.deb')), deb);
      assert.equal((await stat(join(farm.dir, 'images', 'hello', String(id), 'disk', 'root.img'))).size, img.length);

      const list = (await client.call('artifact.list', { jobId: id })).artifacts;
      assert.deepEqual(list.map((a) => [a.name, a.kind]).sort(), [
        ['debs/hello_1.0-1_amd64.deb', 'package'],
        ['disk/root.img', 'image'],
        ['hello_1.0-1.dsc', 'package'],
        ['hello_1.0.orig.tar.gz', 'image'],
      ]);
      // Download an image in chunks and check it.
      const a = list.find((x) => x.name === 'disk/root.img')!;
      const parts: Buffer[] = [];
      for (let o = 0; o < a.size; o += 100_000) parts.push(Buffer.from((await client.call('artifact.read', { id: a.id, offset: o, length: 100_000 })).data));
      assert.equal(sha(Buffer.concat(parts)), a.sha256);
      // A repeated finish (a lost reply) files nothing twice.
      await s.finish(id, 1, { artifacts: arts });
      assert.equal((await client.call('artifact.list', { jobId: id })).artifacts.length, 4);
      // Images: listed, and promoted by an admin only.
      const imgs = (await client.call('image.list', { name: 'hello' })).images;
      assert.deepEqual(imgs.map((i) => [i.jobId, i.promoted, i.files.length]), [[id, false, 2]]);
      await assert.rejects(client.call('image.promote', { jobId: id, name: 'hello' }), /role client may not/);
      await rejectsWith(admin.call('image.promote', { jobId: id, name: 'other' }), 'BUILDER_ERR_INVALID_INPUT', /named hello, not other/);
      await admin.call('image.promote', { jobId: id, name: 'hello' });
      assert.equal(await readlink(join(farm.dir, 'images', 'hello', 'current')), String(id));
      assert.equal((await client.call('image.list', {})).images[0]!.promoted, true);
    });

    it('files the artifacts of a failing job too, and shows refused entries and input conflicts in its reason', async function () {
      const id = await runJob('broken');
      const b = Buffer.from('partial output');
      await s.upload(id, 1, 'out.rpm', b);
      await s.finish(id, 1, {
        state: 'failed',
        exitCode: 2,
        reason: 'exit code 2',
        artifacts: [{ path: 'out.rpm', size: b.length, sha256: sha(b) }],
        refused: [{ path: 'link-to-etc', reason: 'symlink' }, { path: '../escape', reason: 'escapes' }],
        conflicts: [{ path: 'input.txt', inputSha256: sha('a'), artifactSha256: sha('b') }],
      });
      const g = await client.call('job.get', { id });
      assert.equal(g.job.state, 'failed');
      assert.match(g.job.reason ?? '', /exit code 2; refused output: link-to-etc \(symlink\), \.\.\/escape \(escapes\); artifacts differing from the input of the same name: input\.txt/);
      const listing = JSON.parse(await readFile(join(farm.dir, 'incoming', `job-${id}-a1.listing.json`), 'utf8'));
      assert.deepEqual(listing.files.map((f: { name: string }) => f.name), ['out.rpm']);
      await rejectsWith(admin.call('image.promote', { jobId: id, name: 'broken' }), 'BUILDER_ERR_BAD_STATE', /only a succeeded job/);
    });
  });

  describe('when an upload is wrong', function () {
    it('refuses a path that escapes, with a clear error and nothing written outside', async function () {
      const id = await runJob();
      for (const p of ['../evil.deb', '/etc/passwd', 'a/../../b', 'a//b', 'x\\y']) {
        await rejectsWith(s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: p, size: 1, sha256: sha('x') }), 'BUILDER_ERR_INVALID_NAME', /invalid path/);
      }
      assert.deepEqual(await readdir(join(farm.dir, 'uploads', String(id), '1')), []);
      assert.deepEqual((await readdir(join(farm.dir, 'uploads', String(id)))).sort(), ['1']);
      // The upload area is usable afterwards.
      await s.upload(id, 1, 'ok.bin', Buffer.from('fine'));
    });

    it('takes an upload whose file was put in place but not recorded (the master died in between) as committed', async function () {
      const id = await runJob();
      const b = Buffer.from('built bytes');
      await s.upload(id, 1, 'out.bin', b);
      // As if the master had died right after the rename: the record of the commit is gone.
      await writeFile(join(farm.dir, 'uploads', String(id), '1.committed.jsonl'), '');
      await farm.restart();
      client = await farm.connect(await farm.identity('bob', 'client'));
      await s.connect();
      await s.subscribe({ running: [{ jobId: id, attempt: 1, slots: 1 }] });
      assert.deepEqual(await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'out.bin', size: b.length, sha256: sha(b) }), { offset: b.length });
      // Other bytes under that name are still refused.
      await rejectsWith(s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'out.bin', size: 3, sha256: sha('abc') }), 'BUILDER_ERR_CONFLICT', /already exists/);
      await s.finish(id, 1, { artifacts: [{ path: 'out.bin', size: b.length, sha256: sha(b) }] });
      assert.deepEqual((await client.call('artifact.list', { jobId: id })).artifacts.map((x) => x.name), ['out.bin']);
    });

    it('keeps an upload finished too early open (its file with it) for the chunks still to come', async function () {
      const id = await runJob();
      const b = Buffer.from('first half, second half');
      await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'early.bin', size: b.length, sha256: sha(b) });
      await s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'early.bin', offset: 0, data: b.subarray(0, 10) });
      await rejectsWith(s.peer.call('artifact.finish', { jobId: id, attempt: 1, path: 'early.bin' }), 'BUILDER_ERR_BAD_STATE', /incomplete: 10 of 23 bytes/);
      // Not dropped (that left its file handle open until a garbage collection): the rest goes on without a new begin.
      await s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'early.bin', offset: 10, data: b.subarray(10) });
      assert.deepEqual(await s.peer.call('artifact.finish', { jobId: id, attempt: 1, path: 'early.bin' }), { size: b.length, sha256: sha(b) });
    });

    it('refuses a checksum mismatch, drops the bytes, and takes a correct upload after it', async function () {
      const id = await runJob();
      const good = Buffer.from('the real bytes');
      await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'x.bin', size: good.length, sha256: sha('something else entirely') });
      await s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'x.bin', offset: 0, data: good });
      await rejectsWith(s.peer.call('artifact.finish', { jobId: id, attempt: 1, path: 'x.bin' }), 'BUILDER_ERR_CHECKSUM', /differs from the declared/);
      assert.deepEqual(await readdir(join(farm.dir, 'uploads', String(id), '1')), []);
      await rejectsWith(s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'x.bin', offset: 0, data: good }), 'BUILDER_ERR_BAD_STATE', /call artifact.begin first/);
      assert.deepEqual(await s.upload(id, 1, 'x.bin', good), { size: good.length, sha256: sha(good) });
      // An artifact listed in attempt.finish but never committed is reported, not invented.
      await s.finish(id, 1, { artifacts: [{ path: 'x.bin', size: good.length, sha256: sha(good) }, { path: 'ghost.deb', size: 3, sha256: sha('abc') }] });
      const g = await client.call('job.get', { id });
      assert.equal(g.job.state, 'succeeded');
      assert.match(g.job.reason ?? '', /ghost\.deb: not uploaded/);
      assert.deepEqual((await client.call('artifact.list', { jobId: id })).artifacts.map((a) => a.name), ['x.bin']);
    });

    it('resumes an interrupted upload at the offset the master holds', async function () {
      const id = await runJob();
      const b = Buffer.alloc(200_000, 3);
      await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'big.bin', size: b.length, sha256: sha(b) });
      await s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'big.bin', offset: 0, data: b.subarray(0, 80_000) });
      s.peer.destroy();
      await s.connect();
      await s.subscribe({ running: [{ jobId: id, attempt: 1, slots: 1 }] });
      const { offset } = await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'big.bin', size: b.length, sha256: sha(b) });
      assert.equal(offset, 80_000);
      assert.deepEqual(await s.upload(id, 1, 'big.bin', b), { size: b.length, sha256: sha(b) });
    });

    it('refuses uploads and finishes for an attempt the slave does not hold', async function () {
      const id = await runJob();
      const other = await TestSlave.enroll(farm, 'w2');
      await other.connect();
      await other.subscribe({ channels: ['elsewhere'] });
      await rejectsWith(other.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'a', size: 1, sha256: sha('a') }), 'BUILDER_ERR_BAD_STATE');
      await rejectsWith(other.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'a', offset: 0, data: Buffer.from('a') }), 'BUILDER_ERR_BAD_STATE');
      await rejectsWith(s.peer.call('artifact.begin', { jobId: id, attempt: 3, path: 'a', size: 1, sha256: sha('a') }), 'BUILDER_ERR_BAD_STATE');
      await rejectsWith(client.call('artifact.read', { id: 999, offset: 0, length: 10 }), 'BUILDER_ERR_NOT_FOUND');
      await rejectsWith(client.call('artifact.list', { jobId: 999 }), 'BUILDER_ERR_NOT_FOUND');
    });
  });

  describe('when uploads hit the named limits', function () {
    it('refuses an artifact over maxArtifactBytes and more than maxOpenUploads at once, and the slave carries on', async function () {
      await farm.close();
      ({ farm, client, admin } = await jobFarm({ maxArtifactBytes: 1000, maxOpenUploads: 2 }));
      s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const id = await runJob();
      await rejectsWith(s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'huge.img', size: 1001, sha256: sha('x') }), 'BUILDER_ERR_INVALID_INPUT', /over the limit of 1000/);
      for (const p of ['a', 'b']) await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: p, size: 1, sha256: sha(p) });
      await rejectsWith(s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'c', size: 1, sha256: sha('c') }), 'BUILDER_ERR_TOO_MANY_IN_FLIGHT', /more than 2 artifact uploads/);
      await s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'a', offset: 0, data: Buffer.from('a') });
      await s.peer.call('artifact.finish', { jobId: id, attempt: 1, path: 'a' });
      assert.deepEqual(await s.upload(id, 1, 'c', Buffer.from('c')), { size: 1, sha256: sha('c') });
    });

    it('closes an upload idle for uploadIdleMs, keeping its bytes for a resume', async function () {
      await farm.close();
      ({ farm, client, admin } = await jobFarm({ uploadIdleMs: 1000 }));
      s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const id = await runJob();
      const b = Buffer.alloc(1000, 5);
      await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'slow.bin', size: b.length, sha256: sha(b) });
      await s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'slow.bin', offset: 0, data: b.subarray(0, 400) });
      await new Promise((res) => setTimeout(res, 2_300));
      await rejectsWith(s.peer.call('artifact.chunk', { jobId: id, attempt: 1, path: 'slow.bin', offset: 400, data: b.subarray(400) }), 'BUILDER_ERR_BAD_STATE', /artifact.begin first/);
      const { offset } = await s.peer.call('artifact.begin', { jobId: id, attempt: 1, path: 'slow.bin', size: b.length, sha256: sha(b) });
      assert.equal(offset, 400);
      assert.deepEqual(await s.upload(id, 1, 'slow.bin', b), { size: b.length, sha256: sha(b) });
    });
  });
});
