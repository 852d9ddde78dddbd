import { existsSync } from 'node:fs';
import { X509Certificate, createPublicKey } from 'node:crypto';
import tls from 'node:tls';
import type { Logger } from 'pino';
import {
  BuilderError,
  ErrorCodes,
  RpcCallError,
  checkName,
  connectRpc,
  parseHostPort,
  type RpcPeer,
} from '../protocol/index.js';
import {
  certFingerprint,
  createCsr,
  generateRsaKeyPair,
  identityPaths,
  normaliseFingerprint,
  writePrivateFile,
  writePublicFile,
  DEFAULT_RSA_BITS,
} from '../pki/index.js';

export interface EnrollOptions {
  /** The master's enrollment listener, HOST:PORT. */
  master: string;
  token: string;
  /** SHA-256 fingerprint of the master's CA certificate, as `master token create` printed it. */
  caFingerprint: string;
  /** Slave data directory; the identity (ca.pem, cert.pem, key.pem) is written here. */
  dir: string;
  name: string;
  force?: boolean;
  rsaBits?: number;
  connectTimeoutMs?: number;
  logger?: Logger;
}

/**
 * Checks, during the handshake, that the enrollment listener's certificate chains to the CA
 * pinned by fingerprint. Security: the system trust store plays no part; a man in the middle
 * without the CA key cannot present a chain that passes.
 */
export function verifyPinnedChain(socket: tls.TLSSocket, host: string, pinnedHex: string): void {
  const leafInfo = socket.getPeerCertificate(true);
  if (!leafInfo || !leafInfo.raw) throw new BuilderError('BUILDER_ERR_CERT', 'the master presented no certificate');
  const leaf = new X509Certificate(leafInfo.raw);
  let ca: X509Certificate | undefined;
  const seen = new Set<string>();
  for (let c: tls.DetailedPeerCertificate | undefined = leafInfo; c && c.raw && !seen.has(c.fingerprint256); c = c.issuerCertificate) {
    seen.add(c.fingerprint256);
    if (c.fingerprint256.replace(/:/g, '').toLowerCase() === pinnedHex) ca = new X509Certificate(c.raw);
  }
  if (!ca) {
    throw new BuilderError('BUILDER_ERR_CA_FINGERPRINT', "the master's CA does not match the fingerprint given", {
      hint: 'check --ca-fingerprint against what `master token create` printed; someone may be intercepting the connection',
    });
  }
  if (!ca.ca || !leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) {
    throw new BuilderError('BUILDER_ERR_CERT', "the master's certificate is not signed by the pinned CA");
  }
  const now = Date.now();
  if (Date.parse(leaf.validFrom) > now || Date.parse(leaf.validTo) < now) throw new BuilderError('BUILDER_ERR_CERT', "the master's certificate is not valid now");
  const idErr = tls.checkServerIdentity(host, leafInfo);
  if (idErr) throw new BuilderError('BUILDER_ERR_CERT', `the master's certificate does not name ${host}`, { hint: 'use a host name given to master init-ca --hostname' });
}

/**
 * Enrolls a slave: makes its key pair here (the private key never leaves this machine), sends a
 * CSR and the token, and stores the signed certificate and the CA.
 */
export async function enrollSlave(o: EnrollOptions): Promise<{ name: string; fingerprint: string; dir: string }> {
  checkName('slave', o.name);
  const pin = normaliseFingerprint(o.caFingerprint);
  const { host, port } = parseHostPort(o.master, '--master address');
  const paths = identityPaths(o.dir);
  if (existsSync(paths.cert) && !o.force) {
    throw new BuilderError('BUILDER_ERR_CONFLICT', `${paths.root} already holds an enrolled identity`, { hint: 'pass --force to enroll again' });
  }
  const keys = await generateRsaKeyPair(o.rsaBits ?? DEFAULT_RSA_BITS);
  const csr = createCsr({ ...keys, commonName: o.name });
  let peer: RpcPeer | undefined;
  try {
    peer = await connectRpc({
      tls: { host, port, rejectUnauthorized: false, minVersion: 'TLSv1.3', servername: /^[\d.]+$|:/.test(host) ? undefined : host },
      verifyServer: (s) => verifyPinnedChain(s, host, pin),
      remote: { role: 'master', name: 'master' },
      connectTimeoutMs: o.connectTimeoutMs,
      maxFrameBytes: 64 * 1024,
      logger: o.logger,
    });
    const res = await peer.call('enroll.request', { token: o.token, name: o.name, csr });
    if (certFingerprint(res.ca) !== pin) throw new BuilderError('BUILDER_ERR_CA_FINGERPRINT', 'the CA the master sent does not match the pinned fingerprint');
    const cert = new X509Certificate(res.cert);
    if (!cert.checkIssued(new X509Certificate(res.ca)) || !cert.publicKey.export({ type: 'spki', format: 'der' }).equals(createPublicKey(keys.publicKeyPem).export({ type: 'spki', format: 'der' }))) {
      throw new BuilderError('BUILDER_ERR_CERT', 'the certificate the master sent does not match our key or CA');
    }
    await writePrivateFile(paths.key, keys.privateKeyPem);
    await writePublicFile(paths.ca, res.ca);
    await writePublicFile(paths.cert, res.cert);
    return { name: o.name, fingerprint: pin, dir: paths.root };
  } catch (e) {
    if (e instanceof RpcCallError) {
      if (e.rpcCode === ErrorCodes.CONNECTION_CLOSED || e.rpcCode === ErrorCodes.TIMEOUT) {
        throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the master closed the enrollment connection', {
          hint: 'too many attempts from this address are refused for a while; wait a minute and retry',
        });
      }
      const code = e.rpcCode === ErrorCodes.CONFLICT ? 'BUILDER_ERR_CONFLICT' : e.rpcCode === ErrorCodes.INVALID_INPUT ? 'BUILDER_ERR_INVALID_NAME' : 'BUILDER_ERR_TOKEN';
      throw new BuilderError(code, `enrollment refused: ${e.message}`, { hint: hintFor(e) });
    }
    throw e;
  } finally {
    await peer?.close(200);
  }
}

function hintFor(e: RpcCallError): string | undefined {
  const d = e.data as { hint?: unknown } | undefined;
  return typeof d?.hint === 'string' ? d.hint : undefined;
}
