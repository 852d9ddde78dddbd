import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RepoBuilder } from '../../../repo-builder/index.js';
import { debFileName, makeDeb, type SynthDeb } from './helpers/synth-deb.js';
import { aptClient, closeServer, makeGpgKey, memoryLogger, run, serveDir, stopGpgAgent, writeBatch } from './helpers/tools.js';

/** apt-get update must be clean: any W: or E: line is a failure. */
function assertClean(out: { code: number; stdout: string; stderr: string }): void {
  const bad = `${out.stdout}\n${out.stderr}`.split('\n').filter((l) => /^(W|E|Err):/.test(l));
  assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
  assert.deepEqual(bad, [], `${out.stdout}\n${out.stderr}`);
}

async function debFile(d: SynthDeb): Promise<{ name: string; data: Buffer }> {
  return { name: debFileName(d), data: await makeDeb(d) };
}

describe('repo-builder APT publishing', function () {
  this.timeout(60_000);
  let dir: string;
  let server: Server | undefined;
  let builder: RepoBuilder | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-apt-'));
  });
  afterEach(async () => {
    await builder?.close();
    builder = undefined;
    await closeServer(server);
    server = undefined;
    for (const home of ['gnupg', 'gnupg-other']) await stopGpgAgent(join(dir, home));
    await rm(dir, { recursive: true, force: true });
  });

  const open = async (extra: Partial<Parameters<typeof RepoBuilder.open>[0]> = {}): Promise<RepoBuilder> =>
    RepoBuilder.open({ incomingDir: join(dir, 'incoming'), repoDir: join(dir, 'repo'), logger: memoryLogger().logger, fsync: false, ...extra });

  describe('when hello 1.0-1, then 1.0-2, then 0.9-1 are published', () => {
    it('keeps only 1.0-2, logs the older one, and an isolated apt downloads 1.0-2', async () => {
      const mem = memoryLogger();
      builder = await open({ logger: mem.logger });
      const incoming = join(dir, 'incoming');
      for (const [id, version] of [['b1', '1.0-1'], ['b2', '1.0-2'], ['b3', '0.9-1']] as const) {
        await writeBatch(incoming, id, 'stable', [await debFile({ name: 'hello', version, arch: 'amd64' })]);
        const s = await builder.runOnce();
        assert.deepEqual(s.published, [id]);
      }
      const pool = await readdir(join(dir, 'repo/deb/pool/stable/h/hello'));
      // 1.0-1 left the index at once; its file waits out the grace period for clients mid-update.
      const packages = await readFile(join(dir, 'repo/deb/dists/stable/main/binary-amd64/Packages'), 'utf8');
      assert.deepEqual([...packages.matchAll(/^Version: (.*)$/gm)].map((m) => m[1]), ['1.0-2']);
      assert.ok(pool.includes('hello_1.0-2_amd64.deb'));
      assert.ok(!pool.includes('hello_0.9-1_amd64.deb'), 'the older package was not put in the pool');
      assert.ok(mem.lines.some((l) => l.msg === 'older than the published version; not published' && l.batch === 'b3' && JSON.stringify(l.packages).includes('hello=0.9-1')));
      assert.deepEqual(await readdir(incoming), [], 'every batch left incoming');

      const srv = await serveDir(join(dir, 'repo'));
      server = srv.server;
      const apt = await aptClient(join(dir, 'client'), `deb [trusted=yes] ${srv.url}/deb stable main`);
      assertClean(await apt(['update']));
      const policy = await apt(['policy', 'hello'], 'apt-cache');
      assert.match(policy.stdout, /Candidate: 1\.0-2/);
      const dl = await apt(['install', '-y', '--download-only', 'hello']);
      assert.equal(dl.code, 0, dl.stderr);
      const archives = await readdir(join(dir, 'client/var/cache/apt/archives'));
      assert.ok(archives.includes('hello_1.0-2_amd64.deb'), archives.join(' '));
      assert.ok(srv.requests.some((r) => r.includes('/by-hash/SHA256/')), 'apt used by-hash');
    });
  });

  describe('when the grace period is over', () => {
    it('removes the replaced package file and old by-hash indexes', async () => {
      let now = 1_800_000_000_000;
      builder = await open({ graceMs: 1000, now: () => now });
      const incoming = join(dir, 'incoming');
      await writeBatch(incoming, 'b1', 'stable', [await debFile({ name: 'hello', version: '1.0-1', arch: 'amd64' })]);
      await builder.runOnce();
      const byHashDir = join(dir, 'repo/deb/dists/stable/main/binary-amd64/by-hash/SHA256');
      const firstGen = await readdir(byHashDir);
      now += 10;
      await writeBatch(incoming, 'b2', 'stable', [await debFile({ name: 'hello', version: '1.0-2', arch: 'amd64' })]);
      await builder.runOnce();
      assert.ok((await readdir(join(dir, 'repo/deb/pool/stable/h/hello'))).includes('hello_1.0-1_amd64.deb'), 'still there during the grace period');
      now += 2000;
      await builder.runOnce();
      assert.deepEqual(await readdir(join(dir, 'repo/deb/pool/stable/h/hello')), ['hello_1.0-2_amd64.deb']);
      const left = await readdir(byHashDir);
      assert.equal(left.filter((f) => firstGen.includes(f)).length, 0, 'old by-hash files removed');
      assert.equal(left.length, 3);
    });
  });

  describe('when versions use epochs and ~', () => {
    it('orders them as dpkg does, and --keep 3 keeps the newest three', async () => {
      builder = await open({ keep: 3 });
      const incoming = join(dir, 'incoming');
      const order = ['1.0~rc1-1', '1.0-1', '1.0+b1-1', '1:0.5-1'];
      let k = 0;
      for (const v of order) await writeBatch(incoming, `e${k++}`, 'stable', [await debFile({ name: 'tool', version: v, arch: 'amd64' })]);
      await builder.runOnce();
      // 9.9-1 has no epoch, so it is older than 1:0.5-1 and is not published.
      await writeBatch(incoming, 'late', 'stable', [await debFile({ name: 'tool', version: '9.9-1', arch: 'amd64' })]);
      await builder.runOnce();
      const packages = await readFile(join(dir, 'repo/deb/dists/stable/main/binary-amd64/Packages'), 'utf8');
      assert.deepEqual([...packages.matchAll(/^Version: (.*)$/gm)].map((m) => m[1]), ['1.0-1', '1.0+b1-1', '1:0.5-1']);
      const srv = await serveDir(join(dir, 'repo'));
      server = srv.server;
      const apt = await aptClient(join(dir, 'client'), `deb [trusted=yes] ${srv.url}/deb stable main`);
      assertClean(await apt(['update']));
      assert.match((await apt(['policy', 'tool'], 'apt-cache')).stdout, /Candidate: 1:0\.5-1/);
    });
  });

  describe('when a channel has packages of another architecture only', () => {
    it('still publishes valid (empty) amd64 indexes, and apt updates without a warning', async () => {
      builder = await open();
      await writeBatch(join(dir, 'incoming'), 'arm', 'ports', [await debFile({ name: 'armonly', version: '1.0-1', arch: 'arm64' })]);
      await builder.runOnce();
      const release = await readFile(join(dir, 'repo/deb/dists/ports/Release'), 'utf8');
      assert.match(release, /^Architectures: amd64 arm64$/m);
      assert.equal(await readFile(join(dir, 'repo/deb/dists/ports/main/binary-amd64/Packages'), 'utf8'), '');
      const gz = await run('gzip', ['-t', join(dir, 'repo/deb/dists/ports/main/binary-amd64/Packages.gz')]);
      assert.equal(gz.code, 0, gz.stderr);
      const srv = await serveDir(join(dir, 'repo'));
      server = srv.server;
      const apt = await aptClient(join(dir, 'client'), `deb [trusted=yes] ${srv.url}/deb ports main`);
      assertClean(await apt(['update']));
    });
  });

  describe('when a GPG key is configured', () => {
    it('signs InRelease and Release.gpg, and apt with signed-by accepts both paths', async () => {
      const key = await makeGpgKey(join(dir, 'gnupg'));
      builder = await open({ gpgKey: key.fingerprint, gpgHome: join(dir, 'gnupg') });
      await writeBatch(join(dir, 'incoming'), 'b1', 'stable', [
        await debFile({ name: 'hello', version: '2.0-1', arch: 'amd64' }),
        await debFile({ name: 'hello-doc', version: '2.0-1', arch: 'all' }),
      ]);
      await builder.runOnce();
      const dists = join(dir, 'repo/deb/dists/stable');
      assert.match(await readFile(join(dists, 'InRelease'), 'utf8'), /BEGIN PGP SIGNED MESSAGE/);
      const verify = await run('gpg', ['--homedir', join(dir, 'gnupg'), '--verify', join(dists, 'Release.gpg'), join(dists, 'Release')]);
      assert.equal(verify.code, 0, verify.stderr);
      const srv = await serveDir(join(dir, 'repo'));
      server = srv.server;
      const apt = await aptClient(join(dir, 'client'), `deb [signed-by=${key.publicKeyFile}] ${srv.url}/deb stable main`);
      assertClean(await apt(['update']));
      assert.ok(srv.requests.includes('/deb/dists/stable/InRelease'));
      const dl = await apt(['install', '-y', '--download-only', 'hello', 'hello-doc']);
      assert.equal(dl.code, 0, dl.stderr);
      const archives = await readdir(join(dir, 'client/var/cache/apt/archives'));
      assert.ok(archives.includes('hello_2.0-1_amd64.deb') && archives.includes('hello-doc_2.0-1_all.deb'), archives.join(' '));

      // Without InRelease apt falls back to Release + Release.gpg, and still verifies it.
      await rm(join(dists, 'InRelease'));
      const apt2 = await aptClient(join(dir, 'client2'), `deb [signed-by=${key.publicKeyFile}] ${srv.url}/deb stable main`);
      assertClean(await apt2(['update']));
      assert.match((await apt2(['policy', 'hello'], 'apt-cache')).stdout, /Candidate: 2\.0-1/);

      // A repository signed by another key is refused: the signature really is checked.
      const other = await makeGpgKey(join(dir, 'gnupg-other'));
      const apt3 = await aptClient(join(dir, 'client3'), `deb [signed-by=${other.publicKeyFile}] ${srv.url}/deb stable main`);
      const r3 = await apt3(['update']);
      assert.match(`${r3.stdout}${r3.stderr}`, /NO_PUBKEY|not signed/);
    });
  });
});
