import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPair, sign } from 'node:crypto';
import { closeSync } from 'node:fs';
import { access, open, rename, rm, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BuilderError } from '../protocol/errors.js';
import { identityPaths } from './ca-dir.js';
import { certFingerprint, renewalProofMessage } from './certificates.js';
import { lockFile } from '../slave/executor/native-spawn.js';
import { DEFAULT_RSA_BITS, writePrivateFile } from './keys.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** The CN of a certificate's subject. */
export function commonName(cert: X509Certificate): string | undefined {
  return cert.subject
    .split('\n')
    .find((l) => l.startsWith('CN='))
    ?.slice(3);
}

/** What the master answers to cert.renew. */
export interface RenewalAnswer {
  cert: string;
  ca: string;
  serial: string;
  notAfter: number;
}

/**
 * Renews the identity in `dir`, whose CA and current certificate are `id`, over a connection
 * to the master: a new RSA key made here with node's crypto (the private key never leaves this
 * machine; no forge, which would add megabytes to a slave), the proof of possession (the new
 * key's signature over the current certificate's serial), `ask` (which calls cert.renew), then
 * checks that the answer is issued by our CA, under our name, for the new key, and stores the
 * new pair in place of the old ({@link replaceIdentityPair}). Returns the new pair and its dates.
 */
export async function renewIdentity(
  dir: string,
  id: { ca: string; cert: string },
  ask: (publicKey: string, proof: Uint8Array<ArrayBuffer>) => Promise<RenewalAnswer>,
): Promise<RenewalAnswer & { key: string; validFrom: number; validTo: number }> {
  const current = new X509Certificate(id.cert);
  const keys = await generateKeyPairAsync('rsa', {
    modulusLength: DEFAULT_RSA_BITS,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const res = await ask(keys.publicKey, sign('sha256', renewalProofMessage(current.serialNumber), keys.privateKey));
  const cert = new X509Certificate(res.cert);
  const ca = new X509Certificate(id.ca);
  if (certFingerprint(res.ca) !== certFingerprint(id.ca) || !cert.checkIssued(ca) || !cert.verify(ca.publicKey) || commonName(cert) !== commonName(current)) {
    throw new BuilderError('BUILDER_ERR_CERT', 'the certificate the master sent is not for this identity under its CA');
  }
  // Checks that the certificate carries the new key before anything is replaced.
  await replaceIdentityPair(dir, keys.privateKey, res.cert);
  return { ...res, key: keys.privateKey, validFrom: Date.parse(cert.validFrom), validTo: Date.parse(cert.validTo) };
}

/** The files of a replacement in progress, beside the identity's own. */
function pendingPaths(dir: string): { key: string; cert: string; root: string } {
  const p = identityPaths(dir);
  return { root: p.root, key: `${p.key}.new`, cert: `${p.cert}.new` };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Writes `content` to `path` and syncs it before returning. */
async function writeSynced(path: string, content: string, mode: number): Promise<void> {
  const fh = await open(path, 'w', mode);
  try {
    await fh.writeFile(content, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The lock of an identity directory's replacement (see {@link withIdentityLock}). */
export function identityLockPath(dir: string): string {
  return join(identityPaths(dir).root, '.renewal.lock');
}

/** A lock older than this is a crashed holder's and is taken over. */
const STALE_LOCK_MS = 10 * 60_000;

/**
 * Runs `fn` holding the directory's `.renewal.lock`, so that of several processes on one
 * identity directory (builder commands run in parallel) one at a time replaces or settles the
 * pair. Resolves `{ held: true }` without running `fn` when another process holds it. The lock
 * is an flock through the native addon: the kernel drops it when its holder dies, however it
 * dies (a Ctrl-C in the middle leaves nothing). Without the addon, the file is made with O_EXCL
 * and removed after; one older than 10 minutes is then a crashed holder's and is taken over.
 */
export async function withIdentityLock<T>(dir: string, fn: () => Promise<T>): Promise<{ value: T } | { held: true }> {
  const path = identityLockPath(dir);
  const r = lockFile(path, 0o600);
  if (r === 'held') return { held: true };
  if ('unavailable' in r) return withExclusiveFile(`${path}.excl`, fn);
  try {
    return { value: await fn() };
  } finally {
    closeSync(r.fd);
  }
}

/** {@link withIdentityLock} without the addon: a file made with O_EXCL, removed after, taken over after 10 minutes. */
async function withExclusiveFile<T>(path: string, fn: () => Promise<T>): Promise<{ value: T } | { held: true }> {
  // The file made here, or undefined when it exists.
  const create = () =>
    open(path, 'wx', 0o600).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
      throw e;
    });
  let fh = await create();
  if (fh === undefined) {
    const age = await stat(path).then(
      (s) => Date.now() - s.mtimeMs,
      () => Infinity,
    );
    if (age < STALE_LOCK_MS) return { held: true };
    await rm(path, { force: true });
    fh = await create();
    if (fh === undefined) return { held: true };
  }
  try {
    await fh.writeFile(`${process.pid}\n`);
    return { value: await fn() };
  } finally {
    await fh.close();
    await rm(path, { force: true });
  }
}

/** Whether a replacement may be in progress or was cut short in `dir` (`.new` files beside the pair). */
export async function identityBusy(dir: string): Promise<boolean> {
  const pending = pendingPaths(dir);
  for (const p of [pending.key, pending.cert]) if (await exists(p)) return true;
  return false;
}

/** Whether a certificate (PEM) carries the public half of a private key (PEM). */
export function certMatchesKey(certPem: string, keyPem: string): boolean {
  return new X509Certificate(certPem).publicKey.equals(createPublicKey(createPrivateKey(keyPem)));
}

/**
 * Replaces an identity's key and certificate with a renewed pair, so that a crash at any point
 * leaves a matching pair behind: both are written beside the old ones (`key.pem.new`,
 * `cert.pem.new`, the key 0600) and synced, then the key is renamed into place, then the
 * certificate, then the directory is synced. A crash between the two renames leaves the new key
 * with the old certificate; {@link settleIdentity}, run before the identity is loaded, finishes
 * that replacement.
 */
export async function replaceIdentityPair(dir: string, keyPem: string, certPem: string): Promise<void> {
  if (!certMatchesKey(certPem, keyPem)) throw new Error('the new certificate does not carry the new key');
  const p = identityPaths(dir);
  const pending = pendingPaths(dir);
  await writePrivateFile(pending.key, keyPem);
  await writeSynced(pending.cert, certPem, 0o644);
  await rename(pending.key, p.key);
  // The key's rename is on disk before the certificate's: never the new certificate with the old key.
  await syncDir(p.root);
  await rename(pending.cert, p.cert);
  await syncDir(p.root);
}

/** Whether the two files exist and the certificate carries the key; false for missing or unreadable ones. */
async function pairMatches(certPath: string, keyPath: string): Promise<boolean> {
  try {
    const [cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
    return certMatchesKey(cert, key);
  } catch {
    return false;
  }
}

/**
 * Finishes or undoes a replacement that a crash interrupted (see {@link replaceIdentityPair}),
 * deciding from what is on disk, so that `key.pem` and `cert.pem` end as a matching pair:
 * - the old pair still matches: the new files, if any, are dropped (`discarded`);
 * - otherwise the pair made of whichever of `key.pem`/`key.pem.new` and `cert.pem`/`cert.pem.new`
 *   match is moved into place (`completed`);
 * - nothing pending: `none`. Nothing is deleted before a matching pair is in place; with none to
 *   be found, this throws and leaves the files as they are.
 */
export async function settleIdentity(dir: string): Promise<'none' | 'completed' | 'discarded'> {
  const p = identityPaths(dir);
  const pending = pendingPaths(dir);
  const [keyNew, certNew] = [await exists(pending.key), await exists(pending.cert)];
  if (!keyNew && !certNew) return 'none';
  if (await pairMatches(p.cert, p.key)) {
    await rm(pending.key, { force: true });
    await rm(pending.cert, { force: true });
    await syncDir(p.root);
    return 'discarded';
  }
  const keyPath = keyNew && ((await pairMatches(p.cert, pending.key)) || (await pairMatches(pending.cert, pending.key))) ? pending.key : p.key;
  const certPath = (await pairMatches(pending.cert, keyPath)) ? pending.cert : p.cert;
  if (!(await pairMatches(certPath, keyPath))) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `no key in ${p.root} matches a certificate there (an interrupted renewal): the files are left as they are`, {
      hint: 'make the identity anew: slave enroll --force for a slave, master client create for a person or a script',
    });
  }
  if (keyPath !== p.key) await rename(keyPath, p.key);
  await syncDir(p.root);
  if (certPath !== p.cert) await rename(certPath, p.cert);
  await rm(pending.key, { force: true });
  await rm(pending.cert, { force: true });
  await syncDir(p.root);
  return 'completed';
}
