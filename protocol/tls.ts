import tls from 'node:tls';
import { constants, type X509Certificate } from 'node:crypto';
import { roleFromOu } from '../pki/roles.js';
import type { RemoteIdentity } from './rpc-peer.js';

/** TLS material as PEM strings. */
export interface TlsMaterial {
  key: string;
  cert: string;
  ca: string;
}

/**
 * Options for the master's mutual-TLS listener. Security decisions: TLS 1.3 only; the client
 * must present a certificate chaining to our CA alone (`ca` replaces the system store); session
 * tickets are off so every connection does a full handshake and passes the per-connection
 * revocation check with a certificate in hand.
 */
export function mutualTlsServerOptions(m: TlsMaterial, handshakeTimeoutMs: number): tls.TlsOptions {
  return {
    key: m.key,
    cert: m.cert,
    ca: [m.ca],
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    handshakeTimeout: handshakeTimeoutMs,
    secureOptions: constants.SSL_OP_NO_TICKET,
  };
}

/** Options for the enrollment listener: server authentication only (the slave has no certificate yet). */
export function enrollmentTlsServerOptions(m: Omit<TlsMaterial, 'ca'>, handshakeTimeoutMs: number): tls.TlsOptions {
  return {
    key: m.key,
    cert: m.cert,
    requestCert: false,
    minVersion: 'TLSv1.3',
    handshakeTimeout: handshakeTimeoutMs,
    secureOptions: constants.SSL_OP_NO_TICKET,
  };
}

/** Client options for a slave or CLI connecting with its certificate; the master is checked against our CA alone. */
export function mutualTlsClientOptions(m: TlsMaterial, host: string, port: number): tls.ConnectionOptions {
  return {
    host,
    port,
    key: m.key,
    cert: m.cert,
    ca: [m.ca],
    servername: isIpLiteral(host) ? undefined : host,
    minVersion: 'TLSv1.3',
    rejectUnauthorized: true,
  };
}

function isIpLiteral(h: string): boolean {
  return /^[0-9.]+$/.test(h) || h.includes(':');
}

/** Reads the verified peer certificate of a mutual-TLS socket: CN is the name, OU carries the role. */
export function peerIdentity(socket: tls.TLSSocket): (RemoteIdentity & { serial: string }) | undefined {
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.subject || !cert.serialNumber) return undefined;
  const role = roleFromOu(cert.subject.OU);
  const cn = cert.subject.CN;
  if (!role || typeof cn !== 'string') return undefined;
  return { role, name: cn, serial: cert.serialNumber.toUpperCase(), address: socket.remoteAddress ?? '' };
}

/** How long before a certificate's end the slave (about its own) and the master (about its peers) warn: 14 days. */
export const CERT_WARN_MS = 14 * 86_400_000;

/**
 * Whether a certificate's dates would make a peer refuse it at the handshake: `expired` (after
 * its notAfter) or `early` (before its notBefore, a clock problem), with that date; undefined
 * when it is valid at `now`. Checked before connecting, so that the refusal, which a TLS 1.3
 * client sees only as its connection closing, is said plainly.
 */
export function certificateDateProblem(cert: X509Certificate, now = Date.now()): { kind: 'expired' | 'early'; at: Date } | undefined {
  const to = Date.parse(cert.validTo);
  if (now > to) return { kind: 'expired', at: new Date(to) };
  const from = Date.parse(cert.validFrom);
  if (now < from) return { kind: 'early', at: new Date(from) };
  return undefined;
}

/**
 * When a slave's certificate is due for renewal: once the last third of its life has begun (30
 * days before the end of the default 90). The slave asks from then on (cert.renew, at each
 * connection and daily) and the master refuses earlier requests, by the same rule.
 */
export function renewalDueAt(notBefore: number, notAfter: number): number {
  return notAfter - Math.floor((notAfter - notBefore) / 3);
}
