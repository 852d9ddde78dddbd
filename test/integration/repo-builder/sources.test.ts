import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { RepoBuilder } from '../../../repo-builder/index.js';
import { memoryLogger, run, sha256, writeBatch, type BatchFile } from './helpers/tools.js';

function dsc(source: string, version: string, files: BatchFile[]): BatchFile {
  const text = [
    'Format: 3.0 (quilt)',
    `Source: ${source}`,
    `Version: ${version}`,
    'Checksums-Sha256:',
    ...files.map((f) => ` ${sha256(f.data)} ${f.data.length} ${f.name}`),
    '',
  ].join('\n');
  return { name: `${source}_${version}.dsc`, data: Buffer.from(text) };
}

describe('repo-builder source packages', function () {
  this.timeout(60_000);
  let dir: string;
  let builder: RepoBuilder | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-src-'));
  });
  afterEach(async () => {
    await builder?.close();
    builder = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  describe('when a batch carries a .dsc with its tarballs and a .src.rpm', () => {
    it('keeps the newest source in the pool, lists the .src.rpm as arch src, and rejects a stray tarball', async () => {
      let now = 1_800_000_000_000;
      const incoming = join(dir, 'incoming');
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: memoryLogger().logger, fsync: false, graceMs: 1000, now: () => now });
      const srcFiles = (v: string): BatchFile[] => [
        { name: 'hello_1.0.orig.tar.gz', data: Buffer.from('orig tarball') },
        { name: `hello_${v}.debian.tar.xz`, data: Buffer.from(`debian dir ${v}`) },
      ];
      // A real source rpm from rpmbuild -bs.
      const top = join(dir, 'rpmbuild');
      await mkdir(join(top, 'SOURCES'), { recursive: true });
      const spec = join(dir, 'hello.spec');
      await writeFile(spec, 'Name: hello\nVersion: 1.0\nRelease: 1\nSummary: s\nLicense: MIT\n%description\nd\n%files\n');
      const r = await run('rpmbuild', ['--define', `_topdir ${top}`, '-bs', spec]);
      assert.equal(r.code, 0, r.stderr);
      const srpm = await readFile(join(top, 'SRPMS', 'hello-1.0-1.src.rpm'));

      const v1 = srcFiles('1.0-1');
      await writeBatch(incoming, 's1', 'stable', [dsc('hello', '1.0-1', v1), ...v1, { name: 'hello-1.0-1.src.rpm', data: srpm }]);
      assert.deepEqual((await builder.runOnce()).published, ['s1']);
      const pool = join(dir, 'repo/deb/pool/stable/h/hello');
      assert.deepEqual((await readdir(pool)).sort(), ['hello_1.0-1.debian.tar.xz', 'hello_1.0-1.dsc', 'hello_1.0.orig.tar.gz']);
      const repomd = await readFile(join(dir, 'repo/rpm/stable/repodata/repomd.xml'), 'utf8');
      const href = /<data type="primary">[\s\S]*?<location href="([^"]+)"/.exec(repomd)![1]!;
      const primary = gunzipSync(await readFile(join(dir, 'repo/rpm/stable', href))).toString();
      assert.match(primary, /<arch>src<\/arch>/);
      assert.match(primary, /<location href="Packages\/h\/hello-1\.0-1\.src\.rpm"\/>/);

      now += 10;
      const v2 = srcFiles('1.0-2');
      await writeBatch(incoming, 's2', 'stable', [dsc('hello', '1.0-2', v2), ...v2]);
      await writeBatch(incoming, 'stray', 'stable', [{ name: 'other_1.0.orig.tar.gz', data: Buffer.from('x') }]);
      const s = await builder.runOnce();
      assert.deepEqual(s.published, ['s2']);
      assert.match(s.rejected[0]!.reason, /other_1\.0\.orig\.tar\.gz is a source file that no \.dsc in the batch names/);
      now += 2000;
      await builder.runOnce();
      // The shared orig tarball stays (the new .dsc names it); the old revision's files go.
      assert.deepEqual((await readdir(pool)).sort(), ['hello_1.0-2.debian.tar.xz', 'hello_1.0-2.dsc', 'hello_1.0.orig.tar.gz']);
    });
  });
});
