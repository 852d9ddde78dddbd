import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UploadTable } from '../../../master/jobs/upload-table.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

describe('master/jobs UploadTable', function () {
  let dir: string;
  let t: UploadTable;
  beforeEach(async function () {
    dir = await mkdtemp(join(tmpdir(), 'ut-'));
  });
  afterEach(async function () {
    await t?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps an owner’s count right when two begins of other bytes replace the same open upload at once, and limits each owner', async function () {
    t = new UploadTable('artifact', 100, 2, 60_000, {});
    await t.begin('k', dir, 'out.bin', { size: 3, sha256: sha('aaa') }, 'w1');
    // A repeated begin (say after a reconnect) overlaps another one for the same name.
    const [b, c] = await Promise.allSettled([
      t.begin('k', dir, 'out.bin', { size: 3, sha256: sha('bbb') }, 'w1'),
      t.begin('k', dir, 'out.bin', { size: 3, sha256: sha('ccc') }, 'w1'),
    ]);
    assert.equal(b.status, 'fulfilled');
    assert.equal(c.status, 'fulfilled');
    await t.abortPrefix('k', false);
    assert.equal(t.isOpen('k'), false);
    // Nothing of w1 is open now: it can open its 2.
    await t.begin('x1', dir, 'x1.bin', { size: 3, sha256: sha('x1') }, 'w1');
    await t.begin('x2', dir, 'x2.bin', { size: 3, sha256: sha('x2') }, 'w1');
    await assert.rejects(t.begin('x3', dir, 'x3.bin', { size: 3, sha256: sha('x3') }, 'w1'), /more than 2 artifact uploads in progress from w1/);
    // Another owner is not held back by w1's.
    await t.begin('y1', dir, 'y1.bin', { size: 3, sha256: sha('y1') }, 'w2');
  });
});
