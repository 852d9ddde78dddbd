import { Duplex } from 'node:stream';
import { FrameDecoder, decodeBody, encodeFrame } from '../../../../protocol/index.js';

/** A JSON-RPC message as it arrives, before any checking. */
export interface WireMessage {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

/**
 * Two connected in-memory duplexes, like the two ends of a socket: what one writes the other
 * reads; ending one ends the other's input; destroying one ends the other's input too (as a
 * reset would), and nothing written to a destroyed end arrives.
 */
export function duplexPair(): [Duplex, Duplex] {
  const sides: Duplex[] = [];
  const eofSent = [false, false];
  const eof = (to: number) => {
    const o = sides[to]!;
    if (eofSent[to] || o.destroyed) return;
    eofSent[to] = true;
    o.push(null);
  };
  const make = (i: number) =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        const o = sides[1 - i]!;
        if (!o.destroyed && !eofSent[1 - i]) o.push(chunk);
        cb();
      },
      final(cb) {
        eof(1 - i);
        cb();
      },
      destroy(err, cb) {
        eof(1 - i);
        cb(err);
      },
    });
  sides.push(make(0), make(1));
  return [sides[0]!, sides[1]!];
}

/** Resolves when `check()` holds, polling each turn of the event loop; rejects after `timeoutMs` so nothing hangs. */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Lets every pending I/O callback and microtask run a few times over. */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

/**
 * The far end of a connection driven by hand: writes frames or raw bytes, and reads the replies
 * with a FrameDecoder. Heartbeat notifications are counted and kept out of the reply queue.
 */
export class RawEnd {
  readonly decoder = new FrameDecoder();
  heartbeats = 0;
  ended = false;
  closed = false;
  private readonly queue: WireMessage[] = [];
  private waiters: Array<() => void> = [];

  constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      for (const body of this.decoder.push(chunk)) {
        const msg = decodeBody(body) as WireMessage;
        if (msg.method === 'peer.heartbeat') this.heartbeats++;
        else this.queue.push(msg);
      }
      this.wake();
    });
    stream.on('end', () => {
      this.ended = true;
      this.wake();
    });
    stream.on('close', () => {
      this.closed = true;
      this.wake();
    });
    stream.on('error', () => undefined);
  }

  /** Writes one frame holding `value`. */
  send(value: unknown): void {
    this.stream.write(encodeFrame(value));
  }

  /** Writes bytes as they are. */
  sendBytes(bytes: Uint8Array): void {
    this.stream.write(bytes);
  }

  /** The next message the other end sent (heartbeats aside). */
  async next(timeoutMs = 10_000): Promise<WireMessage> {
    await this.waitFor(() => this.queue.length > 0 || this.closed, 'a reply', timeoutMs);
    const m = this.queue.shift();
    if (!m) throw new Error('connection closed before a reply arrived');
    return m;
  }

  /** Resolves once the other end has closed its side (or the stream closed). */
  async closedByPeer(timeoutMs = 10_000): Promise<void> {
    await this.waitFor(() => this.ended || this.closed, 'the connection to close', timeoutMs);
  }

  /** Messages received and not yet taken. */
  get pending(): number {
    return this.queue.length;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private waitFor(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== test);
        reject(new Error(`gave up waiting for ${what} after ${timeoutMs} ms`));
      }, timeoutMs);
      const test = () => {
        if (check()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(test);
      };
      test();
    });
  }
}
