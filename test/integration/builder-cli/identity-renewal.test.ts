import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PkiRegistry, caPaths, certMatchesKey, issueIdentity, loadCa } from '../../../pki/index.js';
import { ProcessFarm } from '../../helpers/process-farm.js';
import { builderCli } from './cli-helpers.js';

const DAY = 86_400_000;

describe('the builder CLI renews its own certificate (real master process, real TLS)', function () {
  this.timeout(60_000);
  let farm: ProcessFarm;
  let tmp: string;
  const cli = builderCli(
    () => ['--master', farm.masterAddress, '--identity', farm.adminDir],
    () => ({ BUILDER_CONFIG_DIR: tmp }),
  );

  /** A client identity made 250 days ago for 350 days: in the last third of its life. */
  async function dueIdentity(name: string): Promise<string> {
    const ca = await loadCa(farm.masterDir);
    const reg = await PkiRegistry.open(caPaths(farm.masterDir).registry);
    const dir = join(tmp, name);
    try {
      await issueIdentity(ca, reg, { name, role: 'client', outDir: dir, notBefore: new Date(Date.now() - 250 * DAY), notAfter: new Date(Date.now() + 100 * DAY) });
    } finally {
      await reg.close();
    }
    return dir;
  }

  before(async function () {
    farm = await ProcessFarm.start();
    tmp = await mkdtemp(join(tmpdir(), 'builder-cli-renew-'));
  });
  after(async function () {
    await farm?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('trades a certificate in its last third for a new one of the same lifetime, uses it from the next command on, and the old one is revoked once the new one is used', async function () {
    const dir = await dueIdentity('erin');
    const old = join(tmp, 'erin-old');
    await cp(dir, old, { recursive: true });
    const before = new X509Certificate(await readFile(join(dir, 'cert.pem'), 'utf8'));
    const conn = ['--master', farm.masterAddress, '--identity', dir];

    const first = await cli(['jobs'], { conn });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /^builder: renewed the certificate in .*erin: serial [0-9A-F]+, valid until \d{4}-\d\d-\d\dT/m);
    const cert = new X509Certificate(await readFile(join(dir, 'cert.pem'), 'utf8'));
    const key = await readFile(join(dir, 'key.pem'), 'utf8');
    assert.notEqual(cert.serialNumber, before.serialNumber);
    assert.equal(cert.subject, before.subject, 'same name and role');
    assert.ok(certMatchesKey(cert.toString(), key), 'the new certificate carries the new key');
    assert.notEqual(key, await readFile(join(old, 'key.pem'), 'utf8'), 'a new key, made on this machine');
    const days = (Date.parse(cert.validTo) - Date.now()) / DAY;
    assert.ok(days > 349 && days < 351, `the same 350-day lifetime from now, got ${days}`);

    // The next command connects with the new pair and has nothing to renew.
    const second = await cli(['jobs'], { conn });
    assert.equal(second.code, 0, second.stderr);
    assert.doesNotMatch(second.stderr, /renew/);
    // The new certificate has been used: the one it replaced is revoked.
    const stale = await cli(['jobs'], { conn: ['--master', farm.masterAddress, '--identity', old] });
    assert.equal(stale.code, 4, `the old certificate is refused: ${stale.stderr}`);
  });

  it('renews once when commands run in parallel on one identity directory, and every one of them runs', async function () {
    const dir = await dueIdentity('gina');
    const conn = ['--master', farm.masterAddress, '--identity', dir];
    const runs = await Promise.all(Array.from({ length: 6 }, () => cli(['jobs'], { conn })));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    assert.equal(runs.filter((r) => /renewed the certificate/.test(r.stderr)).length, 1, runs.map((r) => r.stderr).join('---'));
    assert.ok(certMatchesKey(await readFile(join(dir, 'cert.pem'), 'utf8'), await readFile(join(dir, 'key.pem'), 'utf8')), 'a matching pair is left');
    const after = await cli(['jobs'], { conn });
    assert.equal(after.code, 0, after.stderr);
    assert.doesNotMatch(after.stderr, /renew/);
  });

  it('leaves the certificate alone with BUILDER_NO_RENEW=1', async function () {
    const dir = await dueIdentity('frank');
    const before = await readFile(join(dir, 'cert.pem'), 'utf8');
    const r = await cli(['jobs'], { conn: ['--master', farm.masterAddress, '--identity', dir], env: { BUILDER_NO_RENEW: '1' } });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /renew/);
    assert.equal(await readFile(join(dir, 'cert.pem'), 'utf8'), before);
  });
});
