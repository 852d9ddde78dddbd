import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RepoBuilder } from '../../../repo-builder/index.js';
import { makeDeb } from './helpers/synth-deb.js';
import { buildRpms, memoryLogger, sha256, writeBatch } from './helpers/tools.js';

describe('repo-builder bad batches', function () {
  this.timeout(60_000);
  let dir: string;
  let builder: RepoBuilder | undefined;
  let rpm: Buffer;

  before(async () => {
    const d = await mkdtemp(join(tmpdir(), 'rb-rpmfix-'));
    rpm = [...(await buildRpms(d, [{ name: 'rhello', version: '1.0', release: '1' }])).values()][0]!;
    await rm(d, { recursive: true, force: true });
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-bad-'));
  });
  afterEach(async () => {
    await builder?.close();
    builder = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  describe('when good and bad batches arrive together', () => {
    it('rejects each bad batch with its reason, keeps its files under rejected/, and publishes the good ones', async () => {
      const mem = memoryLogger();
      const incoming = join(dir, 'incoming');
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: mem.logger, fsync: false });
      const good = await makeDeb({ name: 'good', version: '1.0-1', arch: 'amd64' });
      const deb = (n: string): Promise<Buffer> => makeDeb({ name: n, version: '1.0-1', arch: 'amd64' });
      await writeBatch(incoming, 'ok-1', 'stable', [{ name: 'good_1.0-1_amd64.deb', data: good }]);
      await writeBatch(incoming, 'ok-rpm', 'stable', [{ name: 'rhello-1.0-1.x86_64.rpm', data: rpm }]);
      await writeBatch(incoming, 'bad-sha', 'stable', [{ name: 'a_1.0-1_amd64.deb', data: await deb('a') }], (l) => {
        l.files[0]!.sha256 = '0'.repeat(64);
      });
      await writeBatch(incoming, 'bad-size', 'stable', [{ name: 'b_1.0-1_amd64.deb', data: await deb('b') }], (l) => {
        l.files[0]!.size += 1;
      });
      await writeBatch(incoming, 'bad-missing', 'stable', [{ name: 'c_1.0-1_amd64.deb', data: await deb('c') }], (l) => {
        l.files.push({ name: 'gone_1.0-1_amd64.deb', size: 10, sha256: 'a'.repeat(64) });
      });
      await writeBatch(incoming, 'bad-escape', 'stable', [{ name: 'd_1.0-1_amd64.deb', data: await deb('d') }], (l) => {
        l.files[0]!.name = '../ok-1/good_1.0-1_amd64.deb';
      });
      await writeBatch(incoming, 'bad-subdir', 'stable', [{ name: 'e_1.0-1_amd64.deb', data: await deb('e') }], (l) => {
        l.files[0]!.name = 'sub/e_1.0-1_amd64.deb';
      });
      await writeBatch(incoming, 'bad-corrupt', 'stable', [{ name: 'f_1.0-1_amd64.deb', data: Buffer.from('!<arch>\nthis is not a package at all, just text padding padding padding') }]);
      const whole = await deb('g');
      await writeBatch(incoming, 'bad-truncated', 'stable', [{ name: 'g_1.0-1_amd64.deb', data: whole.subarray(0, whole.length - 40) }]);
      await writeBatch(incoming, 'bad-rpm-truncated', 'stable', [{ name: 'rhello-1.0-1.x86_64.rpm', data: rpm.subarray(0, rpm.length - 100) }]);
      await writeBatch(incoming, 'bad-rpm-corrupt', 'stable', [{ name: 'x-1-1.x86_64.rpm', data: Buffer.concat([rpm.subarray(0, 200), Buffer.alloc(rpm.length - 200, 0x41)]) }]);
      await writeBatch(incoming, 'bad-channel', '../etc', [{ name: 'h_1.0-1_amd64.deb', data: await deb('h') }]);
      await writeBatch(incoming, 'bad-kind', 'stable', [{ name: 'notes.txt', data: Buffer.from('hello') }]);
      await writeBatch(incoming, 'bad-batchname', 'stable', [{ name: 'i_1.0-1_amd64.deb', data: await deb('i') }], (l) => {
        l.batch = 'ok-1';
      });
      // A symlink in place of a package: never followed, even to a valid .deb.
      await mkdir(join(incoming, 'bad-symlink'));
      await writeFile(join(dir, 'outside.deb'), good);
      await symlink(join(dir, 'outside.deb'), join(incoming, 'bad-symlink', 'good_1.0-1_amd64.deb'));
      await writeFile(join(incoming, 'bad-symlink.listing.json'), JSON.stringify({ version: 1, batch: 'bad-symlink', job: '9', channel: 'stable', files: [{ name: 'good_1.0-1_amd64.deb', size: good.length, sha256: sha256(good) }] }));
      await writeFile(join(incoming, 'bad-json.listing.json'), '{"version": 1, "batch": ');
      await mkdir(join(incoming, 'bad-json'));
      await writeFile(join(incoming, 'bad-nodir.listing.json'), JSON.stringify({ version: 1, batch: 'bad-nodir', job: '9', channel: 'stable', files: [{ name: 'z_1_amd64.deb', size: 1, sha256: 'a'.repeat(64) }] }));

      const s = await builder.runOnce();
      assert.deepEqual(s.published.sort(), ['ok-1', 'ok-rpm']);
      const expected: Record<string, RegExp> = {
        'bad-sha': /a_1\.0-1_amd64\.deb has sha256 [0-9a-f]{64}, the listing says 0{64}/,
        'bad-size': /has \d+ bytes, the listing says \d+/,
        'bad-missing': /gone_1\.0-1_amd64\.deb is listed but missing/,
        'bad-escape': /invalid path .*"\.\." segment/,
        'bad-subdir': /not directly in the batch directory/,
        'bad-corrupt': /f_1\.0-1_amd64\.deb: not a valid \.deb/,
        'bad-truncated': /g_1\.0-1_amd64\.deb: not a valid \.deb: truncated/,
        'bad-rpm-truncated': /not a valid \.rpm: truncated/,
        'bad-rpm-corrupt': /not a valid \.rpm/,
        'bad-channel': /invalid channel name/,
        'bad-kind': /notes\.txt.*is not a package/,
        'bad-batchname': /listing names batch "ok-1" but its file is bad-batchname\.listing\.json/,
        'bad-symlink': /is a symlink \(refused\)/,
        'bad-json': /listing is not valid JSON/,
        'bad-nodir': /batch directory bad-nodir\/ is missing/,
      };
      assert.deepEqual(s.rejected.map((r) => r.batch).sort(), Object.keys(expected).sort());
      const rejectedDir = join(incoming, 'rejected');
      for (const [id, re] of Object.entries(expected)) {
        const reason = await readFile(join(rejectedDir, id, 'reason.txt'), 'utf8');
        assert.match(reason, re, id);
        const kept = await readdir(join(rejectedDir, id));
        assert.ok(kept.includes(`${id}.listing.json`), `${id} keeps its listing`);
        assert.ok(mem.lines.some((l) => l.msg === 'batch rejected' && l.batch === id && typeof l.reason === 'string'), `${id} logged`);
      }
      assert.ok((await readdir(join(rejectedDir, 'bad-sha'))).includes('a_1.0-1_amd64.deb'), 'the rejected files are kept');
      // Only rejected/ is left in incoming; the good packages are published.
      assert.deepEqual(await readdir(incoming), ['rejected']);
      const packages = await readFile(join(dir, 'repo/deb/dists/stable/main/binary-amd64/Packages'), 'utf8');
      assert.deepEqual([...packages.matchAll(/^Package: (.*)$/gm)].map((m) => m[1]), ['good']);
      assert.deepEqual(await readdir(join(dir, 'repo/rpm/stable/Packages/r')), ['rhello-1.0-1.x86_64.rpm']);
      assert.equal(await readFile(join(dir, 'outside.deb')).then((b) => b.length), good.length, 'the symlink target is untouched');
    });
  });

  describe('when the same batch id is rejected twice', () => {
    it('keeps both rejections', async () => {
      const incoming = join(dir, 'incoming');
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: memoryLogger().logger, fsync: false });
      for (let k = 0; k < 2; k++) {
        await writeBatch(incoming, 'again', 'stable', [{ name: 'a_1_amd64.deb', data: Buffer.from(`nope ${k}`) }]);
        await builder.runOnce();
      }
      const entries = (await readdir(join(incoming, 'rejected'))).sort();
      assert.equal(entries.length, 2);
      assert.equal(entries[0], 'again');
      assert.match(entries[1]!, /^again\.\d+$/);
    });
  });

  describe('when a package is larger than a reader limit', () => {
    it('rejects it with the limit named', async () => {
      const incoming = join(dir, 'incoming');
      builder = await RepoBuilder.open({
        incomingDir: incoming,
        repoDir: join(dir, 'repo'),
        logger: memoryLogger().logger,
        fsync: false,
        limits: { maxControlBytes: 64, maxRpmHeaderBytes: 256 },
      });
      await writeBatch(incoming, 'big-deb', 'stable', [{ name: 'a_1.0-1_amd64.deb', data: await makeDeb({ name: 'a', version: '1.0-1', arch: 'amd64' }) }]);
      await writeBatch(incoming, 'big-rpm', 'stable', [{ name: 'rhello-1.0-1.x86_64.rpm', data: rpm }]);
      const s = await builder.runOnce();
      const reasons = Object.fromEntries(s.rejected.map((r) => [r.batch, r.reason]));
      assert.match(reasons['big-deb']!, /control member larger than 64 bytes/);
      assert.match(reasons['big-rpm']!, /header data of \d+ bytes \(limit 256\)/);
    });
  });
});
