import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { open, rename, rm, readFile } from 'node:fs/promises';
import { identityPaths } from './ca-dir.js';
import { writePrivateFile } from './keys.js';

/** The files of a replacement in progress, beside the identity's own. */
function pendingPaths(dir: string): { key: string; cert: string; root: string } {
  const p = identityPaths(dir);
  return { root: p.root, key: `${p.key}.new`, cert: `${p.cert}.new` };
}

async function exists(path: string): Promise<boolean> {
  try {
    await (await open(path, 'r')).close();
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
  await rename(pending.cert, p.cert);
  await syncDir(p.root);
}

/**
 * Finishes or undoes a replacement that a crash interrupted (see {@link replaceIdentityPair}):
 * - `key.pem.new` still there: neither file was moved; the new pair is dropped (`discarded`);
 * - only `cert.pem.new` there: the key was moved; the certificate follows if it carries that key
 *   (`completed`), else it is dropped (`discarded`);
 * - neither: nothing to do (`none`).
 */
export async function settleIdentity(dir: string): Promise<'none' | 'completed' | 'discarded'> {
  const p = identityPaths(dir);
  const pending = pendingPaths(dir);
  if (await exists(pending.key)) {
    await rm(pending.key, { force: true });
    await rm(pending.cert, { force: true });
    await syncDir(p.root);
    return 'discarded';
  }
  if (!(await exists(pending.cert))) return 'none';
  const [certPem, keyPem] = await Promise.all([readFile(pending.cert, 'utf8'), readFile(p.key, 'utf8')]);
  let matches: boolean;
  try {
    matches = certMatchesKey(certPem, keyPem);
  } catch {
    matches = false;
  }
  if (matches) await rename(pending.cert, p.cert);
  else await rm(pending.cert, { force: true });
  await syncDir(p.root);
  return matches ? 'completed' : 'discarded';
}
