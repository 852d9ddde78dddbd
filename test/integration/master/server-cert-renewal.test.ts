import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import tls from 'node:tls';
import { PkiRegistry, caPaths, issueCertificate, loadCa, loadIdentity } from '../../../pki/index.js';
import { mutualTlsClientOptions } from '../../../protocol/index.js';
import { recordingLogger } from '../../helpers/logs.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';

const DAY = 86_400_000;

/** Puts a server certificate 600 days into its 800 (due for renewal) in place of the farm's. */
async function plantDueServerCert(dir: string): Promise<string> {
  const ca = await loadCa(dir);
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const issued = issueCertificate({
    caCertPem: ca.certPem,
    caKeyPem: ca.keyPem,
    publicKeyPem: keys.publicKey,
    commonName: 'localhost',
    hostnames: ['localhost', '127.0.0.1'],
    notBefore: new Date(Date.now() - 600 * DAY),
    notAfter: new Date(Date.now() + 200 * DAY),
  });
  await writeFile(ca.paths.serverKey, keys.privateKey, { mode: 0o600 });
  await writeFile(ca.paths.serverCert, issued.certPem + ca.certPem);
  return issued.serial;
}

/** The serial of the certificate the master presents to a new handshake on `address` (mutual TLS, or server-only for the enrollment listener). */
async function presentedSerial(address: string, identityDir: string, mutual = true): Promise<string> {
  const [host, port] = address.split(':');
  const id = await loadIdentity(identityDir);
  const opts = mutual ? mutualTlsClientOptions(id, host!, Number(port)) : { host: host!, port: Number(port), ca: id.ca };
  return new Promise((resolve, reject) => {
    const s = tls.connect(opts, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial);
    });
    s.once('error', reject);
  });
}

describe('master: renewal of its own server certificate (real TLS)', function () {
  this.timeout(60_000);
  let farm: TestFarm;

  beforeEach(async () => {
    farm = await startFarm({}, { shareCa: true });
  });
  afterEach(async () => {
    await farm.close();
  });

  it('renews a due certificate at start, with the same host names for 825 days, and clients connect without a change on their side', async () => {
    const old = await plantDueServerCert(farm.dir);
    const { logger, lines } = recordingLogger();
    await farm.restart({ logger });
    const cert = new X509Certificate(await readFile(caPaths(farm.dir).serverCert, 'utf8'));
    assert.notEqual(cert.serialNumber, old.toUpperCase());
    assert.equal(cert.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1');
    const days = (Date.parse(cert.validTo) - Date.now()) / DAY;
    assert.ok(days > 824 && days < 826, `825 days, got ${days}`);
    assert.ok(lines.some((l) => l.msg === 'server certificate renewed' && l.previous === old.toUpperCase()), JSON.stringify(lines.map((l) => l.msg)));
    // The registry knows it, as init-ca's.
    const reg = await PkiRegistry.open(caPaths(farm.dir).registry);
    try {
      assert.ok((await reg.list('master')).some((r) => r.serial.toUpperCase() === cert.serialNumber));
    } finally {
      await reg.close();
    }
    const who = await farm.identity('alice', 'client');
    assert.equal(await presentedSerial(farm.mainAddress, who), cert.serialNumber);
    const peer = await farm.connect(who);
    try {
      assert.equal((await peer.call('session.hello', { version: '0', software: 'test' })).name, 'alice');
    } finally {
      await peer.close(200);
    }
  });

  it('renews while running: new handshakes get the new certificate, open connections go on, and a certificate not due is left alone', async () => {
    const who = await farm.identity('bob', 'client');
    assert.equal(await farm.master.renewServerCertificateIfDue(), false, 'a fresh certificate is not due');
    const peer = await farm.connect(who);
    try {
      await peer.call('session.hello', { version: '0', software: 'test' });
      const old = await plantDueServerCert(farm.dir);
      // The listener still presents what it loaded at start until the renewal.
      assert.equal(await farm.master.renewServerCertificateIfDue(), true);
      const now = new X509Certificate(await readFile(caPaths(farm.dir).serverCert, 'utf8')).serialNumber;
      assert.notEqual(now, old.toUpperCase());
      assert.equal(await presentedSerial(farm.mainAddress, who), now);
      assert.equal(await presentedSerial(farm.enrollAddress, who, false), now, 'the enrollment listener too');
      // The connection made before is untouched.
      assert.equal((await peer.call('job.list', {})).jobs.length, 0);
    } finally {
      await peer.close(200);
    }
  });
});
