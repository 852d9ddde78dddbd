import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BuilderError, ErrorCodes } from '../../../protocol/errors.js';
import { connectRpc } from '../../../protocol/rpc-client.js';
import { RpcCallError, type RpcPeer } from '../../../protocol/rpc-peer.js';
import { certificateDateProblem, mutualTlsClientOptions, renewalDueAt } from '../../../protocol/tls.js';
import { VERSION } from '../../../master/version.js';
import type { ClientConfig } from './client-config.js';

/** Options of {@link connectClient}. */
export interface ConnectClientOptions {
  /** TCP connect plus TLS handshake plus session.hello. Default 10 s. */
  connectTimeoutMs?: number;
  /** Renew the identity's certificate when it is due. Default: yes, unless BUILDER_NO_RENEW=1. */
  renew?: boolean;
}

/**
 * Once the identity's certificate is in the last third of its life, trades it for a new one
 * over this connection (cert.renew, as a slave does: pki/identity-renewal.ts) and stores the
 * new pair in the identity directory; the next command connects with it. Says so on stderr.
 * A failure is said there too and does not stop the command: the next one tries again.
 */
async function renewIfDue(dir: string, id: { ca: string; cert: string }, peer: RpcPeer, enabled: boolean): Promise<void> {
  const x = new X509Certificate(id.cert);
  const end = Date.parse(x.validTo);
  if (!enabled || Date.now() < renewalDueAt(Date.parse(x.validFrom), end)) return;
  try {
    // Before a key is made or the master asked: a new certificate this process cannot store would be one more per try.
    await access(resolve(dir), constants.W_OK);
  } catch {
    process.stderr.write(`builder: the certificate in ${dir} is due for renewal but the directory is not writable; it ends on ${new Date(end).toISOString()} (BUILDER_NO_RENEW=1 silences this)\n`);
    return;
  }
  try {
    // Loaded only when due (every 8 months for a year-long certificate): pki is not on the path of every command.
    const { renewIdentity, withIdentityLock } = await import('../../../pki/identity-renewal.js');
    // One command at a time renews a directory; the others go on with the pair they read.
    const r = await withIdentityLock(resolve(dir), async () => {
      // Another command may have renewed it while this one waited for the lock: nothing to do then.
      if ((await readFile(join(resolve(dir), 'cert.pem'), 'utf8')) !== id.cert) return undefined;
      return renewIdentity(resolve(dir), id, (publicKey, proof) => peer.call('cert.renew', { publicKey, proof }, { timeoutMs: 15_000 }));
    });
    if ('held' in r || r.value === undefined) return;
    process.stderr.write(`builder: renewed the certificate in ${dir}: serial ${r.value.serial}, valid until ${new Date(r.value.validTo).toISOString()}\n`);
  } catch (e) {
    process.stderr.write(`builder: could not renew the certificate in ${dir} (${(e as Error).message}); it ends on ${new Date(end).toISOString()}, and the next command tries again\n`);
  }
}

/** A connected CLI session: the peer and who the master says we are. */
export interface ClientSession {
  peer: RpcPeer;
  name: string;
  role: string;
}

/**
 * Reads an identity directory (ca.pem, cert.pem, key.pem), naming the file that cannot be read.
 * Not pki's loadIdentity: that module loads the CA's crypto library and the certificate
 * registry, a tenth of a second of every command spent on reading three files.
 */
async function readIdentity(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const read = async (name: string) => {
    const f = join(resolve(dir), name);
    try {
      return await readFile(f, 'utf8');
    } catch (e) {
      throw new BuilderError('BUILDER_ERR_CONFIG', `cannot read identity file ${f} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, {
        hint: 'an identity directory holds ca.pem, cert.pem and key.pem (master client create makes one)',
      });
    }
  };
  const [ca, cert, key] = await Promise.all([read('ca.pem'), read('cert.pem'), read('key.pem')]);
  return { ca, cert, key };
}

/** Why a key, certificate and CA do not make a TLS context (not PEM, a pair that does not belong together), or undefined. */
function contextError(id: { ca: string; cert: string; key: string }): Error | undefined {
  try {
    createSecureContext({ key: id.key, cert: id.cert, ca: id.ca });
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

const CERT_HINT = 'the certificate may be revoked, expired or from another CA; ask the master operator for a new identity (master client create)';

/**
 * Connects to the master with the identity directory and says hello. The hello is part of the
 * connection: with TLS 1.3 the client's handshake completes before the master has checked the
 * client certificate, so a refused (revoked, expired, foreign) certificate shows up as the
 * connection closing on the first call.
 */
export async function connectClient(cfg: ClientConfig, o: ConnectClientOptions = {}): Promise<ClientSession> {
  const timeoutMs = o.connectTimeoutMs ?? 10_000;
  let id = await readIdentity(cfg.identity.dir);
  let bad = contextError(id);
  if (bad !== undefined) {
    // A key and certificate that do not match: another command is between the two renames of a
    // renewal (or was, a moment ago), or a crash cut one short. Settle it under the lock, or wait
    // for the command holding it, and read again; up to 5 s (pki/identity-renewal.ts).
    const { identityBusy, settleIdentity, withIdentityLock } = await import('../../../pki/identity-renewal.js');
    const dir = resolve(cfg.identity.dir);
    for (let i = 0; i < 100 && bad !== undefined; i++) {
      const busy = await identityBusy(dir);
      if (busy && 'held' in (await withIdentityLock(dir, () => settleIdentity(dir)))) await new Promise((r) => setTimeout(r, 50));
      id = await readIdentity(cfg.identity.dir);
      bad = contextError(id);
      // Nothing pending: a renewal that ended between the first read and now; one more read was enough.
      if (!busy) break;
    }
  }
  if (bad !== undefined) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `the identity in ${cfg.identity.dir} is not usable: ${bad.message}`, {
      hint: 'ca.pem, cert.pem and key.pem must be PEM files that belong together',
    });
  }
  const dates = certificateDateProblem(new X509Certificate(id.cert));
  if (dates?.kind === 'expired') {
    throw new BuilderError('BUILDER_ERR_CERT', `the certificate in ${cfg.identity.dir} expired on ${dates.at.toISOString()}, so the master refuses it`, {
      hint: 'ask the master operator for a new identity (master client create)',
    });
  }
  if (dates?.kind === 'early') {
    throw new BuilderError('BUILDER_ERR_CERT', `the certificate in ${cfg.identity.dir} is not valid before ${dates.at.toISOString()}`, { hint: "check this host's clock" });
  }
  const peer = await connectRpc({
    tls: mutualTlsClientOptions(id, cfg.master.host, cfg.master.port),
    connectTimeoutMs: timeoutMs,
    remote: { role: 'master', name: 'master' },
    // Long polls (log.read) take their own timeout per call.
    requestTimeoutMs: 30_000,
  });
  try {
    const hello = await peer.call('session.hello', { version: VERSION, software: `builder-cli/${VERSION}` }, { timeoutMs });
    await renewIfDue(cfg.identity.dir, id, peer, o.renew ?? process.env.BUILDER_NO_RENEW !== '1');
    return { peer, name: hello.name, role: hello.role };
  } catch (e) {
    peer.destroy();
    if (e instanceof RpcCallError && e.rpcCode === ErrorCodes.CONNECTION_CLOSED) {
      throw new BuilderError('BUILDER_ERR_CERT', `the master at ${cfg.master.text} refused the certificate in ${cfg.identity.dir}`, { hint: CERT_HINT });
    }
    throw e;
  }
}
