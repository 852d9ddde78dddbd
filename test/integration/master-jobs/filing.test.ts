import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { artifactKindOf, fileAttempt, type FilingPlaces } from '../../../master/jobs/index.js';
import { tempDir } from '../../helpers/farm.js';
import { sha } from './helpers.js';

describe('filing an attempt’s artifacts', function () {
  let dir: string;
  let places: FilingPlaces;

  beforeEach(async function () {
    dir = await tempDir();
    places = { uploads: join(dir, 'up'), packages: join(dir, 'pk'), images: join(dir, 'img'), incoming: join(dir, 'in') };
    await Promise.all(Object.values(places).map((p) => mkdir(p, { recursive: true })));
  });
  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function put(path: string, body: string) {
    await mkdir(join(places.uploads, path, '..'), { recursive: true });
    await writeFile(join(places.uploads, path), body);
    return { path, size: Buffer.byteLength(body), sha256: sha(body) };
  }

  describe('when the master died after the batch directory and before the listing', function () {
    it('redoes the batch whole on the repeated finish, and files nothing twice', async function () {
      const arts = [await put('a_1_amd64.deb', 'deb'), await put('x/b.rpm', 'rpm'), await put('x/disk.img', 'image')];
      const meta = { jobId: 7, attempt: 2, channel: 'stable' };
      const first = await fileAttempt(places, meta, arts);
      assert.equal(first.batch, 'job-7-a2');
      assert.deepEqual(first.notes, []);
      // The crash: the listing never made it, and the batch directory holds a stray partial file.
      await unlink(join(places.incoming, 'job-7-a2.listing.json'));
      await writeFile(join(places.incoming, 'job-7-a2', 'partial.deb.tmp'), 'junk');
      const again = await fileAttempt(places, meta, arts);
      assert.deepEqual(again.filed.map((f) => f.storedAt), first.filed.map((f) => f.storedAt));
      assert.deepEqual((await readdir(join(places.incoming, 'job-7-a2'))).sort(), ['a_1_amd64.deb', 'b.rpm']);
      const listing = JSON.parse(await readFile(join(places.incoming, 'job-7-a2.listing.json'), 'utf8'));
      assert.deepEqual(listing.files.map((f: { name: string }) => f.name).sort(), ['a_1_amd64.deb', 'b.rpm']);
      assert.equal((await stat(join(places.images, 'x', 'disk.img'))).size, 5);
      assert.deepEqual((await readdir(places.incoming)).filter((n) => n.startsWith('.')), [], 'no temporary listing left');
    });
  });

  describe('when names collide or the repository cannot take a type', function () {
    it('keeps every artifact, files one per base name, and says what it left out', async function () {
      const arts = [await put('one/p.deb', '1'), await put('two/p.deb', '22'), await put('k.udeb', 'u')];
      const r = await fileAttempt(places, { jobId: 1, attempt: 1, channel: 'c' }, arts);
      assert.equal(r.filed.length, 3);
      assert.deepEqual(await readdir(join(places.incoming, 'job-1-a1')), ['p.deb']);
      assert.ok(r.notes.some((n) => /two\/p\.deb: not filed for the repository \(another artifact is named p\.deb\)/.test(n)));
      assert.ok(r.notes.some((n) => /k\.udeb: kept, not filed/.test(n)));
      assert.equal(artifactKindOf('k.udeb'), 'package');
      assert.equal(artifactKindOf('src.tar.xz'), 'image');
    });

    it('makes no batch for an attempt without packages, and reports an artifact that is not there', async function () {
      const r = await fileAttempt(places, { jobId: 2, attempt: 1, channel: 'c' }, [await put('log.txt', 'x'), { path: 'gone.deb', size: 3, sha256: sha('abc') }]);
      assert.equal(r.batch, null);
      assert.deepEqual(r.notes, ['gone.deb: not uploaded']);
      assert.deepEqual(await readdir(places.incoming), []);
    });
  });
});
