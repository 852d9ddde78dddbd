import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { XMLParser } from 'fast-xml-parser';
import { RepoBuilder } from '../../../repo-builder/index.js';
import { buildRpms, closeServer, dnfClient, makeGpgKey, memoryLogger, run, serveDir, stopGpgAgent, writeBatch } from './helpers/tools.js';

describe('repo-builder RPM publishing', function () {
  this.timeout(90_000);
  let dir: string;
  let server: Server | undefined;
  let builder: RepoBuilder | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-rpm-'));
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
    it('keeps only 1.0-2, and an isolated dnf queries and downloads 1.0-2', async () => {
      const rpms = await buildRpms(join(dir, 'build'), [
        { name: 'hello', version: '1.0', release: '1' },
        { name: 'hello', version: '1.0', release: '2' },
        { name: 'hello', version: '0.9', release: '1' },
      ]).catch(async () => {
        // One spec cannot hold one subpackage name three times: build them one by one.
        const m = new Map<string, Buffer>();
        for (const [v, r] of [['1.0', '1'], ['1.0', '2'], ['0.9', '1']] as const) {
          for (const [k, b] of await buildRpms(join(dir, `build-${v}-${r}`), [{ name: 'hello', version: v, release: r }])) m.set(k, b);
        }
        return m;
      });
      builder = await open();
      const incoming = join(dir, 'incoming');
      for (const [id, f] of [['b1', 'hello-1.0-1.x86_64.rpm'], ['b2', 'hello-1.0-2.x86_64.rpm'], ['b3', 'hello-0.9-1.x86_64.rpm']] as const) {
        await writeBatch(incoming, id, 'fedora', [{ name: f, data: rpms.get(f)! }]);
        assert.deepEqual((await builder.runOnce()).published, [id]);
      }
      const repodata = join(dir, 'repo/rpm/fedora/repodata');
      const repomd = await readFile(join(repodata, 'repomd.xml'), 'utf8');
      const href = /<data type="primary">[\s\S]*?<location href="([^"]+)"/.exec(repomd)![1]!;
      const primary = new XMLParser({ ignoreAttributes: false }).parse(gunzipSync(await readFile(join(dir, 'repo/rpm/fedora', href))).toString());
      const pkgs = [primary.metadata.package].flat();
      assert.deepEqual(pkgs.map((p: { version: Record<string, string> }) => `${p.version['@_ver']}-${p.version['@_rel']}`), ['1.0-2']);

      const srv = await serveDir(join(dir, 'repo'));
      server = srv.server;
      const dnf = dnfClient(join(dir, 'client'), `${srv.url}/rpm/fedora/`);
      const q = await dnf(['repoquery', '--qf', '%{name}-%{epoch}:%{version}-%{release}.%{arch}', 'hello']);
      assert.equal(q.code, 0, q.stderr);
      assert.equal(q.stdout.trim(), 'hello-0:1.0-2.x86_64');
      const files = await dnf(['repoquery', '-l', 'hello']);
      assert.match(files.stdout, /\/usr\/share\/hello\/README/, 'filelists are read');
      const dl = await dnf(['download', `--destdir=${join(dir, 'dl')}`, 'hello']);
      assert.equal(dl.code, 0, dl.stderr);
      assert.deepEqual(await readdir(join(dir, 'dl')), ['hello-1.0-2.x86_64.rpm']);
    });
  });

  describe('when versions use epochs, ~ and ^, and the repository is signed', () => {
    it('orders them as rpm does, createrepo_c agrees on primary, and dnf with repo_gpgcheck accepts repomd.xml.asc', async () => {
      const list = [
        { name: 'alpha', version: '1.0~rc1', release: '1' },
        { name: 'beta', version: '1.0^git1', release: '1' },
        { name: 'gamma', version: '0.5', release: '1', epoch: 1 },
        { name: 'noarchy', version: '3', release: '1', arch: 'noarch', requires: 'alpha' },
      ];
      const rpms = await buildRpms(join(dir, 'build'), list);
      const later = await buildRpms(join(dir, 'build2'), [
        { name: 'alpha', version: '1.0', release: '1' },
        { name: 'beta', version: '1.0', release: '1' },
        { name: 'gamma', version: '9.0', release: '1' },
      ]);
      const key = await makeGpgKey(join(dir, 'gnupg'));
      builder = await open({ gpgKey: key.fingerprint, gpgHome: join(dir, 'gnupg') });
      const incoming = join(dir, 'incoming');
      await writeBatch(incoming, 'first', 'el', [...rpms].map(([name, data]) => ({ name, data })));
      await builder.runOnce();
      await writeBatch(incoming, 'second', 'el', [...later].map(([name, data]) => ({ name, data })));
      await builder.runOnce();

      const srv = await serveDir(join(dir, 'repo'));
      server = srv.server;
      const dnf = dnfClient(join(dir, 'client'), `${srv.url}/rpm/el/`, key.publicKeyFile);
      const q = await dnf(['repoquery', '--qf', '%{name}-%{epoch}:%{version}-%{release}.%{arch}']);
      assert.equal(q.code, 0, q.stderr);
      // alpha 1.0 beats 1.0~rc1; beta 1.0^git1 beats 1.0; gamma 1:0.5 beats 9.0 (no epoch).
      assert.deepEqual(q.stdout.trim().split('\n').sort(), ['alpha-0:1.0-1.x86_64', 'beta-0:1.0^git1-1.x86_64', 'gamma-1:0.5-1.x86_64', 'noarchy-0:3-1.noarch']);
      const dl = await dnf(['download', `--destdir=${join(dir, 'dl')}`, 'alpha', 'noarchy']);
      assert.equal(dl.code, 0, dl.stderr);
      assert.deepEqual((await readdir(join(dir, 'dl'))).sort(), ['alpha-1.0-1.x86_64.rpm', 'noarchy-3-1.noarch.rpm']);

      // A key that did not sign repomd.xml is refused: the signature really is checked.
      const other = await makeGpgKey(join(dir, 'gnupg-other'));
      const bad = await dnfClient(join(dir, 'client2'), `${srv.url}/rpm/el/`, other.publicKeyFile)(['repoquery', 'alpha']);
      assert.notEqual(bad.code, 0);

      // createrepo_c over the same files writes the same primary entries (ours come from our reader).
      type Pkg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      const parse = async (repo: string): Promise<Pkg[]> => {
        const md = await readFile(join(repo, 'repodata/repomd.xml'), 'utf8');
        const h = /<data type="primary">[\s\S]*?<location href="([^"]+)"/.exec(md)![1]!;
        const x = new XMLParser({ ignoreAttributes: false }).parse(gunzipSync(await readFile(join(repo, h))).toString());
        return ([x.metadata.package].flat() as Pkg[]).sort((a, b) => (a.name < b.name ? -1 : 1));
      };
      const ours = await parse(join(dir, 'repo/rpm/el'));
      const cr = await run('createrepo_c', ['--no-database', '--simple-md-filenames', join(dir, 'repo/rpm/el')]);
      assert.equal(cr.code, 0, cr.stderr);
      // createrepo_c also sees the replaced files still waiting out their grace period.
      const ids = new Set(ours.map((p) => p.checksum['#text'] as string));
      const theirs = (await parse(join(dir, 'repo/rpm/el'))).filter((p) => ids.has(p.checksum['#text'] as string));
      const pick = (p: Pkg): unknown => ({
        name: p.name,
        arch: p.arch,
        version: p.version,
        checksum: p.checksum,
        size: p.size,
        location: p.location,
        headerRange: p.format['rpm:header-range'],
        provides: p.format['rpm:provides'],
        requires: p.format['rpm:requires'],
        sourcerpm: p.format['rpm:sourcerpm'],
        summary: p.summary,
      });
      assert.deepEqual(ours.map(pick), theirs.map(pick));
    });
  });
});
