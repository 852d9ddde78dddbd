import { setTimeout as sleep } from 'node:timers/promises';
import type { MethodName, ParamsOf, ResultOf } from '../../../protocol/catalogue.js';
import { BuilderError, ErrorCodes, isBuilderError } from '../../../protocol/errors.js';
import { RpcCallError, type RpcPeer } from '../../../protocol/rpc-peer.js';

/** Options of a {@link MasterLink}; every limit named, with its default. */
export interface MasterLinkOptions {
  /** The connection to start with. */
  peer: RpcPeer;
  /**
   * Opens a new connection to the master (TLS and session.hello), giving up after `timeoutMs`.
   * Without it, a lost connection fails the call as before.
   */
  connect?: ((timeoutMs: number) => Promise<RpcPeer>) | undefined;
  /** How long to keep trying to reconnect after the connection is lost; 0 disables. Default 60 s. */
  reconnectForMs?: number;
  /** First pause between connection attempts, doubled after each failure. Default 200 ms. */
  firstDelayMs?: number;
  /** Longest pause between connection attempts. Default 5 s. */
  maxDelayMs?: number;
  /** Longest single connection attempt (TCP, TLS, hello); the window's remainder if shorter. Default 10 s. */
  connectTimeoutMs?: number;
  /** Told once per loss, before the first attempt. */
  onLost?: (reason: string) => void | Promise<void>;
  /** Told once the master answers again, with how long it was away. */
  onRegained?: (downMs: number) => void | Promise<void>;
  /** Hint of the error when the master stays away (e.g. how to pick up again). Default none. */
  lostHint?: string;
  /** Stops waiting for the master. */
  signal?: AbortSignal | undefined;
  /** The clock (ms). Default `Date.now`. */
  now?: () => number;
  /** Waits `ms` (or until `signal` aborts; never rejects). Default a real timer. */
  sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

const realSleep = (ms: number, signal: AbortSignal | undefined): Promise<void> => sleep(ms, undefined, signal ? { signal } : undefined).catch(() => undefined);

/**
 * A connection to the master that survives the master's restart, for the calls that may simply
 * be made again: reads such as job.get and log.read. A call that fails because the connection
 * went away (closed, or a call left unanswered past its timeout) is made again on a new
 * connection, opened with a bounded back-off (200 ms doubling to 5 s) for up to
 * `reconnectForMs`; past that, it fails with BUILDER_ERR_UNAVAILABLE (exit 3).
 *
 * Never use it for calls that change something (job.submit): the first call may have been
 * carried out before the connection went.
 */
export class MasterLink {
  private current: RpcPeer;
  private reconnecting: Promise<void> | undefined;
  private readonly reconnectForMs: number;
  private readonly firstDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly connectTimeoutMs: number;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal: AbortSignal | undefined) => Promise<void>;

  constructor(private readonly o: MasterLinkOptions) {
    this.current = o.peer;
    this.reconnectForMs = o.reconnectForMs ?? 60_000;
    this.firstDelayMs = o.firstDelayMs ?? 200;
    this.maxDelayMs = o.maxDelayMs ?? 5_000;
    this.connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
    this.now = o.now ?? Date.now;
    this.sleep = o.sleep ?? realSleep;
    for (const [k, v] of Object.entries({ reconnectForMs: this.reconnectForMs, firstDelayMs: this.firstDelayMs, maxDelayMs: this.maxDelayMs, connectTimeoutMs: this.connectTimeoutMs })) {
      if (!Number.isFinite(v) || v < 0 || (k !== 'reconnectForMs' && v === 0)) throw new BuilderError('BUILDER_ERR_CONFIG', `master link option ${k} must be a ${k === 'reconnectForMs' ? 'non-negative' : 'positive'} number`);
    }
  }

  /** The connection in use now (a new one after each reconnect). */
  get peer(): RpcPeer {
    return this.current;
  }

  /** `peer.call`, made again on a new connection when the master went away (see the class). */
  async call<M extends MethodName>(method: M, params: ParamsOf<M>, opts?: { timeoutMs?: number }): Promise<ResultOf<M>> {
    for (;;) {
      const peer = this.current;
      try {
        return await peer.call(method, params, opts);
      } catch (e) {
        const reason = lostBecause(e, peer);
        if (reason === undefined) throw e;
        // An unanswered call on an open connection: that connection is no use any more.
        peer.destroy();
        // Calls that fail together share one reconnect.
        if (this.current === peer) {
          this.reconnecting ??= this.reconnect(reason).finally(() => (this.reconnecting = undefined));
          await this.reconnecting;
        }
      }
    }
  }

  private lost(message: string): BuilderError {
    return new BuilderError('BUILDER_ERR_UNAVAILABLE', message, this.o.lostHint === undefined ? {} : { hint: this.o.lostHint });
  }

  private async reconnect(reason: string): Promise<void> {
    const window = this.reconnectForMs;
    if (window === 0 || this.o.connect === undefined) throw this.lost(`lost the connection to the master (${reason})`);
    await this.o.onLost?.(reason);
    const start = this.now();
    const deadline = start + window;
    let delay = this.firstDelayMs;
    let last = reason;
    for (let attempts = 0; ; attempts++) {
      if (this.o.signal?.aborted) throw this.lost(`lost the connection to the master (${reason})`);
      const left = deadline - this.now();
      // Not one more attempt in the last moments of the window: with a millisecond or two left
      // (the pause to the deadline rounds short), it could only fail on its own tiny timeout and
      // report that ("no TLS connection within 1 ms") instead of the real reason.
      if (left <= 0 || (attempts > 0 && left < MIN_ATTEMPT_MS)) {
        throw this.lost(`lost the connection to the master (${reason}) and could not reconnect within ${formatWindow(window)} (last attempt: ${last})`);
      }
      try {
        this.current = await this.o.connect(Math.max(1, Math.min(this.connectTimeoutMs, left)));
        await this.o.onRegained?.(this.now() - start);
        return;
      } catch (e) {
        // A broken identity will not mend itself; everything else (nothing listening yet, a
        // master still starting, a handshake cut short) may be the restart in progress.
        if (isBuilderError(e, 'BUILDER_ERR_CONFIG')) throw e;
        last = e instanceof Error ? e.message : String(e);
      }
      const pause = Math.min(delay, deadline - this.now());
      if (pause > 0) await this.sleep(pause, this.o.signal);
      delay = Math.min(delay * 2, this.maxDelayMs);
    }
  }
}

/** Least time left in the reconnect window for another attempt (the first one is always made). */
const MIN_ATTEMPT_MS = 100;

/** Why `peer` is no longer usable after `e`, or undefined when `e` is the master's own answer. */
function lostBecause(e: unknown, peer: RpcPeer): string | undefined {
  if (!(e instanceof RpcCallError)) return undefined;
  if (peer.closed || e.rpcCode === ErrorCodes.CONNECTION_CLOSED) return 'connection closed';
  // A timeout of our own carries no data; the master's own TIMEOUT answers carry their code in it.
  if (e.rpcCode === ErrorCodes.TIMEOUT && e.data === undefined) return 'no answer in time';
  return undefined;
}

function formatWindow(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
