import { forge } from './forge.js';
import { mkdir, writeFile, chmod, open } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Default RSA modulus size. node-forge certificates need RSA keys. */
export const DEFAULT_RSA_BITS = 2048;

export interface KeyPairPem {
  privateKeyPem: string;
  publicKeyPem: string;
}

/**
 * Generates an RSA key pair. forge's callback form with `workers: -1` delegates to Node's native
 * `crypto.generateKeyPair`, which runs off the event loop (a pure-JS 2048-bit generation would
 * block it for seconds).
 */
export function generateRsaKeyPair(bits = DEFAULT_RSA_BITS): Promise<KeyPairPem> {
  return new Promise((resolve, reject) => {
    forge().pki.rsa.generateKeyPair({ bits, workers: -1 }, (err, kp) => {
      if (err) return reject(err instanceof Error ? err : new Error(String(err)));
      resolve({
        privateKeyPem: forge().pki.privateKeyToPem(kp.privateKey),
        publicKeyPem: forge().pki.publicKeyToPem(kp.publicKey),
      });
    });
  });
}

/**
 * Writes a private key with mode 0600 from the first byte: the file is created with that mode
 * (and chmod-ed again in case it already existed with a wider one). Keys are never logged.
 */
export async function writePrivateFile(path: string, pem: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const fh = await open(path, 'w', 0o600);
  try {
    await fh.chmod(0o600);
    await fh.writeFile(pem, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a public file (certificate, CA) with mode 0644. */
export async function writePublicFile(path: string, content: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, content, { mode: 0o644 });
  await chmod(path, 0o644);
}
