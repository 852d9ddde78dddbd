import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { buildCompressedIndex, type ChunkCache, type OutCodec } from '../../../repo-builder/compress.js';
import { parseListing } from '../../../repo-builder/listing.js';
import { xmlEscape } from '../../../repo-builder/xml.js';

const execFileP = promisify(execFile);

/** An in-memory chunk cache that counts what it had to make. */
function memCache(): ChunkCache & { made: number } {
  const m = new Map<string, Buffer>();
  const c = {
    made: 0,
    getChunks: async (keys: string[], codec: OutCodec) => new Map(keys.filter((k) => m.has(`${codec}${k}`)).map((k) => [k, m.get(`${codec}${k}`)!])),
    putChunks: async (entries: { key: string; data: Buffer }[], codec: OutCodec) => {
      c.made += entries.length;
      for (const e of entries) m.set(`${codec}${e.key}`, e.data);
    },
  };
  return c;
}

const opts = { gzipLevel: 6, xzPreset: 1, chunkEntries: 16, concurrency: 2 };

describe('index files', function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-idx-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('when an index is compressed in chunks', () => {
    it('makes .gz and .xz files that gzip and xz (one stream) decode to the plain index', async () => {
      const entries = Array.from({ length: 500 }, (_, k) => ({ key: `p${k}`, text: `Package: p${k}\nVersion: 1.0-${k}\n\n` }));
      const idx = await buildCompressedIndex('HEAD\n', entries, 'TAIL\n', ['gz', 'xz'], memCache(), opts);
      assert.equal(idx.plain.toString(), `HEAD\n${entries.map((e) => e.text).join('')}TAIL\n`);
      await writeFile(join(dir, 'P.xz'), idx.xz!);
      await writeFile(join(dir, 'P.gz'), idx.gz);
      const { stdout: xzList } = await execFileP('xz', ['--robot', '-lv', join(dir, 'P.xz')]);
      assert.match(xzList, /^file\t1\t/m, 'a single xz stream (apt reads only the first)');
      const { stdout: x } = await execFileP('xz', ['-dc', join(dir, 'P.xz')], { encoding: 'buffer', maxBuffer: 1 << 26 });
      assert.ok(Buffer.compare(x, idx.plain) === 0);
      assert.ok(Buffer.compare(gunzipSync(idx.gz), idx.plain) === 0);
      await execFileP('xz', ['-t', join(dir, 'P.xz')]);
    });
    it('recompresses only the chunks that changed when one entry is added', async () => {
      const cache = memCache();
      const entries = Array.from({ length: 2000 }, (_, k) => ({ key: `p${String(k).padStart(5, '0')}`, text: `Package: p${k}\n\n` }));
      await buildCompressedIndex('', entries, '', ['gz', 'xz'], cache, opts);
      const first = cache.made;
      assert.ok(first > 100);
      entries.splice(1000, 0, { key: 'p01000x', text: 'Package: new\n\n' });
      const idx = await buildCompressedIndex('', entries, '', ['gz', 'xz'], cache, opts);
      assert.ok(cache.made - first <= 4, `made ${cache.made - first} new chunks`);
      await writeFile(join(dir, 'Q.xz'), idx.xz!);
      const { stdout: x } = await execFileP('xz', ['-dc', join(dir, 'Q.xz')], { encoding: 'buffer', maxBuffer: 1 << 26 });
      assert.ok(Buffer.compare(x, idx.plain) === 0);
    });
  });

  describe('when package text goes into XML', () => {
    it('escapes markup and drops characters XML 1.0 cannot carry', () => {
      assert.equal(xmlEscape('a<b>&"c"\u0001\u0007d\ud800'), 'a&lt;b&gt;&amp;&quot;c&quot;d');
    });
  });

  describe('when a listing is parsed', () => {
    const good = { version: 1, batch: 'job-1', job: '1', channel: 'stable', files: [{ name: 'a_1_amd64.deb', size: 1, sha256: 'a'.repeat(64) }] };
    const bad = (patch: Record<string, unknown>, re: RegExp): void => {
      assert.throws(() => parseListing(JSON.stringify({ ...good, ...patch }), 'job-1', 100), re);
    };
    it('accepts the contract and refuses everything else with a reason', () => {
      assert.equal(parseListing(JSON.stringify(good), 'job-1', 100).channel, 'stable');
      bad({ version: 2 }, /schema: version/);
      bad({ extra: 1 }, /schema/);
      bad({ files: [] }, /schema: files/);
      bad({ files: [{ name: 'a.deb', size: -1, sha256: 'a'.repeat(64) }] }, /schema: files\.0\.size/);
      bad({ files: [{ name: 'a.deb', size: 1, sha256: 'A'.repeat(64) }] }, /sha256 must be 64 lowercase hex/);
      bad({ files: [{ name: '/etc/passwd.deb', size: 1, sha256: 'a'.repeat(64) }] }, /absolute/);
      bad({ files: [{ name: '..', size: 1, sha256: 'a'.repeat(64) }] }, /"\.\." segment/);
      bad({ files: [{ name: 'a\\b.deb', size: 1, sha256: 'a'.repeat(64) }] }, /forbidden character/);
      bad({ files: [{ name: '.hidden.deb', size: 1, sha256: 'a'.repeat(64) }] }, /hidden/);
      bad({ files: [good.files[0], good.files[0]] }, /listed twice/);
      bad({ channel: 'a/b' }, /invalid channel name/);
      bad({ batch: 'job-2' }, /listing names batch "job-2"/);
      assert.throws(() => parseListing(JSON.stringify({ ...good, files: Array(3).fill(0).map((_, k) => ({ ...good.files[0], name: `${k}.deb` })) }), 'job-1', 2), /3 files \(limit 2\)/);
    });
  });
});
