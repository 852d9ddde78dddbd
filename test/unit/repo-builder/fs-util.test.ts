import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { atomicWrite, hashFile, placeFile } from '../../../repo-builder/fs-util.js';

const execFileP = promisify(execFile);

describe('repo-builder file helpers', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-fs-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('when hashing files', () => {
    it('streams a file over the in-memory size and reads a small one whole', async () => {
      const big = randomBytes(5 * 1024 * 1024 + 3);
      await writeFile(join(dir, 'big'), big);
      const h = await hashFile(join(dir, 'big'));
      assert.equal(h.sha256, createHash('sha256').update(big).digest('hex'));
      assert.equal(h.size, big.length);
      assert.equal(h.data, undefined);
      await writeFile(join(dir, 'small'), 'abc');
      const s = await hashFile(join(dir, 'small'));
      assert.equal(s.data?.toString(), 'abc');
    });
    it('refuses a symlink (ELOOP) and reports a FIFO as not a regular file without blocking', async () => {
      await writeFile(join(dir, 'target'), 'x');
      await symlink(join(dir, 'target'), join(dir, 'link'));
      await assert.rejects(hashFile(join(dir, 'link')), { code: 'ELOOP' });
      await execFileP('mkfifo', [join(dir, 'fifo')]);
      assert.equal((await hashFile(join(dir, 'fifo'))).isFile, false);
    });
  });

  describe('when writing and placing files', () => {
    it('replaces atomically, leaves no temporary file, and never overwrites a placed file', async () => {
      await atomicWrite(join(dir, 'a/b/Release'), 'one', false);
      await atomicWrite(join(dir, 'a/b/Release'), 'two', true);
      assert.deepEqual(await readdir(join(dir, 'a/b')), ['Release']);
      await writeFile(join(dir, 'src1'), 'first');
      await writeFile(join(dir, 'src2'), 'second');
      assert.equal(await placeFile(join(dir, 'src1'), join(dir, 'pool/x/p.deb')), true);
      assert.equal(await placeFile(join(dir, 'src2'), join(dir, 'pool/x/p.deb')), false);
      assert.equal((await hashFile(join(dir, 'pool/x/p.deb'))).data?.toString(), 'first');
    });
  });
});
