import { EventEmitter } from 'node:events';
import { X509Certificate } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { loadIdentity } from '../pki/index.js';
import { connectRpc, mutualTlsClientOptions, parseHostPort, type RpcPeer, type RpcPeerOptions } from '../protocol/index.js';

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
  /** Called on every new connection, after session.hello: register job handlers here. */
  onConnect?: (peer: RpcPeer) => void | Promise<void>;
}

export interface SlaveAgentEvents {
  connected: [peer: RpcPeer];
  disconnected: [err: Error | undefined];
  connectFailed: [err: Error];
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
    const id = await loadIdentity(this.opts.dir);
    this.name = new X509Certificate(id.cert).subject.split('\n').find((l) => l.startsWith('CN='))?.slice(3) ?? 'slave';
    await this.connectOnce(id);
  }

  private async connectOnce(id: { ca: string; cert: string; key: string }): Promise<void> {
    if (this.stopped) return;
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
        this.scheduleRetry(id);
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
    } catch (e) {
      const err = e as Error;
      this.log.warn({ err: err.message }, 'cannot reach master');
      this.emit('connectFailed', err);
      this.scheduleRetry(id);
    }
  }

  private scheduleRetry(id: { ca: string; cert: string; key: string }): void {
    if (this.stopped || this.retryTimer) return;
    const min = this.opts.backoffMinMs ?? 200;
    const max = this.opts.backoffMaxMs ?? 30_000;
    const base = Math.min(max, min * 2 ** Math.min(this.attempt, 20));
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt++;
    this.log.info({ delayMs: delay, attempt: this.attempt }, 'reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connectOnce(id);
    }, delay);
  }

  /** Stops reconnecting and closes the connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.peer?.close(1000);
  }
}
