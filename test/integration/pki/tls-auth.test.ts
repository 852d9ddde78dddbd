import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import {
  PkiRegistry,
  caPaths,
  createCaCertificate,
  generateRsaKeyPair,
  initCa,
  issueIdentity,
  loadCa,
  loadIdentity,
} from '../../../pki/index.js';
import { connectRpc, mutualTlsClientOptions, ErrorCodes, type RpcCallError } from '../../../protocol/index.js';
import { startFarm, tempDir, type TestFarm } from '../../helpers/farm.js';

/** Connects with raw TLS material and calls session.hello; resolves to 'accepted' or 'refused'. */
async function tryHello(farm: TestFarm, m: { key?: string; cert?: string; ca: string }): Promise<'accepted' | 'refused'> {
  const [, port] = farm.mainAddress.split(':');
  try {
    const peer = await connectRpc({
      tls: { host: '127.0.0.1', port: Number(port), ca: [m.ca], key: m.key, cert: m.cert, minVersion: 'TLSv1.3' },
      remote: { role: 'master', name: 'master' },
      connectTimeoutMs: 5000,
    });
    try {
      await peer.call('session.hello', { version: '1' }, { timeoutMs: 5000 });
      return 'accepted';
    } catch (e) {
      assert.equal((e as RpcCallError).rpcCode, ErrorCodes.CONNECTION_CLOSED, String(e));
      return 'refused';
    } finally {
      peer.destroy();
    }
  } catch {
    return 'refused';
  }
}

describe('mutual TLS on the main listener', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let caPem: string;

  before(async function () {
    farm = await startFarm();
    caPem = (await loadCa(farm.dir)).certPem;
  });
  after(async function () {
    await farm.close();
  });

  it('accepts a certificate our CA issued', async function () {
    const id = await loadIdentity(await farm.identity('alice', 'client'));
    assert.equal(await tryHello(farm, id), 'accepted');
  });

  describe('when the certificate is not acceptable', function () {
    it('refuses a certificate from another CA', async function () {
      const other = await tempDir();
      try {
        await initCa({ dir: other });
        const id = await loadIdentity(join(other, 'admin'));
        assert.equal(await tryHello(farm, { ...id, ca: caPem }), 'refused');
      } finally {
        await rm(other, { recursive: true, force: true });
      }
    });

    it('refuses a self-signed certificate that claims the admin role', async function () {
      const keys = await generateRsaKeyPair();
      const self = createCaCertificate({ ...keys, commonName: 'admin' });
      assert.equal(await tryHello(farm, { key: keys.privateKeyPem, cert: self.certPem, ca: caPem }), 'refused');
    });

    it('refuses a peer without a certificate', async function () {
      assert.equal(await tryHello(farm, { ca: caPem }), 'refused');
    });

    it('refuses an expired certificate', async function () {
      const day = 24 * 3600 * 1000;
      const dir = await farm.identity('old', 'client', { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) });
      assert.equal(await tryHello(farm, await loadIdentity(dir)), 'refused');
    });

    it('refuses a certificate signed by our CA but missing from its register', async function () {
      // Issued with the CA key but never recorded: only the register says what the CA issued.
      const ca = await loadCa(farm.dir);
      const scratch = await tempDir();
      const reg = await PkiRegistry.open(join(scratch, 'other.db'));
      try {
        const out = join(scratch, 'id');
        await issueIdentity(ca, reg, { name: 'ghost', role: 'admin', outDir: out });
        assert.equal(await tryHello(farm, await loadIdentity(out)), 'refused');
      } finally {
        await reg.close();
        await rm(scratch, { recursive: true, force: true });
      }
    });
  });

  describe('when a slave is revoked', function () {
    it('is refused at its next handshake without a master restart, and its live connection is dropped by revokeSlave', async function () {
      const dir = await farm.identity('w9', 'slave');
      const id = await loadIdentity(dir);
      assert.equal(await tryHello(farm, id), 'accepted');

      // Revoke through a separate registry handle, as `master slave revoke` does from another process.
      const reg = await PkiRegistry.open(caPaths(farm.dir).registry);
      try {
        assert.equal(await reg.revoke('w9', 'slave'), 1);
      } finally {
        await reg.close();
      }
      assert.equal(await tryHello(farm, id), 'refused');

      // A live connection is cut at once by the master's own revoke.
      const dir2 = await farm.identity('w10', 'slave');
      const peer = await farm.connect(dir2);
      await peer.call('session.hello', { version: '1' });
      const closed = new Promise<void>((resolve) => peer.once('close', () => resolve()));
      assert.equal(await farm.master.revokeSlave('w10'), 1);
      await closed;
      assert.equal(await tryHello(farm, await loadIdentity(dir2)), 'refused');
    });
  });

  it('uses TLS 1.3 and refuses TLS 1.2', async function () {
    const id = await loadIdentity(await farm.identity('bob', 'client'));
    const [, port] = farm.mainAddress.split(':');
    const opts = mutualTlsClientOptions(id, '127.0.0.1', Number(port));
    const ok = tls.connect(opts);
    await new Promise((resolve, reject) => ok.once('secureConnect', resolve).once('error', reject));
    assert.equal(ok.getProtocol(), 'TLSv1.3');
    ok.destroy();
    const old = tls.connect({ ...opts, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    const outcome = await new Promise<string>((resolve) => {
      old.once('secureConnect', () => resolve('connected'));
      old.once('error', () => resolve('refused'));
    });
    old.destroy();
    assert.equal(outcome, 'refused');
  });
});
