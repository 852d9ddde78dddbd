import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BuilderError } from '../protocol/errors.js';
import { checkName } from '../protocol/names.js';
import { createCaCertificate, issueCertificate, certFingerprint, type IssuedCertificate, type Validity } from './certificates.js';
import { generateRsaKeyPair, writePrivateFile, writePublicFile, DEFAULT_RSA_BITS, type KeyPairPem } from './keys.js';
import { PkiRegistry } from './registry.js';
import type { Role } from './roles.js';

/** Where the master keeps its PKI under its data directory. */
export function caPaths(dir: string) {
  const root = resolve(dir);
  return {
    root,
    caCert: join(root, 'ca', 'ca.pem'),
    caKey: join(root, 'ca', 'ca-key.pem'),
    serverCert: join(root, 'server', 'cert.pem'),
    serverKey: join(root, 'server', 'key.pem'),
    adminDir: join(root, 'admin'),
    registry: join(root, 'pki.db'),
  };
}

/** An identity directory, as the CLI and slaves hold it: ca.pem, cert.pem, key.pem. */
export function identityPaths(dir: string) {
  const root = resolve(dir);
  return { root, ca: join(root, 'ca.pem'), cert: join(root, 'cert.pem'), key: join(root, 'key.pem') };
}

export interface InitCaOptions {
  dir: string;
  /** DNS names and IPs for the master's server certificate. Default: localhost, 127.0.0.1. */
  hostnames?: string[];
  force?: boolean;
  rsaBits?: number;
  caName?: string;
}

export interface InitCaResult {
  fingerprint: string;
  caCertPath: string;
  adminDir: string;
  hostnames: string[];
}

/** Creates the CA, the master's server certificate and an admin identity. Refuses to overwrite without `force`. */
export async function initCa(opts: InitCaOptions): Promise<InitCaResult> {
  const p = caPaths(opts.dir);
  if (existsSync(p.caCert) || existsSync(p.caKey)) {
    if (!opts.force) {
      throw new BuilderError('BUILDER_ERR_CA_EXISTS', `a CA already exists in ${p.root}`, {
        hint: 'pass --force to replace it (every issued certificate stops working)',
      });
    }
    await rm(p.registry, { force: true });
    await rm(p.registry + '-wal', { force: true });
    await rm(p.registry + '-shm', { force: true });
  }
  const hostnames = opts.hostnames && opts.hostnames.length > 0 ? [...new Set(opts.hostnames)] : ['localhost', '127.0.0.1'];
  const bits = opts.rsaBits ?? DEFAULT_RSA_BITS;
  const [caKeys, serverKeys] = await Promise.all([generateRsaKeyPair(bits), generateRsaKeyPair(bits)]);
  const ca = createCaCertificate({ ...caKeys, commonName: opts.caName ?? 'Builder CA' });
  await writePrivateFile(p.caKey, caKeys.privateKeyPem);
  await writePublicFile(p.caCert, ca.certPem);
  const server = issueCertificate({
    caCertPem: ca.certPem,
    caKeyPem: caKeys.privateKeyPem,
    publicKeyPem: serverKeys.publicKeyPem,
    commonName: hostnames[0]!,
    hostnames,
  });
  await writePrivateFile(p.serverKey, serverKeys.privateKeyPem);
  // The server presents its certificate followed by the CA, so an enrolling slave can pin the CA.
  await writePublicFile(p.serverCert, server.certPem + ca.certPem);
  const reg = await PkiRegistry.open(p.registry);
  try {
    await reg.recordCertificate({ serial: server.serial, name: hostnames[0]!, role: 'master', notBefore: +server.notBefore, notAfter: +server.notAfter });
    const loaded: LoadedCa = { certPem: ca.certPem, keyPem: caKeys.privateKeyPem, paths: p };
    await issueIdentity(loaded, reg, { name: 'admin', role: 'admin', outDir: p.adminDir, rsaBits: bits });
  } finally {
    await reg.close();
  }
  return { fingerprint: certFingerprint(ca.certPem), caCertPath: p.caCert, adminDir: p.adminDir, hostnames };
}

export interface LoadedCa {
  certPem: string;
  keyPem: string;
  paths: ReturnType<typeof caPaths>;
}

export async function loadCa(dir: string): Promise<LoadedCa> {
  const p = caPaths(dir);
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `no CA in ${p.root}`, { hint: `run: master init-ca --dir ${p.root}` });
  }
  const [certPem, keyPem] = await Promise.all([readFile(p.caCert, 'utf8'), readFile(p.caKey, 'utf8')]);
  return { certPem, keyPem, paths: p };
}

/** Signs a public key for a peer and records the serial. */
export async function signPeer(
  ca: LoadedCa,
  reg: PkiRegistry,
  opts: { name: string; role: Role; publicKeyPem: string; replaces?: string } & Validity,
): Promise<IssuedCertificate> {
  checkName(opts.role === 'slave' ? 'slave' : 'client', opts.name);
  const issued = issueCertificate({ ...opts, caCertPem: ca.certPem, caKeyPem: ca.keyPem, commonName: opts.name });
  await reg.recordCertificate({
    serial: issued.serial,
    name: opts.name,
    role: opts.role,
    notBefore: +issued.notBefore,
    notAfter: +issued.notAfter,
    ...(opts.replaces === undefined ? {} : { replaces: opts.replaces }),
  });
  return issued;
}

/**
 * Issues a whole identity (key made here, on the master host) into `outDir`: for people and
 * scripts using the CLI, whose keys the operator hands over. Slaves never use this: they enroll.
 */
export async function issueIdentity(
  ca: LoadedCa,
  reg: PkiRegistry,
  opts: { name: string; role: Role; outDir: string; rsaBits?: number; /** The key pair to certify (default: a new one). */ keys?: KeyPairPem } & Validity,
): Promise<{ serial: string; paths: ReturnType<typeof identityPaths> }> {
  const keys = opts.keys ?? (await generateRsaKeyPair(opts.rsaBits ?? DEFAULT_RSA_BITS));
  const issued = await signPeer(ca, reg, { ...opts, publicKeyPem: keys.publicKeyPem });
  const ip = identityPaths(opts.outDir);
  await writePrivateFile(ip.key, keys.privateKeyPem);
  await writePublicFile(ip.cert, issued.certPem);
  await writePublicFile(ip.ca, ca.certPem);
  return { serial: issued.serial, paths: ip };
}

/** Reads an identity directory (ca.pem, cert.pem, key.pem) with a clear error naming what is missing. */
export async function loadIdentity(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ip = identityPaths(dir);
  const read = async (f: string) => {
    try {
      return await readFile(f, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new BuilderError('BUILDER_ERR_CONFIG', `cannot read identity file ${f} (${code ?? 'error'})`, {
        hint: 'an identity directory holds ca.pem, cert.pem and key.pem',
      });
    }
  };
  const [ca, cert, key] = await Promise.all([read(ip.ca), read(ip.cert), read(ip.key)]);
  return { ca, cert, key };
}
