import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync, sign } from 'node:crypto';
import { stat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';
import {
  createCaCertificate,
  createCsr,
  generateRsaKeyPair,
  initCa,
  issueCertificate,
  loadCa,
  normaliseFingerprint,
  publicKeyFromCsr,
  publicKeyFromProof,
  renewalProofMessage,
  roleFromOu,
  caPaths,
  identityPaths,
  PkiRegistry,
  type KeyPairPem,
} from '../../../pki/index.js';
import { isBuilderError } from '../../../protocol/index.js';
import { tempDir } from '../../helpers/farm.js';

describe('pki', function () {
  let ca: { certPem: string; keys: KeyPairPem };
  let peerKeys: KeyPairPem;

  before(async function () {
    const keys = await generateRsaKeyPair();
    ca = { keys, certPem: createCaCertificate({ ...keys, commonName: 'Test CA' }).certPem };
    peerKeys = await generateRsaKeyPair();
  });

  describe('when a CA issues certificates', function () {
    it('makes a CA certificate that is a CA and self-signed', function () {
      const x = new X509Certificate(ca.certPem);
      assert.equal(x.ca, true);
      assert.ok(x.checkIssued(x));
    });

    it('puts every hostname in the server certificate SANs, DNS and IP alike', function () {
      const c = issueCertificate({
        caCertPem: ca.certPem,
        caKeyPem: ca.keys.privateKeyPem,
        publicKeyPem: peerKeys.publicKeyPem,
        commonName: 'builder.example.org',
        hostnames: ['builder.example.org', '127.0.0.1', '::1'],
      });
      const x = new X509Certificate(c.certPem);
      assert.match(x.subjectAltName ?? '', /DNS:builder\.example\.org/);
      assert.match(x.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
      assert.ok(x.checkIssued(new X509Certificate(ca.certPem)));
    });

    it('carries the role in the subject and gives positive, unique serials', function () {
      const serials = new Set<string>();
      for (let i = 0; i < 10; i++) {
        const c = issueCertificate({ caCertPem: ca.certPem, caKeyPem: ca.keys.privateKeyPem, publicKeyPem: peerKeys.publicKeyPem, commonName: 'w1', role: 'slave' });
        const x = new X509Certificate(c.certPem);
        assert.equal(x.serialNumber.toUpperCase(), c.serial);
        assert.ok(parseInt(c.serial.slice(0, 2), 16) < 0x80, 'high bit clear');
        serials.add(c.serial);
        const ou = /OU=([^\n]+)/.exec(x.subject)?.[1];
        assert.equal(roleFromOu(ou), 'slave');
      }
      assert.equal(serials.size, 10);
    });
  });

  describe('when a CSR comes in', function () {
    it('returns only its public key, whatever subject it claims', function () {
      const csr = createCsr({ ...peerKeys, commonName: 'admin' });
      const pub = publicKeyFromCsr(csr);
      assert.equal(forge.pki.publicKeyToPem(forge.pki.publicKeyFromPem(pub)), forge.pki.publicKeyToPem(forge.pki.publicKeyFromPem(peerKeys.publicKeyPem)));
    });

    it('refuses a CSR whose signature does not verify', function () {
      const pem = createCsr({ ...peerKeys, commonName: 'x' });
      const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
      der[der.length - 1]! ^= 0xff; // the signature is the last field
      const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE REQUEST-----\n`;
      assert.throws(() => publicKeyFromCsr(tampered), (e) => isBuilderError(e, 'BUILDER_ERR_CERT') && /signature/.test(e.message));
    });

    it('refuses a key smaller than 2048 bits', function () {
      const small = generateKeyPairSync('rsa', { modulusLength: 1024, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs1', format: 'pem' } });
      const csr = createCsr({ privateKeyPem: small.privateKey, publicKeyPem: small.publicKey, commonName: 'x' });
      assert.throws(() => publicKeyFromCsr(csr), (e) => isBuilderError(e, 'BUILDER_ERR_CERT') && /too small/.test(e.message));
    });

    it('refuses a huge public exponent at once, before checking the signature (no CPU burnt on it)', function () {
      // A CSR signed by a real key but carrying a 2048-bit modulus with a 4,000-bit odd exponent:
      // verifying it would be a modular exponentiation with that exponent.
      const priv = forge.pki.privateKeyFromPem(peerKeys.privateKeyPem);
      const pub = forge.pki.publicKeyFromPem(peerKeys.publicKeyPem);
      const hugeE = new forge.jsbn.BigInteger('1'.repeat(4000), 2);
      const csr = forge.pki.createCertificationRequest();
      csr.publicKey = forge.pki.setRsaPublicKey(pub.n, hugeE);
      csr.setSubject([{ name: 'commonName', value: 'x' }]);
      csr.sign(priv, forge.md.sha256.create());
      const pem = forge.pki.certificationRequestToPem(csr);
      // The exponent is refused by name: had the signature been checked first, it would have
      // failed as "does not verify" (with the key's real exponent, after the long exponentiation).
      assert.throws(() => publicKeyFromCsr(pem), (e) => isBuilderError(e, 'BUILDER_ERR_CERT') && /exponent/.test(e.message));
    });

    it('refuses garbage and oversized input', function () {
      assert.throws(() => publicKeyFromCsr('not a csr'), (e) => isBuilderError(e, 'BUILDER_ERR_CERT'));
      assert.throws(() => publicKeyFromCsr('x'.repeat(100_000)), (e) => isBuilderError(e, 'BUILDER_ERR_CERT') && /too large/.test(e.message));
    });
  });

  describe('when a renewal key comes with its proof of possession', function () {
    const msg = renewalProofMessage('0A1B');
    const pair = (bits: number) =>
      generateKeyPairSync('rsa', { modulusLength: bits, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    const refused = (f: () => unknown, re: RegExp) => assert.throws(f, (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CERT') && re.test(e.message));

    it('returns the key when its signature of the message verifies', function () {
      const k = pair(2048);
      assert.equal(publicKeyFromProof(k.publicKey, sign('sha256', msg, k.privateKey), msg), k.publicKey);
    });
    it('refuses a signature by another key or of another message', function () {
      const [k, other] = [pair(2048), pair(2048)];
      refused(() => publicKeyFromProof(k.publicKey, sign('sha256', msg, other.privateKey), msg), /proof of possession does not verify/);
      refused(() => publicKeyFromProof(k.publicKey, sign('sha256', renewalProofMessage('0A1C'), k.privateKey), msg), /proof of possession does not verify/);
      refused(() => publicKeyFromProof(k.publicKey, new Uint8Array(3), msg), /proof of possession does not verify/);
    });
    it('refuses small keys, odd exponents, other key types and garbage before any signature check', function () {
      const small = pair(1024);
      refused(() => publicKeyFromProof(small.publicKey, sign('sha256', msg, small.privateKey), msg), /key too small: 1024 bits/);
      // A 2048-bit modulus with a 41-bit exponent (node's keygen stops at 32 bits; forge builds it).
      const n = (forge.pki.publicKeyFromPem(pair(2048).publicKey)).n;
      const wide = forge.pki.publicKeyToPem(forge.pki.setRsaPublicKey(n, new forge.jsbn.BigInteger('1000000000f', 16)));
      refused(() => publicKeyFromProof(wide, new Uint8Array(256), msg), /unusual public exponent \(41 bits\)/);
      const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
      refused(() => publicKeyFromProof(ec.publicKey, sign('sha256', msg, ec.privateKey), msg), /an RSA public key is needed/);
      refused(() => publicKeyFromProof('not a key', new Uint8Array(0), msg), /not a PEM public key/);
      refused(() => publicKeyFromProof('x'.repeat(9000), new Uint8Array(0), msg), /public key too large/);
    });
  });

  describe('when a fingerprint is typed in', function () {
    it('accepts colon-separated and prefixed forms and refuses the rest', function () {
      const hex = 'ab'.repeat(32);
      assert.equal(normaliseFingerprint('AB:'.repeat(31) + 'AB'), hex);
      assert.equal(normaliseFingerprint('sha256:' + hex.toUpperCase()), hex);
      assert.throws(() => normaliseFingerprint('abc'), (e) => isBuilderError(e, 'BUILDER_ERR_CA_FINGERPRINT'));
    });
  });

  describe('when init-ca runs', function () {
    let dir: string;
    beforeEach(async function () {
      dir = await tempDir();
    });
    afterEach(async function () {
      await rm(dir, { recursive: true, force: true });
    });

    it('writes private keys 0600, an admin identity, and refuses to overwrite without force', async function () {
      const r = await initCa({ dir, hostnames: ['farm.test', '10.9.8.7'] });
      const p = caPaths(dir);
      for (const f of [p.caKey, p.serverKey, identityPaths(p.adminDir).key]) {
        assert.equal((await stat(f)).mode & 0o777, 0o600, f);
      }
      const server = new X509Certificate((await loadCa(dir)).certPem);
      assert.equal(server.ca, true);
      assert.equal(r.fingerprint.length, 64);
      await assert.rejects(initCa({ dir }), (e) => isBuilderError(e, 'BUILDER_ERR_CA_EXISTS'));
      const again = await initCa({ dir, force: true });
      assert.notEqual(again.fingerprint, r.fingerprint);
      const reg = await PkiRegistry.open(join(dir, 'pki.db'));
      try {
        const all = await reg.list();
        assert.deepEqual(all.map((c) => c.role).sort(), ['admin', 'master']);
      } finally {
        await reg.close();
      }
    });
  });

  describe('when tokens are spent', function () {
    let dir: string;
    let reg: PkiRegistry;
    beforeEach(async function () {
      dir = await tempDir();
      reg = await PkiRegistry.open(join(dir, 'pki.db'));
    });
    afterEach(async function () {
      await reg.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('stores only the hash, works once, and tells expired, used and unknown apart', async function () {
      const { token } = await reg.createToken(60_000);
      const raw = await import('node:fs/promises').then((fs) => fs.readFile(join(dir, 'pki.db')));
      const wal = await import('node:fs/promises').then((fs) => fs.readFile(join(dir, 'pki.db-wal')).catch(() => Buffer.alloc(0)));
      assert.equal(Buffer.concat([raw, wal]).includes(token), false, 'token in clear on disk');
      await reg.consumeToken(token, 'w1');
      await assert.rejects(reg.consumeToken(token, 'w2'), (e) => isBuilderError(e, 'BUILDER_ERR_TOKEN') && /already used/.test(e.message));
      const old = await reg.createToken(1000, Date.now() - 10_000);
      await assert.rejects(reg.consumeToken(old.token, 'w3'), (e) => isBuilderError(e, 'BUILDER_ERR_TOKEN') && /expired/.test(e.message));
      await assert.rejects(reg.consumeToken('nope-nope-nope-nope', 'w4'), (e) => isBuilderError(e, 'BUILDER_ERR_TOKEN') && /not valid/.test(e.message));
    });

    it('lets only one of many racing enrollments spend a token', async function () {
      const { token } = await reg.createToken(60_000);
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => reg.consumeToken(token, `w${i}`)));
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    });
  });
});
