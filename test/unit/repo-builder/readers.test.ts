import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { decompressBounded, xzDeclaredSize } from '../../../repo-builder/decompress.js';
import { controlFromTarFast, readDeb } from '../../../repo-builder/deb-reader.js';
import { pack } from 'tar-stream';
import { readDsc } from '../../../repo-builder/dsc-reader.js';
import { parseDeb822Stanza } from '../../../repo-builder/deb822.js';
import { readRpm } from '../../../repo-builder/rpm-reader.js';
import { makeDeb } from '../../integration/repo-builder/helpers/synth-deb.js';
import { buildRpms } from '../../integration/repo-builder/helpers/tools.js';

const execFileP = promisify(execFile);

/** A .deb made by the real dpkg-deb, with control.tar compressed by `codec`. */
async function dpkgDeb(dir: string, name: string, codec: 'gzip' | 'xz' | 'zstd', extra = ''): Promise<string> {
  const root = join(dir, `${name}-${codec}`);
  await mkdir(join(root, 'DEBIAN'), { recursive: true });
  await mkdir(join(root, 'usr/share', name), { recursive: true });
  await writeFile(join(root, 'usr/share', name, 'README'), 'hi\n');
  await writeFile(
    join(root, 'DEBIAN/control'),
    `Package: ${name}\nVersion: 2:1.0~rc1-3\nArchitecture: amd64\nMaintainer: T <t@builder.invalid>\nDepends: libc6 (>= 2.36)\n${extra}Description: a test\n long text\n .\n more\n`,
  );
  const out = join(dir, `${name}-${codec}.deb`);
  await execFileP('dpkg-deb', [`-Z${codec}`, '--root-owner-group', '-b', root, out]);
  return out;
}

describe('package readers', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-read-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('when reading a .deb made by dpkg-deb', () => {
    for (const codec of ['gzip', 'xz', 'zstd'] as const) {
      it(`reads the control stanza from control.tar with ${codec}`, async () => {
        const info = await readDeb(await dpkgDeb(dir, 'hello', codec));
        assert.equal(info.name, 'hello');
        assert.equal(info.version, '2:1.0~rc1-3');
        assert.equal(info.arch, 'amd64');
        assert.deepEqual(info.control.map((f) => f.name), ['Package', 'Version', 'Architecture', 'Maintainer', 'Depends', 'Description']);
        assert.equal(info.control.find((f) => f.name === 'Description')!.value, 'a test\n long text\n .\n more');
      });
    }
    it('drops fields the index computes, so a package cannot forge its own SHA256', async () => {
      const info = await readDeb(await dpkgDeb(dir, 'forger', 'xz', 'SHA256: 0000\nFilename: ../../etc/passwd\nSize: 1\n'));
      assert.deepEqual(info.control.map((f) => f.name), ['Package', 'Version', 'Architecture', 'Maintainer', 'Depends', 'Description']);
    });
  });

  describe('when the test suite writes a .deb itself', () => {
    it('makes a package dpkg-deb reads', async () => {
      const path = join(dir, 'synth.deb');
      await writeFile(path, await makeDeb({ name: 'synth', version: '1.0-1', arch: 'all' }));
      const { stdout } = await execFileP('dpkg-deb', ['-f', path, 'Package', 'Version', 'Architecture']);
      assert.equal(stdout, 'Package: synth\nVersion: 1.0-1\nArchitecture: all\n');
      const { stdout: list } = await execFileP('dpkg-deb', ['-c', path]);
      assert.match(list, /\.\/usr\/share\/synth\/README/);
      assert.equal((await readDeb(path)).name, 'synth');
    });
  });

  describe('when control.tar uses pax headers', () => {
    it('leaves the archive to tar-stream and still finds ./control', async () => {
      const p = pack();
      const chunks: Buffer[] = [];
      p.on('data', (c: unknown) => {
        chunks.push(c as Buffer);
      });
      const ended = new Promise<void>((r) => p.on('end', () => r()));
      p.entry({ name: `./${'long-name-'.repeat(15)}`, size: 2 }, 'hi');
      const control = 'Package: paxed\nVersion: 1.0-1\nArchitecture: all\nDescription: x\n';
      p.entry({ name: './control', size: control.length }, control);
      p.finalize();
      await ended;
      const tar = Buffer.concat(chunks);
      assert.equal(controlFromTarFast(tar, 1 << 20), undefined, 'the fast path steps aside');
      const member = (name: string, data: Buffer): Buffer => {
        const h = Buffer.alloc(60, 0x20);
        h.write(name, 0, 'latin1');
        h.write(String(data.length), 48, 'latin1');
        h.write('`\n', 58, 'latin1');
        return Buffer.concat([h, data, data.length % 2 ? Buffer.from('\n') : Buffer.alloc(0)]);
      };
      const deb = Buffer.concat([Buffer.from('!<arch>\n'), member('debian-binary', Buffer.from('2.0\n')), member('control.tar.gz', gzipSync(tar)), member('data.tar.gz', gzipSync(Buffer.alloc(1024)))]);
      const info = await readDeb(deb);
      assert.equal(info.name, 'paxed');
    });
  });

  describe('when a .deb is damaged', () => {
    it('refuses truncation, bad magic, a wrong member order and a control bomb', async () => {
      const good = await readFile(await dpkgDeb(dir, 'dmg', 'gzip'));
      await assert.rejects(readDeb(good.subarray(0, 100)), /truncated/);
      await assert.rejects(readDeb(Buffer.from('not an ar archive at all')), /no ar magic/);
      const swapped = Buffer.from(good);
      swapped.write('debian-bonary', 8, 'latin1');
      await assert.rejects(readDeb(swapped), /first member is not debian-binary/);
      // 64 MiB of zeros gzip to ~64 KiB: refused by the decompressed-size limit, not read.
      const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024));
      const limits = { maxControlBytes: 1 << 20, maxControlUncompressedBytes: 1 << 20, maxRpmHeaderBytes: 1 << 20, maxRpmHeaderEntries: 1000 };
      assert.throws(() => decompressBounded('gz', bomb, limits.maxControlUncompressedBytes), /exceeds the limit/);
    });
    it('refuses control files that would inject stanzas into Packages', () => {
      assert.throws(() => parseDeb822Stanza('Package: a\nVersion: 1\n\nPackage: b\n'), /more than one stanza/);
      assert.throws(() => parseDeb822Stanza('Package: a\nPackage: b\n'), /repeated field/);
      assert.throws(() => parseDeb822Stanza('Package: a\nno colon here\n'), /not a field/);
    });
  });

  describe('when decompressing xz and zstd', () => {
    it('reads the declared size from the xz index and refuses more than the limit', async () => {
      const data = Buffer.alloc(300_000, 7);
      const { stdout } = await execFileP('sh', ['-c', `head -c 300000 /dev/zero | tr '\\0' '\\7' | xz -c | base64 -w0`]);
      const xz = Buffer.from(stdout, 'base64');
      assert.equal(xzDeclaredSize(xz), 300_000);
      assert.deepEqual(decompressBounded('xz', xz, 1 << 20), data);
      assert.throws(() => decompressBounded('xz', xz, 1000), /exceeds the limit/);
      const { stdout: z } = await execFileP('sh', ['-c', `head -c 300000 /dev/zero | tr '\\0' '\\7' | zstd -q -c | base64 -w0`]);
      assert.deepEqual(decompressBounded('zst', Buffer.from(z, 'base64'), 1 << 20), data);
      assert.throws(() => decompressBounded('zst', Buffer.from(z, 'base64'), 1000), /exceeds the limit/);
    });
  });

  describe('when reading an .rpm made by rpmbuild', () => {
    it('reads what rpm -qp reads, and refuses a truncated copy', async () => {
      const rpms = await buildRpms(dir, [{ name: 'rhello', version: '1.0~rc1', release: '2', epoch: 3, requires: 'bash >= 5' }]);
      const file = 'rhello-1.0~rc1-2.x86_64.rpm';
      const path = join(dir, file);
      await writeFile(path, rpms.get(file)!);
      const info = await readRpm(path);
      const { stdout } = await execFileP('rpm', ['-qp', '--qf', '%{NAME}|%{EPOCH}|%{VERSION}|%{RELEASE}|%{ARCH}|%{SUMMARY}|%{SOURCERPM}|%{SIZE}\\n', path]);
      assert.equal(stdout.trim(), [info.name, info.epoch, info.version, info.release, info.arch, info.summary, info.sourcerpm, info.installedSize].join('|'));
      assert.ok(info.requires.some((d) => d.name === 'bash' && d.flags === 'GE' && d.ver === '5'));
      assert.ok(info.provides.some((d) => d.name === 'rhello' && d.flags === 'EQ' && d.epoch === '3'));
      assert.ok(!info.requires.some((d) => d.name.startsWith('rpmlib(')));
      assert.deepEqual(info.files.find((f) => f.path === '/usr/share/rhello/README'), { path: '/usr/share/rhello/README', type: 'file' });
      assert.equal(info.changelogs.length, 1);
      const data = await readFile(path);
      await assert.rejects(readRpm(data.subarray(0, data.length - 1)), /truncated payload/);
      await assert.rejects(readRpm(data.subarray(0, 150)), /truncated/);
      await assert.rejects(readRpm(Buffer.concat([data, Buffer.from('x')])), /trailing data/);
      const badMagic = Buffer.from(data);
      badMagic[96] = 0;
      await assert.rejects(readRpm(badMagic), /bad header magic/);
    });
  });

  describe('when reading a .dsc', () => {
    it('reads Source, Version and its files through a clearsign wrapper', async () => {
      const sha = 'a'.repeat(64);
      const dsc = [
        '-----BEGIN PGP SIGNED MESSAGE-----',
        'Hash: SHA256',
        '',
        'Format: 3.0 (quilt)',
        'Source: hello',
        'Version: 1.0-1',
        'Checksums-Sha256:',
        ` ${sha} 10 hello_1.0.orig.tar.gz`,
        ` ${sha} 20 hello_1.0-1.debian.tar.xz`,
        '-----BEGIN PGP SIGNATURE-----',
        'abc',
        '-----END PGP SIGNATURE-----',
      ].join('\n');
      const path = join(dir, 'hello_1.0-1.dsc');
      await writeFile(path, dsc);
      const info = await readDsc(path, 1 << 20);
      assert.equal(info.source, 'hello');
      assert.equal(info.version, '1.0-1');
      assert.deepEqual(info.files.map((f) => [f.name, f.size, f.sha256]), [
        ['hello_1.0.orig.tar.gz', 10, sha],
        ['hello_1.0-1.debian.tar.xz', 20, sha],
      ]);
    });
  });
});
