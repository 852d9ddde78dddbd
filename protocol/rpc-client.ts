import tls from 'node:tls';
import type { Logger } from 'pino';
import { BuilderError } from './errors.js';
import { RpcPeer, type RemoteIdentity, type RpcPeerOptions } from './rpc-peer.js';

export interface ConnectOptions extends RpcPeerOptions {
  tls: tls.ConnectionOptions;
  /** Time allowed for TCP connect plus TLS handshake. Default 10 s. */
  connectTimeoutMs?: number;
  /** Extra check on the server once the handshake is done (e.g. CA pinning); throw to refuse. */
  verifyServer?: (socket: tls.TLSSocket) => void;
  remote: RemoteIdentity;
  logger?: Logger;
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:7400`). */
export function parseHostPort(s: string, what = 'address'): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `invalid ${what} ${JSON.stringify(s)}`, { hint: 'use HOST:PORT, e.g. 127.0.0.1:7400' });
  }
  return { host: m[1]!, port };
}

/** Connects over TLS and returns an RpcPeer once the handshake (and `verifyServer`) succeeded. */
export function connectRpc(opts: ConnectOptions): Promise<RpcPeer> {
  return new Promise((resolve, reject) => {
    const timeoutMs = opts.connectTimeoutMs ?? 10_000;
    let done = false;
    // Half-open, as on the server: a master that half-closes still gets our replies (Node's
    // tls.connect honours allowHalfOpen; its typings leave it out).
    const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = { ...opts.tls, allowHalfOpen: true };
    const socket = tls.connect(connectOptions);
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new BuilderError('BUILDER_ERR_TIMEOUT', `no TLS connection within ${timeoutMs} ms`)), timeoutMs);
    socket.once('error', (err: Error & { code?: string }) => fail(describeConnectError(err, opts.tls)));
    socket.once('close', () => fail(new BuilderError('BUILDER_ERR_CONNECTION_CLOSED', 'the master closed the connection during the handshake')));
    socket.once('secureConnect', () => {
      if (done) return;
      try {
        opts.verifyServer?.(socket);
      } catch (e) {
        fail(e as Error);
        return;
      }
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.removeAllListeners('close');
      socket.setNoDelay(true);
      const peer = new RpcPeer(socket, opts.remote, opts);
      resolve(peer);
    });
  });
}

function describeConnectError(err: Error & { code?: string }, t: tls.ConnectionOptions): BuilderError {
  const where = `${t.host ?? '?'}:${t.port ?? '?'}`;
  switch (err.code) {
    case 'ECONNREFUSED':
      return new BuilderError('BUILDER_ERR_UNAVAILABLE', `nothing listens at ${where}`, { hint: 'is the master running, and is the address right?' });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new BuilderError('BUILDER_ERR_UNAVAILABLE', `cannot resolve ${String(t.host)}`);
    case 'ECONNRESET':
    case 'EPIPE':
      return new BuilderError('BUILDER_ERR_CERT', `the master at ${where} dropped the connection during the handshake`, {
        hint: 'the certificate may be revoked, expired or from another CA',
      });
    default:
      if (err.code?.startsWith('ERR_SSL') || err.code?.includes('CERT') || err.message.includes('alert')) {
        return new BuilderError('BUILDER_ERR_CERT', `TLS handshake with ${where} failed: ${err.message}`, {
          hint: 'the certificate may be revoked, expired or from another CA',
        });
      }
      return new BuilderError('BUILDER_ERR_UNAVAILABLE', `cannot connect to ${where}: ${err.message}`);
  }
}
