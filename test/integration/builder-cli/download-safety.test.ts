import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { downloadArtifact, type ArtifactView } from '../../../cli/builder/lib/download.js';
import { RpcPeer, isBuilderError } from '../../../protocol/index.js';
import { duplexPair } from '../../unit/protocol/helpers/raw-end.js';

/**
 * `builder download` must keep its promise (files land under --out, checked, or not at all) even
 * when the master misbehaves. The real master never sends these names or bytes, so the far end
 * here is an RpcPeer of our own serving `artifact.read` from a buffer, over an in-memory duplex.
 */
describe('builder download when the master sends something wrong', function () {
  let tmp: string;
  let out: string;
  let elsewhere: string;
  const peers: RpcPeer[] = [];

  /** A client peer whose far end serves artifact.read with `serve` (bytes for the range asked). */
  function client(serve: (offset: number, length: number) => Uint8Array): RpcPeer {
    const [a, b] = duplexPair();
    const master = new RpcPeer(a, { role: 'admin', name: 'admin' });
    master.handle('artifact.read', ({ offset, length }) => ({ data: serve(offset, length) as Uint8Array<ArrayBuffer> }));
    const c = new RpcPeer(b, { role: 'master', name: 'master' });
    peers.push(master, c);
    return c;
  }
  const content = Buffer.from('the artifact\n'.repeat(1000));
  const good = (o: number, l: number) => content.subarray(o, o + l);
  const view = (name: string, over: Partial<ArtifactView> = {}): ArtifactView => ({
    id: 1,
    jobId: 1,
    attempt: 1,
    name,
    size: content.length,
    sha256: createHash('sha256').update(content).digest('hex'),
    kind: 'image',
    createdAt: 0,
    ...over,
  });
  async function refused(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
    try {
      await p;
    } catch (e) {
      assert.ok(isBuilderError(e), `not a BuilderError: ${String(e)}`);
      assert.equal(e.code, code);
      assert.match(e.message, re);
      return;
    }
    assert.fail('the download succeeded');
  }

  beforeEach(async function () {
    tmp = await mkdtemp(join(tmpdir(), 'builder-dl-'));
    out = join(tmp, 'out');
    elsewhere = join(tmp, 'elsewhere');
    await mkdir(out);
    await mkdir(elsewhere);
  });
  afterEach(async function () {
    for (const p of peers.splice(0)) p.destroy();
    await rm(tmp, { recursive: true, force: true });
  });

  it('writes a good artifact in chunks and checks it', async function () {
    const c = client(good);
    const dest = await downloadArtifact(c, view('dir/ok.txt'), out, { chunkBytes: 1000, window: 3 });
    assert.equal(dest, join(out, 'dir', 'ok.txt'));
    assert.deepEqual((await readdir(join(out, 'dir'))).sort(), ['ok.txt']);
  });

  for (const name of ['../escape.txt', 'a/../../escape.txt', '/etc/escape.txt', 'a//b', './x', 'a\\b']) {
    it(`refuses the name ${JSON.stringify(name)} and writes nothing`, async function () {
      await refused(downloadArtifact(client(good), view(name), out), 'BUILDER_ERR_INVALID_NAME', /invalid path/);
      assert.deepEqual(await readdir(out), []);
      assert.deepEqual(await readdir(tmp), ['elsewhere', 'out']);
    });
  }

  it('refuses to write through a symlinked directory under --out', async function () {
    await symlink(elsewhere, join(out, 'sub'));
    await refused(downloadArtifact(client(good), view('sub/x.txt'), out), 'BUILDER_ERR_INVALID_NAME', /not a plain directory/);
    assert.deepEqual(await readdir(elsewhere), []);
  });

  it('refuses to write through a symlink planted at the temporary name', async function () {
    await symlink(join(elsewhere, 'target'), join(out, 'x.txt.part'));
    await assert.rejects(downloadArtifact(client(good), view('x.txt'), out), /ELOOP|symbolic link/);
    assert.deepEqual(await readdir(elsewhere), []);
  });

  it('keeps nothing when the bytes do not match the sha256', async function () {
    const bad = (o: number, l: number) => {
      const b = Buffer.from(content.subarray(o, o + l));
      if (o === 0) b[0] = 0x58;
      return b;
    };
    await refused(downloadArtifact(client(bad), view('x.txt'), out, { chunkBytes: 4096 }), 'BUILDER_ERR_CHECKSUM', /sha256 [0-9a-f]{64} does not match/);
    assert.deepEqual(await readdir(out), []);
  });

  it('keeps nothing when a chunk comes back short', async function () {
    const short = (o: number, l: number) => content.subarray(o, o + Math.max(1, l - 10));
    await refused(downloadArtifact(client(short), view('x.txt'), out), 'BUILDER_ERR_CHECKSUM', /sent \d+ bytes at offset 0, expected/);
    assert.deepEqual(await readdir(out), []);
  });

  it('does not replace a file without force, nor a symlink even with force', async function () {
    await writeFile(join(out, 'x.txt'), 'mine');
    await refused(downloadArtifact(client(good), view('x.txt'), out), 'BUILDER_ERR_CONFLICT', /already exists/);
    await symlink(join(elsewhere, 'target'), join(out, 'y.txt'));
    await refused(downloadArtifact(client(good), view('y.txt'), out, { force: true }), 'BUILDER_ERR_CONFLICT', /not a regular file/);
    assert.deepEqual(await readdir(elsewhere), []);
    assert.ok((await lstat(join(out, 'y.txt'))).isSymbolicLink());
  });
});
