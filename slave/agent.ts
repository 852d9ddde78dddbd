import { EventEmitter } from 'node:events';
import { X509Certificate } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { commonName, loadIdentity, renewIdentity, settleIdentity } from '../pki/index.js';
import {
  BuilderError,
  CERT_WARN_MS,
  certificateDateProblem,
  connectRpc,
  mutualTlsClientOptions,
  parseHostPort,
  renewalDueAt,
  type RpcPeer,
  type RpcPeerOptions,
} from '../protocol/index.js';

export const SOFTWARE = 'builder-slave/0.1.0';

/** Options for a slave's connection to its master. */
export interface SlaveAgentOptions {
  /** Slave data directory holding ca.pem, cert.pem, key.pem (from `slave enroll`). */
  dir: string;
  /** The master's main listener, HOST:PORT. */
  master: string;
  /** First reconnect delay. Default 200 ms. */
  backoffMinMs?: number;
  /** Longest reconnect delay. Default 30 s. */
  backoffMaxMs?: number;
  connectTimeoutMs?: number;
  rpc?: RpcPeerOptions;
  logger?: Logger;
  /**
   * Ask the master for a new certificate once the current one is in the last third of its life
   * (cert.renew). Default true; false leaves the certificate to whoever manages it.
   */
  renewCertificate?: boolean;
  /** Called on every new connection, after session.hello: register job handlers here. */
  onConnect?: (peer: RpcPeer) => void | Promise<void>;
}

const DAY_MS = 86_400_000;

/** How to get a new certificate once the old one has ended (the master enrolls a name again once none of its certificates is live). */
function reenrollHint(dir: string, name: string): string {
  return `enroll again: make a token on the master with "master token create", then run "slave enroll --dir ${dir} --force --name ${name}" with it`;
}

/**
 * The same before the end, when renewal over the connection has not worked: the old certificate
 * is still live, so the master must revoke it first.
 */
function renewHint(dir: string, name: string): string {
  return `the slave asks the master for a new one while connected (see "certificate renewal failed" above); by hand: drain this slave, run "master slave revoke ${name}" and "master token create" on the master, then "slave enroll --dir ${dir} --force --name ${name}" with the token, and start the slave again`;
}


/**
 * Checks the slave's certificate against the clock: one the master would refuse (expired, or
 * not valid yet) is a clear error here rather than a TLS alert on every reconnect.
 */
function checkCertificateDates(cert: X509Certificate, dir: string, now: number): void {
  const p = certificateDateProblem(cert, now);
  if (p?.kind === 'expired') {
    const name = commonName(cert) ?? 'NAME';
    throw new BuilderError('BUILDER_ERR_CERT', `the certificate in ${dir} expired on ${p.at.toISOString()}, so the master refuses it; ${reenrollHint(dir, name)}`);
  }
  if (p?.kind === 'early') {
    throw new BuilderError('BUILDER_ERR_CERT', `the certificate in ${dir} is not valid before ${p.at.toISOString()}: check this host's clock (it says ${new Date(now).toISOString()})`);
  }
}

export interface SlaveAgentEvents {
  connected: [peer: RpcPeer];
  disconnected: [err: Error | undefined];
  connectFailed: [err: Error];
  /** A renewed certificate is stored (cert.renew); the next connection uses it. */
  renewed: [serial: string, notAfter: number];
}

/**
 * Keeps a slave connected to its master: connects with its certificate, says hello, and
 * reconnects with exponential backoff and jitter whenever the connection drops.
 */
export class SlaveAgent extends EventEmitter<SlaveAgentEvents> {
  readonly log: Logger;
  name = '';
  private peer: RpcPeer | undefined;
  private stopped = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  /** The identity in use (ca, cert, key PEM); set by start, replaced by a renewal. */
  private identity: { ca: string; cert: string; key: string } | undefined;
  /** When the certificate begins and ends (ms since the epoch); 0 before start. */
  private certStart = 0;
  private certEnd = 0;
  private certTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private renewingOn: RpcPeer | undefined;

  constructor(private readonly opts: SlaveAgentOptions) {
    super();
    this.log = opts.logger ?? pino({ level: 'silent' });
    parseHostPort(opts.master, '--master address');
  }

  get connection(): RpcPeer | undefined {
    return this.peer && !this.peer.closed ? this.peer : undefined;
  }

  /** Loads the identity and starts connecting; resolves after the first attempt (connected or scheduled to retry). */
  async start(): Promise<void> {
    // A renewal that a crash cut short is finished (or undone) first: key and certificate match.
    const settled = await settleIdentity(this.opts.dir);
    if (settled !== 'none') this.log.warn({ dir: this.opts.dir, outcome: settled }, 'an interrupted certificate renewal was settled');
    const id = await loadIdentity(this.opts.dir);
    const cert = new X509Certificate(id.cert);
    checkCertificateDates(cert, this.opts.dir, Date.now());
    this.identity = id;
    this.certStart = Date.parse(cert.validFrom);
    this.certEnd = Date.parse(cert.validTo);
    this.name = commonName(cert) ?? 'slave';
    this.warnIfExpiring();
    this.certTimer = setInterval(() => {
      this.warnIfExpiring();
      void this.renewIfDue();
    }, DAY_MS);
    this.certTimer.unref();
    await this.connectOnce();
  }

  /**
   * Asks the master for a new certificate (cert.renew) once the current one is in the last
   * third of its life: after each connection and daily. One request at a time; a failure is
   * logged and tried again at the next of those. Resolves when this round is over.
   */
  renewIfDue(): Promise<void> {
    const peer = this.connection;
    // One in flight on a connection since lost fails; this connection asks again after it.
    if (this.renewing !== undefined) return this.renewingOn === peer ? this.renewing : this.renewing.then(() => this.renewIfDue());
    if (peer === undefined || this.stopped || this.opts.renewCertificate === false || Date.now() < renewalDueAt(this.certStart, this.certEnd)) return Promise.resolve();
    this.renewingOn = peer;
    this.renewing = this.renew(peer)
      .then((r) => {
        // A listener's throw is its own, not a failed renewal (the files are in place by now).
        if (r !== undefined) process.nextTick(() => this.emit('renewed', r.serial, r.notAfter));
      })
      .catch((e: unknown) => {
        if (this.stopped) return;
        this.log.warn({ err: (e as Error).message, expiresAt: new Date(this.certEnd).toISOString() }, 'certificate renewal failed; trying again at the next connection and daily');
      })
      .finally(() => {
        this.renewing = undefined;
        this.renewingOn = undefined;
      });
    return this.renewing;
  }

  /**
   * A new key made here (the private key never leaves this machine), certified by the master,
   * checked (our CA, our name, our key) and stored in place of the old pair. Node's crypto
   * only: node-forge (and the optimizer it lets go) would add 8 MiB to an idle slave.
   */
  private async renew(peer: RpcPeer): Promise<{ serial: string; notAfter: number } | undefined> {
    const id = this.identity;
    if (id === undefined) return undefined;
    const res = await renewIdentity(this.opts.dir, id, (publicKey, proof) => peer.call('cert.renew', { publicKey, proof }, { timeoutMs: 60_000 }));
    this.identity = { ...id, cert: res.cert, key: res.key };
    this.certStart = res.validFrom;
    this.certEnd = res.validTo;
    this.log.info({ serial: res.serial, expiresAt: new Date(res.notAfter).toISOString() }, 'certificate renewed; the next connection uses it');
    return { serial: res.serial, notAfter: res.notAfter };
  }

  /** Logs a warning when the certificate ends within 14 days (CERT_WARN_MS), and an error once it has. */
  private warnIfExpiring(): void {
    const left = this.certEnd - Date.now();
    if (left > CERT_WARN_MS) return;
    // Only when there is something to say: V8's first toISOString also works out the local time
    // zone's name, which pages in about 1 MiB of ICU time zone data for good.
    const at = new Date(this.certEnd).toISOString();
    if (left <= 0) this.log.error({ expiredAt: at }, `certificate expired: the master refuses this slave; ${reenrollHint(this.opts.dir, this.name)}`);
    else this.log.warn({ expiresAt: at, daysLeft: Math.floor(left / DAY_MS) }, `certificate expires soon; ${renewHint(this.opts.dir, this.name)}`);
  }

  private async connectOnce(): Promise<void> {
    const id = this.identity;
    if (this.stopped || id === undefined) return;
    const { host, port } = parseHostPort(this.opts.master);
    try {
      const peer = await connectRpc({
        ...this.opts.rpc,
        tls: mutualTlsClientOptions(id, host, port),
        remote: { role: 'master', name: 'master' },
        connectTimeoutMs: this.opts.connectTimeoutMs,
        logger: this.log,
      });
      peer
        .handle('peer.echo', (p) => p)
        .handle('slave.info', () => ({ name: this.name, pid: process.pid, uptimeMs: Date.now() - this.startedAt, software: SOFTWARE }));
      // A revoked certificate passes the TLS handshake on our side and is dropped by the master
      // right after it: hello is the proof that the master accepted us.
      const hello = await peer.call('session.hello', { version: '1', software: SOFTWARE }, { timeoutMs: 10_000 });
      if (this.stopped) {
        await peer.close(200);
        return;
      }
      this.peer = peer;
      this.log.info({ slave: hello.name, master: this.opts.master }, 'connected to master');
      peer.on('close', (err) => {
        if (this.peer === peer) this.peer = undefined;
        if (this.stopped) return;
        this.log.warn({ reason: err?.message }, 'connection to master lost');
        this.emit('disconnected', err);
        this.scheduleRetry();
      });
      try {
        await this.opts.onConnect?.(peer);
      } catch (e) {
        // The master took the handshake but not what we said after it (e.g. slave.subscribe):
        // drop this connection and retry with backoff rather than sit on a half-set-up session.
        this.log.error({ err: (e as Error).message }, 'master refused the session set-up; reconnecting');
        peer.destroy();
        return;
      }
      // Back-off restarts only once a session is fully set up, so a master that refuses the
      // set-up every time is retried ever more slowly, not in a tight loop.
      this.attempt = 0;
      this.emit('connected', peer);
      void this.renewIfDue();
    } catch (e) {
      const err = e as Error;
      // Expired while running: say so, not just that the master cannot be reached.
      if (this.certEnd > 0 && Date.now() > this.certEnd) this.warnIfExpiring();
      this.log.warn({ err: err.message }, 'cannot reach master');
      this.emit('connectFailed', err);
      this.scheduleRetry();
    }
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer) return;
    const min = this.opts.backoffMinMs ?? 200;
    const max = this.opts.backoffMaxMs ?? 30_000;
    const base = Math.min(max, min * 2 ** Math.min(this.attempt, 20));
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt++;
    this.log.info({ delayMs: delay, attempt: this.attempt }, 'reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connectOnce();
    }, delay);
  }

  /** Stops reconnecting and closes the connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.certTimer) clearInterval(this.certTimer);
    await this.peer?.close(1000);
    // Closing fails a cert.renew still in flight; a renewal storing its files finishes that.
    await this.renewing;
  }
}
