import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { renewalDueAt } from '../protocol/tls.js';
import type { LoadedCa } from './ca-dir.js';
import { issueCertificate, type IssuedCertificate } from './certificates.js';
import { replaceIdentityPair, settleIdentity } from './identity-renewal.js';
import { generateRsaKeyPair } from './keys.js';
import type { PkiRegistry } from './registry.js';

/** The host names and addresses of a certificate's subjectAltName (`DNS:a, IP Address:1.2.3.4`). */
export function altNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .map((e) => /^(?:DNS|IP Address):(.+)$/.exec(e)?.[1])
    .filter((h): h is string => h !== undefined && h !== '');
}

/** When the master's server certificate (DIR/server/cert.pem) is due for renewal, and its end. */
export async function serverCertificateDates(ca: LoadedCa): Promise<{ dueAt: number; notAfter: number; serial: string }> {
  const cert = new X509Certificate(await readFile(ca.paths.serverCert, 'utf8'));
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  return { dueAt: renewalDueAt(from, to), notAfter: to, serial: cert.serialNumber };
}

/**
 * Issues the master a new server certificate (a new key, the same host names, the default 825
 * days) with its own CA, records it, and puts it in place of the old pair in `DIR/server/` by
 * the same crash-safe steps as a renewed identity (pki/identity-renewal.ts); the file holds the
 * certificate then the CA, as `master init-ca` writes it. The caller reloads its listeners.
 */
export async function renewServerCertificate(ca: LoadedCa, reg: PkiRegistry): Promise<IssuedCertificate> {
  const dir = dirname(ca.paths.serverCert);
  const current = new X509Certificate(await readFile(ca.paths.serverCert, 'utf8'));
  const hostnames = altNames(current);
  // forge signs the certificate anyway: its key generation (node's, off the event loop) costs nothing more.
  const keys = await generateRsaKeyPair();
  const server = issueCertificate({ caCertPem: ca.certPem, caKeyPem: ca.keyPem, publicKeyPem: keys.publicKeyPem, commonName: hostnames[0] ?? 'localhost', hostnames });
  await reg.recordCertificate({ serial: server.serial, name: hostnames[0] ?? 'localhost', role: 'master', notBefore: +server.notBefore, notAfter: +server.notAfter });
  await replaceIdentityPair(dir, keys.privateKeyPem, server.certPem + ca.certPem);
  return server;
}

/** Settles a server certificate replacement a crash cut short (see settleIdentity). */
export function settleServerCertificate(ca: LoadedCa): Promise<'none' | 'completed' | 'discarded'> {
  return settleIdentity(dirname(ca.paths.serverCert));
}
