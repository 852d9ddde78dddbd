import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IncomingWatcher, RepoBuilder, type RunSummary } from '../../../repo-builder/index.js';
import { debFileName, makeDeb } from './helpers/synth-deb.js';
import { memoryLogger, writeBatch } from './helpers/tools.js';

async function until(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(20);
  }
  throw new Error('timed out');
}

describe('repo-builder watching incoming', function () {
  this.timeout(30_000);
  let dir: string;
  let builder: RepoBuilder | undefined;
  let watcher: IncomingWatcher | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-watch-'));
  });
  afterEach(async () => {
    await watcher?.close();
    watcher = undefined;
    await builder?.close();
    builder = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  const deb = async (name: string, version = '1.0-1'): Promise<{ name: string; data: Buffer }> => {
    const d = { name, version, arch: 'amd64' };
    return { name: debFileName(d), data: await makeDeb(d) };
  };

  describe('when batches were left in incoming while it was down', () => {
    it('publishes them at start', async () => {
      const incoming = join(dir, 'incoming');
      await writeBatch(incoming, 'early-1', 'stable', [await deb('early')]);
      const mem = memoryLogger();
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: mem.logger, fsync: false });
      const runs: RunSummary[] = [];
      watcher = new IncomingWatcher(builder, mem.logger, (s) => runs.push(s));
      await watcher.start();
      await until(async () => runs.some((r) => r.published.includes('early-1')), 10_000);
      assert.match(await readFile(join(dir, 'repo/deb/dists/stable/main/binary-amd64/Packages'), 'utf8'), /Package: early/);
    });
  });

  describe('when 20 listings arrive at once', () => {
    it('publishes them together (debounced), not one regeneration per listing', async () => {
      const incoming = join(dir, 'incoming');
      const mem = memoryLogger();
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: mem.logger, fsync: false, debounceMs: 300 });
      const runs: RunSummary[] = [];
      watcher = new IncomingWatcher(builder, mem.logger, (s) => runs.push(s));
      await watcher.start();
      await until(async () => runs.length >= 1, 5000); // the start-up run (nothing to do)
      const files = await Promise.all(Array.from({ length: 20 }, (_, k) => deb(`burst${k}`)));
      for (let k = 0; k < 20; k++) await writeBatch(incoming, `burst-${k}`, 'stable', [files[k]!]);
      await until(async () => (await readdir(incoming)).length === 0, 10_000);
      await sleep(400);
      const publishing = runs.filter((r) => r.published.length > 0);
      assert.ok(publishing.length <= 2, `${publishing.length} publishes for 20 listings`);
      assert.equal(publishing.flatMap((r) => r.published).length, 20);
    });
  });

  describe('when a symlink or a half-written file appears in incoming', () => {
    it('ignores the temporary name and refuses a symlinked listing without following it', async () => {
      const incoming = join(dir, 'incoming');
      const mem = memoryLogger();
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: mem.logger, fsync: false, debounceMs: 50 });
      const runs: RunSummary[] = [];
      watcher = new IncomingWatcher(builder, mem.logger, (s) => runs.push(s));
      await watcher.start();
      await until(async () => runs.length >= 1, 5000);
      // A listing still being written has a temporary name: nothing happens.
      await writeFile(join(incoming, '.half.listing.tmp'), '{"version":1');
      await writeFile(join(dir, 'elsewhere.json'), JSON.stringify({ version: 1, batch: 'sym', job: '1', channel: 'stable', files: [{ name: 'a.deb', size: 1, sha256: 'a'.repeat(64) }] }));
      await symlink(join(dir, 'elsewhere.json'), join(incoming, 'sym.listing.json'));
      await until(async () => runs.some((r) => r.rejected.length > 0), 10_000);
      const rejected = runs.flatMap((r) => r.rejected);
      assert.equal(rejected.length, 1);
      assert.match(rejected[0]!.reason, /cannot read listing: .*(ELOOP|symbolic)/i);
      assert.ok((await readdir(incoming)).includes('.half.listing.tmp'), 'the temporary file is left alone');
      assert.equal(await readFile(join(dir, 'elsewhere.json'), 'utf8').then((t) => t.length > 0), true);
    });
  });

  describe('when the same version arrives with other content', () => {
    it('keeps the published one and logs a warning', async () => {
      const incoming = join(dir, 'incoming');
      const mem = memoryLogger();
      builder = await RepoBuilder.open({ incomingDir: incoming, repoDir: join(dir, 'repo'), logger: mem.logger, fsync: false });
      const a = await deb('same');
      await writeBatch(incoming, 'first', 'stable', [a]);
      await builder.runOnce();
      const b = { name: a.name, data: await makeDeb({ name: 'same', version: '1.0-1', arch: 'amd64', description: 'rebuilt\n differently' }) };
      await writeBatch(incoming, 'second', 'stable', [b]);
      const s = await builder.runOnce();
      assert.equal(s.skipped, 1);
      assert.ok(mem.lines.some((l) => l.level === 40 && l.msg === 'same version with different content is not published (the published one stays)'));
      const packages = await readFile(join(dir, 'repo/deb/dists/stable/main/binary-amd64/Packages'), 'utf8');
      assert.doesNotMatch(packages, /rebuilt/);
    });
  });
});
