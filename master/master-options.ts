import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { parseHostPort, type RpcPeerOptions } from '../protocol/index.js';
import type { JobServiceOptions } from './jobs/job-options.js';

/**
 * Options for a master; every field is optional but `dir`. The job fields (slaveGraceMs,
 * acceptTimeoutMs, timeoutMarginMs, incomingDir, ...) are documented in master/jobs/job-options.ts.
 */
export interface MasterOptions extends JobServiceOptions {
  /** The master's data directory (CA, databases, incoming/, images/). */
  dir: string;
  /** Mutual-TLS listener for slaves and the CLI. Default 127.0.0.1:7400. */
  listen?: string;
  /** Enrollment listener (server-auth TLS only). Default 127.0.0.1:7401. */
  enrollListen?: string;
  /** Handshake deadline on both listeners. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Connections on the main listener. Default 10,000. */
  maxConnections?: number;
  /** Connections on the enrollment listener. Default 64. */
  maxEnrollConnections?: number;
  /** Frame limit on the enrollment listener. Default 16 KiB. */
  enrollMaxFrameBytes?: number;
  /** Enrollment attempts per IP: burst. Default 5. */
  enrollBurst?: number;
  /** Enrollment attempts per IP: refill per minute. Default 10. */
  enrollPerMinute?: number;
  /** Validity of a slave certificate signed at enrollment. Default 90 days. */
  slaveCertDays?: number;
  /**
   * A slave that renewed its certificate and asks again before connecting with the new one (it
   * lost it) gets another only this long after the last: the unused one is then revoked. Default 10 min.
   */
  certRenewRetryMs?: number;
  /** How often the master looks whether its own server certificate is due for renewal (also at start). Default 1 day. */
  serverCertCheckMs?: number;
  /** Options for every RPC connection on the main listener. */
  rpc?: RpcPeerOptions;
  logger?: Logger;
}

export interface CompiledMasterOptions {
  dir: string;
  listen: { host: string; port: number };
  enrollListen: { host: string; port: number };
  handshakeTimeoutMs: number;
  maxConnections: number;
  maxEnrollConnections: number;
  enrollMaxFrameBytes: number;
  enrollBurst: number;
  enrollPerMinute: number;
  slaveCertDays: number;
  certRenewRetryMs: number;
  serverCertCheckMs: number;
  rpc: RpcPeerOptions;
}

export function compileMasterOptions(o: MasterOptions): CompiledMasterOptions {
  return {
    dir: resolve(o.dir),
    listen: parseHostPort(o.listen ?? '127.0.0.1:7400', '--listen address'),
    enrollListen: parseHostPort(o.enrollListen ?? '127.0.0.1:7401', '--enroll-listen address'),
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
    maxConnections: o.maxConnections ?? 10_000,
    maxEnrollConnections: o.maxEnrollConnections ?? 64,
    enrollMaxFrameBytes: o.enrollMaxFrameBytes ?? 16 * 1024,
    enrollBurst: o.enrollBurst ?? 5,
    enrollPerMinute: o.enrollPerMinute ?? 10,
    slaveCertDays: o.slaveCertDays ?? 90,
    certRenewRetryMs: o.certRenewRetryMs ?? 10 * 60_000,
    serverCertCheckMs: o.serverCertCheckMs ?? 24 * 3600_000,
    rpc: o.rpc ?? {},
  };
}
