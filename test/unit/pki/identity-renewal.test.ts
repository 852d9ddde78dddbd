import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCaCertificate, generateRsaKeyPair, identityPaths, replaceIdentityPair, settleIdentity, withIdentityLock, writePrivateFile } from '../../../pki/index.js';

/** A key pair and a (self-signed) certificate for it. */
async function pair(cn: string): Promise<{ key: string; cert: string }> {
  const keys = await generateRsaKeyPair();
  return { key: keys.privateKeyPem, cert: createCaCertificate({ ...keys, commonName: cn }).certPem };
}

describe('identity pair replacement (pki/identity-renewal)', function () {
  this.timeout(30_000);
  let dir: string;
  let old: { key: string; cert: string };
  let next: { key: string; cert: string };

  before(async () => {
    [old, next] = [await pair('s-1'), await pair('s-1')];
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'builder-identity-'));
    const p = identityPaths(dir);
    await writePrivateFile(p.key, old.key);
    await writeFile(p.cert, old.cert);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const files = async () => ({ key: await readFile(identityPaths(dir).key, 'utf8'), cert: await readFile(identityPaths(dir).cert, 'utf8'), names: (await readdir(dir)).sort() });

  it('replaces both files, leaving nothing beside them, and has nothing to settle afterwards', async () => {
    await replaceIdentityPair(dir, next.key, next.cert);
    assert.deepEqual(await files(), { ...next, names: ['cert.pem', 'key.pem'] });
    assert.equal(await settleIdentity(dir), 'none');
  });

  it('refuses a certificate that does not carry the new key, and changes nothing', async () => {
    await assert.rejects(replaceIdentityPair(dir, next.key, old.cert), /does not carry the new key/);
    assert.deepEqual(await files(), { ...old, names: ['cert.pem', 'key.pem'] });
  });

  it('drops a new pair that was written but not moved (a crash before the first rename)', async () => {
    const p = identityPaths(dir);
    await writePrivateFile(`${p.key}.new`, next.key);
    await writeFile(`${p.cert}.new`, next.cert);
    assert.equal(await settleIdentity(dir), 'discarded');
    assert.deepEqual(await files(), { ...old, names: ['cert.pem', 'key.pem'] });
  });

  it('completes a replacement whose certificate rename reached the disk before the key rename', async () => {
    const p = identityPaths(dir);
    await writePrivateFile(`${p.key}.new`, next.key);
    await writeFile(p.cert, next.cert);
    assert.equal(await settleIdentity(dir), 'completed');
    assert.deepEqual(await files(), { ...next, names: ['cert.pem', 'key.pem'] });
  });

  it('completes a replacement cut between the two renames', async () => {
    const p = identityPaths(dir);
    await writePrivateFile(p.key, next.key);
    await writeFile(`${p.cert}.new`, next.cert);
    assert.equal(await settleIdentity(dir), 'completed');
    assert.deepEqual(await files(), { ...next, names: ['cert.pem', 'key.pem'] });
  });

  it('throws and deletes nothing when no key matches a certificate', async () => {
    const p = identityPaths(dir);
    const third = await pair('s-1');
    await writePrivateFile(p.key, third.key);
    await writeFile(`${p.cert}.new`, next.cert);
    await assert.rejects(settleIdentity(dir), /no key in .* matches a certificate there/);
    assert.deepEqual((await readdir(dir)).sort(), ['cert.pem', 'cert.pem.new', 'key.pem']);
  });

  it('drops a lone new certificate that does not carry the key in place', async () => {
    await writeFile(`${identityPaths(dir).cert}.new`, next.cert);
    assert.equal(await settleIdentity(dir), 'discarded');
    assert.deepEqual(await files(), { ...old, names: ['cert.pem', 'key.pem'] });
  });
});

describe('the identity directory lock (pki/identity-renewal withIdentityLock)', function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'builder-idlock-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lets one holder at a time in, and the next once it is done', async () => {
    let release!: () => void;
    const first = withIdentityLock(dir, () => new Promise<string>((r) => (release = () => r('first'))));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await withIdentityLock(dir, async () => 'second'), { held: true });
    release();
    assert.deepEqual(await first, { value: 'first' });
    assert.deepEqual(await withIdentityLock(dir, async () => 'third'), { value: 'third' });
  });

  it('is free again at once when its holder is SIGKILLed (nothing stale for 10 minutes)', async () => {
    const mod = new URL('../../../pki/identity-renewal.js', import.meta.url).href;
    // A process that takes the lock and waits forever inside it.
    const child = spawn(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(mod)}); await m.withIdentityLock(${JSON.stringify(dir)}, () => { process.stdout.write('held\\n'); return new Promise(() => {}); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
        child.once('exit', (c) => reject(new Error(`the holder exited ${String(c)}`)));
      });
      assert.deepEqual(await withIdentityLock(dir, async () => 'mine'), { held: true });
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((r) => child.once('exit', r));
    assert.deepEqual(await withIdentityLock(dir, async () => 'mine'), { value: 'mine' });
  });
});
