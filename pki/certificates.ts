import type forgeNs from 'node-forge';
import { forge } from './forge.js';
import { randomBytes, X509Certificate, createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { BuilderError } from '../protocol/errors.js';
import { type Role, roleToOu } from './roles.js';

/** Smallest RSA key a CSR may carry. */
export const MIN_CSR_RSA_BITS = 2048;
const SKEW_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 3600 * 1000;

export interface Validity {
  /** Defaults to now - 5 minutes (tolerates clock skew between hosts). */
  notBefore?: Date;
  /** Defaults to notBefore + validityDays. */
  notAfter?: Date;
  validityDays?: number;
}

export interface IssuedCertificate {
  certPem: string;
  /** Upper-case hex, as Node reports `serialNumber` for a peer certificate. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * A random positive serial: 16 bytes with the top bit cleared and the first byte non-zero, so
 * that forge does not encode it negative and its hex has no leading zero to normalise away.
 */
export function newSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex').toUpperCase();
}

function validity(v: Validity, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const notBefore = v.notBefore ?? new Date(Date.now() - SKEW_MS);
  const notAfter = v.notAfter ?? new Date(notBefore.getTime() + SKEW_MS + (v.validityDays ?? defaultDays) * DAY_MS);
  return { notBefore, notAfter };
}

/** Creates a self-signed CA certificate for the given key pair. */
export function createCaCertificate(opts: { privateKeyPem: string; publicKeyPem: string; commonName: string } & Validity): IssuedCertificate {
  const key = forge().pki.privateKeyFromPem(opts.privateKeyPem);
  const pub = forge().pki.publicKeyFromPem(opts.publicKeyPem);
  const cert = forge().pki.createCertificate();
  const serial = newSerial();
  cert.serialNumber = serial.toLowerCase();
  cert.publicKey = pub;
  const { notBefore, notAfter } = validity(opts, 3650);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  const attrs = [
    { name: 'commonName', value: opts.commonName },
    { shortName: 'OU', value: 'builder-ca' },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true, pathLenConstraint: 0 },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key, forge().md.sha256.create());
  return { certPem: forge().pki.certificateToPem(cert), serial, notBefore, notAfter };
}

export interface IssueOptions extends Validity {
  caCertPem: string;
  caKeyPem: string;
  publicKeyPem: string;
  commonName: string;
  /** Present for peer certificates (slave, client, admin); absent for the master's server certificate. */
  role?: Role;
  /** DNS names and IP addresses for a server certificate. */
  hostnames?: string[];
}

/** Issues a certificate signed by the CA: a server certificate when `hostnames` is given, a client one otherwise. */
export function issueCertificate(opts: IssueOptions): IssuedCertificate {
  const caCert = forge().pki.certificateFromPem(opts.caCertPem);
  const caKey = forge().pki.privateKeyFromPem(opts.caKeyPem);
  const cert = forge().pki.createCertificate();
  const serial = newSerial();
  cert.serialNumber = serial.toLowerCase();
  cert.publicKey = forge().pki.publicKeyFromPem(opts.publicKeyPem);
  const { notBefore, notAfter } = validity(opts, opts.hostnames ? 825 : 90);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  const subject: forgeNs.pki.CertificateField[] = [{ name: 'commonName', value: opts.commonName }];
  if (opts.role) subject.push({ shortName: 'OU', value: roleToOu(opts.role) });
  else subject.push({ shortName: 'OU', value: 'builder-master' });
  cert.setSubject(subject);
  cert.setIssuer(caCert.subject.attributes);
  const server = opts.hostnames !== undefined;
  const exts: unknown[] = [
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: server, clientAuth: !server },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ];
  if (server) {
    const altNames = (opts.hostnames ?? []).map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h }));
    if (altNames.length === 0) throw new BuilderError('BUILDER_ERR_CERT', 'a server certificate needs at least one hostname');
    exts.push({ name: 'subjectAltName', altNames });
  }
  cert.setExtensions(exts as never[]);
  cert.sign(caKey, forge().md.sha256.create());
  return { certPem: forge().pki.certificateToPem(cert), serial, notBefore, notAfter };
}

/** Makes a CSR for a key pair. The subject is informative only: the CA ignores it. */
export function createCsr(opts: { privateKeyPem: string; publicKeyPem: string; commonName: string }): string {
  const csr = forge().pki.createCertificationRequest();
  csr.publicKey = forge().pki.publicKeyFromPem(opts.publicKeyPem);
  csr.setSubject([{ name: 'commonName', value: opts.commonName }]);
  csr.sign(forge().pki.privateKeyFromPem(opts.privateKeyPem), forge().md.sha256.create());
  return forge().pki.certificationRequestToPem(csr);
}

/** Largest RSA modulus accepted in a CSR, in bits. */
export const MAX_CSR_RSA_BITS = 8192;

/** Largest RSA public exponent accepted in a CSR, in bits (everyone uses 65537: 17 bits). */
export const MAX_CSR_RSA_EXPONENT_BITS = 32;

/** Largest CSR PEM accepted, well above a 4096-bit RSA CSR. */
export const MAX_CSR_PEM_BYTES = 8192;

/**
 * The limits on a requester's RSA key, checked before any signature with it (a huge exponent
 * makes verification a long exponentiation): modulus size, and an odd exponent of at most 32 bits.
 */
function checkRsaLimits(label: string, bits: number, eBits: number, eOdd: boolean): void {
  if (bits < MIN_CSR_RSA_BITS) throw new BuilderError('BUILDER_ERR_CERT', `${label} too small: ${bits} bits, need ${MIN_CSR_RSA_BITS}`);
  if (bits > MAX_CSR_RSA_BITS) throw new BuilderError('BUILDER_ERR_CERT', `${label} too large: ${bits} bits, at most ${MAX_CSR_RSA_BITS}`);
  if (eBits < 2 || eBits > MAX_CSR_RSA_EXPONENT_BITS || !eOdd) {
    throw new BuilderError('BUILDER_ERR_CERT', `${label} has an unusual public exponent (${eBits} bits); use 65537`);
  }
}

/**
 * Checks a CSR and returns only its public key. Security: the CSR's signature proves possession
 * of the private key; its subject, attributes and extensions are ignored so that a requester
 * cannot choose its own name, role or key usage.
 */
export function publicKeyFromCsr(csrPem: string): string {
  if (csrPem.length > MAX_CSR_PEM_BYTES) throw new BuilderError('BUILDER_ERR_CERT', 'CSR too large');
  let csr: forgeNs.pki.CertificateSigningRequest;
  try {
    csr = forge().pki.certificationRequestFromPem(csrPem, true);
  } catch {
    throw new BuilderError('BUILDER_ERR_CERT', 'CSR is not a valid PEM certification request (RSA keys only)');
  }
  // Security: the key's size and exponent are checked before the signature, which is a modular
  // exponentiation in JavaScript with the CSR's own exponent. Unchecked, one unauthenticated
  // request (a 2048-bit key with a 40,000-bit exponent, in a PEM under the size cap) held the
  // master's event loop for 1.6 s, and 79 s while its optimizer was held.
  const pub = csr.publicKey as forgeNs.pki.rsa.PublicKey | null;
  if (!pub || typeof pub.n?.bitLength !== 'function' || typeof pub.e?.bitLength !== 'function') throw new BuilderError('BUILDER_ERR_CERT', 'CSR must carry an RSA public key');
  checkRsaLimits('CSR key', pub.n.bitLength(), pub.e.bitLength(), pub.e.testBit(0));
  let ok: boolean;
  try {
    ok = csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw new BuilderError('BUILDER_ERR_CERT', 'CSR signature does not verify');
  return forge().pki.publicKeyToPem(pub);
}

/** What a renewing slave signs with its new key, bound to the serial of the certificate it renews. */
export function renewalProofMessage(serial: string): Buffer {
  return Buffer.from(`builder cert.renew ${serial.toUpperCase()}`, 'utf8');
}

/**
 * Checks a public key sent with a proof of possession (`proof`: an RSA PKCS#1 v1.5 SHA-256
 * signature of `message` by its private key) and returns it as SPKI PEM. The same limits as a
 * CSR's key (size, exponent), checked before the signature. Node's crypto does the work, so
 * neither side loads forge for it: a renewing slave stays as small as it was.
 */
export function publicKeyFromProof(publicKeyPem: string, proof: Uint8Array, message: Buffer): string {
  if (publicKeyPem.length > MAX_CSR_PEM_BYTES) throw new BuilderError('BUILDER_ERR_CERT', 'public key too large');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: publicKeyPem, format: 'pem' });
  } catch {
    throw new BuilderError('BUILDER_ERR_CERT', 'not a PEM public key');
  }
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType !== 'rsa' || details?.modulusLength === undefined || details.publicExponent === undefined) {
    throw new BuilderError('BUILDER_ERR_CERT', 'an RSA public key is needed');
  }
  const e = details.publicExponent;
  checkRsaLimits('key', details.modulusLength, e.toString(2).length, e % 2n === 1n);
  let ok: boolean;
  try {
    ok = cryptoVerify('sha256', message, key, proof);
  } catch {
    ok = false;
  }
  if (!ok) throw new BuilderError('BUILDER_ERR_CERT', 'the proof of possession does not verify with this key');
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

/** SHA-256 fingerprint of a certificate's DER, as lower-case hex without separators. */
export function certFingerprint(certPem: string): string {
  const x = new X509Certificate(certPem);
  return x.fingerprint256.replace(/:/g, '').toLowerCase();
}

/** Normalises a user-given fingerprint (`AB:CD:..`, `sha256:abcd..`, any case) to lower-case hex. */
export function normaliseFingerprint(fp: string): string {
  const hex = fp.trim().replace(/^sha256:/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new BuilderError('BUILDER_ERR_CA_FINGERPRINT', 'the CA fingerprint must be 64 hex digits (SHA-256)', {
      hint: 'copy it from the `slave enroll` line that `master token create` printed',
    });
  }
  return hex;
}

/** SHA-256 hex of a string (tokens are stored this way, never in clear). */
export function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
