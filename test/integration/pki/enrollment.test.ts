import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import tls from 'node:tls';
import { once } from 'node:events';
import { PkiRegistry, caPaths, certFingerprint, identityPaths, loadCa } from '../../../pki/index.js';
import { FrameDecoder, decodeBody, isBuilderError } from '../../../protocol/index.js';
import { SlaveAgent, enrollSlave } from '../../../slave/index.js';
import { startFarm, tempDir, type TestFarm } from '../../helpers/farm.js';

async function newToken(farm: TestFarm, ttlMs = 60_000, now = Date.now()): Promise<string> {
  const reg = await PkiRegistry.open(caPaths(farm.dir).registry);
  try {
    return (await reg.createToken(ttlMs, now)).token;
  } finally {
    await reg.close();
  }
}

describe('enrollment', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let fingerprint: string;

  beforeEach(async function () {
    farm = await startFarm();
    fingerprint = certFingerprint((await loadCa(farm.dir)).certPem);
  });
  afterEach(async function () {
    await farm.close();
  });

  describe('when a slave enrolls with a fresh token and the right fingerprint', function () {
    it('gets a certificate for a key it made itself, and then connects and says hello', async function () {
      const dir = await tempDir();
      const token = await newToken(farm);
      const r = await enrollSlave({ master: farm.enrollAddress, token, caFingerprint: fingerprint, dir, name: 'worker-1' });
      assert.equal(r.name, 'worker-1');
      const ip = identityPaths(dir);
      assert.equal((await stat(ip.key)).mode & 0o777, 0o600);
      assert.equal(certFingerprint(await readFile(ip.ca, 'utf8')), fingerprint);
      const agent = new SlaveAgent({ dir, master: farm.mainAddress });
      const connected = once(agent, 'connected');
      await agent.start();
      await connected;
      assert.deepEqual(farm.master.connectedNames(), ['worker-1']);
      await agent.stop();
    });

    it('sends only the token, the name and a CSR: the private key never crosses the wire', async function () {
      // A TLS-terminating recorder in front of the enrollment listener, holding the master's own
      // server certificate (so the pinned chain still verifies), sees the plaintext.
      const p = caPaths(farm.dir);
      const [key, cert] = await Promise.all([readFile(p.serverKey, 'utf8'), readFile(p.serverCert, 'utf8')]);
      const seen: Buffer[] = [];
      const [, enrollPort] = farm.enrollAddress.split(':');
      const proxy = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, (client) => {
        const upstream = tls.connect({ host: '127.0.0.1', port: Number(enrollPort), rejectUnauthorized: false });
        client.on('data', (d: Buffer) => {
          seen.push(d);
          upstream.write(d);
        });
        upstream.on('data', (d: Buffer) => client.write(d));
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on('close', end).on('error', end);
        upstream.on('close', end).on('error', end);
      });
      proxy.listen(0, '127.0.0.1');
      await once(proxy, 'listening');
      const port = (proxy.address() as { port: number }).port;
      try {
        const dir = await tempDir();
        await enrollSlave({ master: `127.0.0.1:${port}`, token: await newToken(farm), caFingerprint: fingerprint, dir, name: 'worker-2' });
        const keyPem = await readFile(identityPaths(dir).key, 'utf8');
        const keyBody = keyPem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
        const all = Buffer.concat(seen);
        assert.equal(all.includes('PRIVATE KEY'), false);
        assert.equal(all.includes(keyBody.slice(0, 64)), false);
        const frames = new FrameDecoder().push(all).map((b) => decodeBody(b) as { method?: string; params?: Record<string, unknown> });
        const req = frames.find((f) => f.method === 'enroll.request');
        assert.ok(req?.params);
        assert.deepEqual(Object.keys(req.params).sort(), ['csr', 'name', 'token']);
      } finally {
        proxy.close();
      }
    });
  });

  describe('when the token or the fingerprint is wrong', function () {
    it('lets a token work only once', async function () {
      const token = await newToken(farm);
      await enrollSlave({ master: farm.enrollAddress, token, caFingerprint: fingerprint, dir: await tempDir(), name: 'w-a' });
      await assert.rejects(
        enrollSlave({ master: farm.enrollAddress, token, caFingerprint: fingerprint, dir: await tempDir(), name: 'w-b' }),
        (e) => isBuilderError(e, 'BUILDER_ERR_TOKEN') && /already used/.test(e.message),
      );
    });

    it('refuses an expired token', async function () {
      const token = await newToken(farm, 1000, Date.now() - 5000);
      await assert.rejects(
        enrollSlave({ master: farm.enrollAddress, token, caFingerprint: fingerprint, dir: await tempDir(), name: 'w-c' }),
        (e) => isBuilderError(e, 'BUILDER_ERR_TOKEN') && /expired/.test(e.message),
      );
    });

    it('refuses a token the master never made', async function () {
      await assert.rejects(
        enrollSlave({ master: farm.enrollAddress, token: 'x'.repeat(32), caFingerprint: fingerprint, dir: await tempDir(), name: 'w-d' }),
        (e) => isBuilderError(e, 'BUILDER_ERR_TOKEN') && /not valid/.test(e.message),
      );
    });

    it('refuses to talk to a master whose CA does not match the pinned fingerprint, before sending the token', async function () {
      const token = await newToken(farm);
      const wrong = fingerprint.replace(/^./, (c) => (c === '0' ? '1' : '0'));
      await assert.rejects(
        enrollSlave({ master: farm.enrollAddress, token, caFingerprint: wrong, dir: await tempDir(), name: 'w-e' }),
        (e) => isBuilderError(e, 'BUILDER_ERR_CA_FINGERPRINT'),
      );
      // The token was never sent, so it still works.
      await enrollSlave({ master: farm.enrollAddress, token, caFingerprint: fingerprint, dir: await tempDir(), name: 'w-e' });
    });

    it('refuses a second slave under a name that is already enrolled', async function () {
      await enrollSlave({ master: farm.enrollAddress, token: await newToken(farm), caFingerprint: fingerprint, dir: await tempDir(), name: 'dup' });
      await assert.rejects(
        enrollSlave({ master: farm.enrollAddress, token: await newToken(farm), caFingerprint: fingerprint, dir: await tempDir(), name: 'dup' }),
        (e) => isBuilderError(e) && /already enrolled/.test(e.message),
      );
    });
  });

  describe('when an unauthenticated peer hammers the enrollment listener', function () {
    it('is rate-limited per address and can reach nothing but enrollment', async function () {
      // One token back per minute: eight enrollments (each makes an RSA key) fit in that window even on a loaded machine.
      await farm.close();
      farm = await startFarm({ enrollPerMinute: 1 });
      fingerprint = certFingerprint((await loadCa(farm.dir)).certPem);
      const results: string[] = [];
      for (let i = 0; i < 8; i++) {
        try {
          await enrollSlave({ master: farm.enrollAddress, token: 'y'.repeat(32), caFingerprint: fingerprint, dir: await tempDir(), name: `r${i}` });
          results.push('ok');
        } catch (e) {
          results.push(isBuilderError(e, 'BUILDER_ERR_TOKEN') ? 'token' : isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE') ? 'dropped' : String(e));
        }
      }
      assert.deepEqual(results.slice(0, 5), ['token', 'token', 'token', 'token', 'token']);
      assert.ok(results.slice(5).every((r) => r === 'dropped'), results.join(','));
    });
  });
});
