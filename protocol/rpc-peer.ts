import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  JSONRPCClient,
  createJSONRPCErrorResponse,
  type JSONRPCError,
  type JSONRPCID,
  type JSONRPCRequest,
  type JSONRPCResponse,
} from 'json-rpc-2.0';
import type { Logger } from 'pino';
import { catalogue, type MethodName, type ParamsOf, type PeerRole, type ResultOf } from './catalogue.js';
import { BuilderError, ErrorCodes, isBuilderError } from './errors.js';
import { decodeBody, encodeFrameChunks, FrameDecoder, DEFAULT_MAX_FRAME_BYTES, type EncodedFrame } from './frame-codec.js';
import { RpcMethods } from './rpc-methods.js';

/** Options for one RPC connection. Every limit is named, with a safe default. */
export interface RpcPeerOptions {
  /** Largest frame body accepted or sent. Default 16 MiB. */
  maxFrameBytes?: number;
  /** Requests from the remote being handled at once; reading pauses at this count. Default 256. */
  maxInFlight?: number;
  /** Largest JSON-RPC batch accepted. Default 32. */
  maxBatch?: number;
  /** Time a call waits for its answer. Default 30 s. */
  requestTimeoutMs?: number;
  /** A heartbeat is sent after this long without sending anything. Default 5 s. */
  heartbeatIntervalMs?: number;
  /** The peer is declared dead after this long without receiving anything. Default 15 s. */
  deadAfterMs?: number;
  /** Malformed messages tolerated before the connection is closed. Default 8. */
  maxProtocolErrors?: number;
  /** Frames smaller than this are written as one buffer; larger ones as header + body. Default 64 KiB. */
  coalesceBelowBytes?: number;
}

/** What a connection is built with besides its limits. */
export interface RpcPeerSetup {
  logger?: Logger;
  /**
   * The methods this end serves, shared with every other connection of the same kind (built
   * once: see RpcMethods). Default: only peer.heartbeat, plus what `handle` adds to this peer.
   */
  methods?: RpcMethods;
  /** The limits compiled once for many connections (overrides the RpcPeerOptions fields). */
  compiled?: CompiledRpcPeerOptions;
  /**
   * Called once when the connection closes, before the 'close' event: one function for all the
   * connections of a listener costs nothing per connection, unlike a listener each.
   */
  onClose?: (peer: RpcPeer, err: Error | undefined) => void;
}

export interface CompiledRpcPeerOptions {
  maxFrameBytes: number;
  maxInFlight: number;
  maxBatch: number;
  requestTimeoutMs: number;
  heartbeatIntervalMs: number;
  deadAfterMs: number;
  maxProtocolErrors: number;
  coalesceBelowBytes: number;
}

/** Validates and fills in defaults once. */
export function compileRpcPeerOptions(o: RpcPeerOptions = {}): CompiledRpcPeerOptions {
  const c: CompiledRpcPeerOptions = {
    maxFrameBytes: o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    maxInFlight: o.maxInFlight ?? 256,
    maxBatch: o.maxBatch ?? 32,
    requestTimeoutMs: o.requestTimeoutMs ?? 30_000,
    heartbeatIntervalMs: o.heartbeatIntervalMs ?? 5_000,
    deadAfterMs: o.deadAfterMs ?? 15_000,
    maxProtocolErrors: o.maxProtocolErrors ?? 8,
    coalesceBelowBytes: o.coalesceBelowBytes ?? 64 * 1024,
  };
  for (const [k, v] of Object.entries(c)) {
    if (!Number.isFinite(v) || v <= 0) throw new BuilderError('BUILDER_ERR_CONFIG', `RPC option ${k} must be a positive number`);
  }
  if (c.deadAfterMs <= c.heartbeatIntervalMs) {
    throw new BuilderError('BUILDER_ERR_CONFIG', 'deadAfterMs must be longer than heartbeatIntervalMs');
  }
  return c;
}

/** Who the remote end is, established by TLS before any message is read. */
export interface RemoteIdentity {
  role: PeerRole;
  name: string;
  serial?: string;
  address?: string;
}

/** Passed to every handler: which connection the call came on, and who is at its other end. */
export interface CallContext {
  peer: RpcPeer;
  remote: RemoteIdentity;
}

export type Handler<M extends MethodName> = (params: ParamsOf<M>, ctx: CallContext) => Promise<ResultOf<M>> | ResultOf<M>;

/** A call that came back with a JSON-RPC error, or failed locally (timeout, closed connection). */
export class RpcCallError extends Error {
  constructor(
    message: string,
    readonly rpcCode: number,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'RpcCallError';
  }
}

export interface RpcPeerEvents {
  close: [err: Error | undefined];
}

interface RawMessage {
  jsonrpc?: unknown;
  method?: unknown;
  id?: unknown;
  result?: unknown;
  error?: unknown;
}

const isId = (v: unknown): v is JSONRPCID => typeof v === 'string' || typeof v === 'number' || v === null;

const RESOLVED: Promise<void> = Promise.resolve();

/** A batch being served: its requests count one by one against maxInFlight; the replies go back as one array. */
interface BatchState {
  readonly items: JSONRPCRequest[];
  /** Index of the next request to hand to the server. */
  next: number;
  /** Requests handed to the server and not answered yet. */
  outstanding: number;
  readonly replies: JSONRPCResponse[];
}

const unused = (): Promise<void> => RESOLVED;

/**
 * json-rpc-2.0's client with `send` going straight to the peer's frame writer. The library's own
 * `send` wraps each call in an ES5 async state machine that adds nothing here but a few promise
 * turns; and calling the peer's method needs no closure per connection.
 */
class WireClient extends JSONRPCClient<void> {
  constructor(private readonly peer: RpcPeer) {
    super(unused);
  }

  override send(payload: JSONRPCRequest): Promise<void> {
    return this.peer[SEND_REQUEST](payload);
  }
}

/** The methods every connection serves when it is given no table: peer.heartbeat only. */
const HEARTBEAT_ONLY = new RpcMethods();

/** Where a stream's RpcPeer is kept, so that one set of stream listeners serves every peer. */
const PEER = Symbol('builder.rpcPeer');
/** RpcPeer's request writer, for WireClient only. */
const SEND_REQUEST = Symbol('builder.rpcPeer.sendRequest');

type PeerStream = Duplex & { [PEER]?: RpcPeer };

function peerOf(stream: Duplex): RpcPeer | undefined {
  return (stream as PeerStream)[PEER];
}

function onStreamData(this: Duplex, chunk: Buffer): void {
  peerOf(this)?.[ON_DATA](chunk);
}
function onStreamDrain(this: Duplex): void {
  peerOf(this)?.[ON_DRAIN]();
}
function onStreamError(this: Duplex, err: Error): void {
  peerOf(this)?.[FINISH](err);
}
function onStreamClose(this: Duplex): void {
  peerOf(this)?.[FINISH](undefined);
}
function onStreamEnd(this: Duplex): void {
  peerOf(this)?.[ON_END]();
}
const ON_DATA = Symbol('onData');
const ON_DRAIN = Symbol('onDrain');
const ON_END = Symbol('onEnd');
const FINISH = Symbol('finish');
const TICK = Symbol('tick');

/**
 * One interval per tick period for every live peer of the process, instead of one per peer: a
 * master with 1,000 slaves runs one timer, not 1,000.
 */
class Ticker {
  private static readonly byPeriod = new Map<number, Ticker>();
  private readonly peers = new Set<RpcPeer>();
  private readonly timer: NodeJS.Timeout;

  private constructor(private readonly periodMs: number) {
    this.timer = setInterval(() => this.tick(), periodMs);
    this.timer.unref();
  }

  static join(peer: RpcPeer, periodMs: number): void {
    let t = Ticker.byPeriod.get(periodMs);
    if (t === undefined) Ticker.byPeriod.set(periodMs, (t = new Ticker(periodMs)));
    t.peers.add(peer);
  }

  static leave(peer: RpcPeer, periodMs: number): void {
    const t = Ticker.byPeriod.get(periodMs);
    if (t === undefined || !t.peers.delete(peer) || t.peers.size > 0) return;
    clearInterval(t.timer);
    Ticker.byPeriod.delete(periodMs);
  }

  private tick(): void {
    const now = Date.now();
    // A peer closed by its tick leaves the set during the loop: Set iteration allows that.
    for (const p of this.peers) p[TICK](now);
  }
}

/**
 * One full-duplex JSON-RPC 2.0 connection over msgpack frames, on any duplex stream (TLS in
 * production, in-memory pairs in tests). Both ends serve the catalogue's methods for their side
 * and call the other's, through json-rpc-2.0's JSONRPCServerAndClient: its server dispatches each
 * request to the handler, its client matches each response to its call. Around it, this class
 * owns what the library leaves open: frames and their limit, message shapes, batch and in-flight
 * limits, call deadlines (one timer for all calls), heartbeats and backpressure.
 */
export class RpcPeer extends EventEmitter<RpcPeerEvents> {
  readonly options: CompiledRpcPeerOptions;
  readonly remote: RemoteIdentity;
  /** Where this connection logs (handler failures too). */
  readonly logger: Logger | undefined;
  private readonly stream: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly client: WireClient;
  /** The shared table this end serves (or the heartbeat-only one). */
  private readonly methods: RpcMethods;
  /** Methods added to this connection alone by `handle`; they take precedence. */
  private own: RpcMethods | undefined;
  private readonly onClose: ((peer: RpcPeer, err: Error | undefined) => void) | undefined;
  private readonly tickMs: number;
  private readonly ctx: CallContext;
  // Receiving.
  private inFlight = 0;
  private paused = false;
  /** Frame bodies read but not handled yet, because maxInFlight requests are being handled. */
  private backlog: Array<Buffer | undefined> = [];
  private backlogHead = 0;
  /** A batch whose requests are not all handed to the server yet. */
  private batch: BatchState | undefined;
  private remoteEnded = false;
  private protocolErrors = 0;
  private lastReceived = Date.now();
  private receivedSinceTick = false;
  // Sending and calling.
  private lastSent = Date.now();
  private sentSinceTick = false;
  private drainWaiters: Array<() => void> = [];
  private nextId = 0;
  /** Deadline (epoch ms) of each call awaiting its answer; made at the first call. */
  private deadlines: Map<number, number> | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private deadlineTimerAt = Infinity;
  private closedWith: { err: Error | undefined } | undefined;

  constructor(stream: Duplex, remote: RemoteIdentity, opts: RpcPeerOptions & RpcPeerSetup = {}) {
    super();
    this.options = opts.compiled ?? compileRpcPeerOptions(opts);
    this.stream = stream;
    this.remote = remote;
    this.logger = opts.logger;
    this.methods = opts.methods ?? HEARTBEAT_ONLY;
    this.onClose = opts.onClose;
    this.decoder = new FrameDecoder({ maxFrameBytes: this.options.maxFrameBytes });
    this.ctx = { peer: this, remote };
    this.client = new WireClient(this);

    // The same five listener functions for every peer: each finds its peer on the stream.
    (stream as PeerStream)[PEER] = this;
    stream.on('data', onStreamData);
    stream.on('drain', onStreamDrain);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    stream.on('end', onStreamEnd);
    this.tickMs = Math.min(this.options.heartbeatIntervalMs, 1000);
    Ticker.join(this, this.tickMs);
  }

  /** True once the connection is closed. */
  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /**
   * Serves a catalogue method on this connection alone (over the shared table, if any). Params
   * are validated and the caller's role checked first. A listener with many connections builds
   * one RpcMethods instead and passes it as `methods`.
   */
  handle<M extends MethodName>(method: M, handler: Handler<M>): this {
    (this.own ??= new RpcMethods()).handle(method, handler);
    return this;
  }

  /** Calls a method on the remote end and returns its validated result. */
  call<M extends MethodName>(method: M, params: ParamsOf<M>, opts: { timeoutMs?: number } = {}): Promise<ResultOf<M>> {
    if (this.closedWith) return Promise.reject(new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED));
    const id = ++this.nextId;
    this.setDeadline(id, Date.now() + (opts.timeoutMs ?? this.options.requestTimeoutMs));
    // The library returns a real Promise here; its type says only PromiseLike.
    const answer = this.client.requestAdvanced({ jsonrpc: '2.0', id, method, params }, undefined) as Promise<JSONRPCResponse>;
    return answer.then((response) => {
      this.deadlines?.delete(id);
      if (response.error) throw this.toCallError(response.error);
      const parsed = catalogue[method].result.safeParse(response.result);
      if (!parsed.success) throw new RpcCallError(`peer sent an invalid result for ${method}`, ErrorCodes.INVALID_REQUEST);
      return parsed.data as ResultOf<M>;
    });
  }

  /** Sends a notification; resolves once written (waits for 'drain' under backpressure). */
  notify<M extends MethodName>(method: M, params: ParamsOf<M>): Promise<void> {
    if (this.closedWith || !this.writable()) return Promise.reject(new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED));
    let frame: EncodedFrame;
    try {
      frame = encodeFrameChunks({ jsonrpc: '2.0', method, params }, this.options.maxFrameBytes);
    } catch (e) {
      return Promise.reject(encodeFailure(e));
    }
    return this.writeFrame(frame) ? RESOLVED : this.drained();
  }

  /** Ends the connection: pending calls are rejected; the stream is ended, then destroyed after `graceMs`. */
  close(graceMs = 2000): Promise<void> {
    if (this.closedWith) return Promise.resolve();
    return new Promise((resolve) => {
      this.once('close', () => resolve());
      this.stream.end();
      setTimeout(() => this.stream.destroy(), graceMs).unref();
    });
  }

  /** Drops the connection at once (revocation, protocol violation). */
  destroy(err?: Error): void {
    this.stream.destroy(err);
    this.finish(err);
  }

  /** Whether this end serves `method`. */
  serves(method: string): boolean {
    return this.own?.serves(method) === true || this.methods.serves(method);
  }

  /** @internal The stream closed or failed. */
  [FINISH](err: Error | undefined): void {
    if (this.closedWith) return;
    this.closedWith = { err };
    Ticker.leave(this, this.tickMs);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    if (this.deadlines) for (const id of this.deadlines.keys()) this.failCall(id, ErrorCodes.CONNECTION_CLOSED, 'connection closed');
    this.client.rejectAllPendingRequests('connection closed');
    this.backlog = [];
    this.backlogHead = 0;
    this.batch = undefined;
    this.flushDrainWaiters();
    try {
      this.onClose?.(this, err);
    } catch (e) {
      // A failing hook must not keep 'close' from the listeners (close() waits for it).
      this.logger?.error({ peer: this.remote.name, err: e instanceof Error ? e.message : String(e) }, 'peer close hook failed');
    }
    this.emit('close', err);
  }

  private finish(err: Error | undefined): void {
    this[FINISH](err);
  }

  /** @internal The remote half-closed: nothing more will arrive, but it still reads. */
  [ON_END](): void {
    // Answer what it sent (pump ends our side once the last reply is written).
    this.remoteEnded = true;
    if (this.decoder.pendingBytes > 0) this.logger?.debug({ peer: this.remote.name, bytes: this.decoder.pendingBytes }, 'peer ended inside a frame');
    this.pump();
  }

  /** @internal The stream can take more writes. */
  [ON_DRAIN](): void {
    this.flushDrainWaiters();
  }

  /** @internal Called by the shared ticker, with its clock reading. */
  [TICK](now: number): void {
    // Reads and writes only raise a flag; the clock is read here, once per tick.
    if (this.receivedSinceTick) {
      this.receivedSinceTick = false;
      this.lastReceived = now;
    }
    if (this.sentSinceTick) {
      this.sentSinceTick = false;
      this.lastSent = now;
    }
    // While reading is paused at maxInFlight, silence is ours, not the peer's: its heartbeats wait
    // unread in the socket. The clock restarts when reading resumes (see pump).
    if (!this.paused && now - this.lastReceived > this.options.deadAfterMs) {
      this.logger?.warn({ peer: this.remote.name }, 'peer missed its heartbeats; closing');
      this.destroy(new BuilderError('BUILDER_ERR_HEARTBEAT', `no message from ${this.remote.name} for ${now - this.lastReceived} ms`));
      return;
    }
    if (now - this.lastSent >= this.options.heartbeatIntervalMs && this.writable()) {
      this.notify('peer.heartbeat', { t: now }).catch(() => undefined);
    }
  }

  // ---- calls: deadlines ----

  private setDeadline(id: number, at: number): void {
    (this.deadlines ??= new Map()).set(id, at);
    // One timer for every pending call, due at the earliest deadline; calls made with the same
    // timeout have ever later deadlines, so it is rarely re-armed.
    if (at < this.deadlineTimerAt) this.armDeadlineTimer(at);
  }

  private armDeadlineTimer(at: number): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimerAt = at;
    this.deadlineTimer = setTimeout(() => this.expireCalls(), Math.max(0, at - Date.now()));
  }

  private expireCalls(): void {
    this.deadlineTimer = undefined;
    this.deadlineTimerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const [id, at] of this.deadlines ?? []) {
      if (at <= now) this.failCall(id, ErrorCodes.TIMEOUT, 'request timed out');
      else if (at < next) next = at;
    }
    if (next !== Infinity && !this.closedWith) this.armDeadlineTimer(next);
  }

  /** Settles a pending call with an error of ours, through the library's matching. */
  private failCall(id: number, code: number, message: string, data?: unknown): void {
    this.deadlines?.delete(id);
    this.client.receive(createJSONRPCErrorResponse(id, code, message, data));
  }

  // ---- writing ----

  private writable(): boolean {
    return !this.stream.destroyed && !this.stream.writableEnded;
  }

  /** @internal The library's client sends every request of `call` through here. */
  [SEND_REQUEST](request: JSONRPCRequest): Promise<void> {
    const id = request.id as number;
    if (this.closedWith || !this.writable()) {
      this.failCall(id, ErrorCodes.CONNECTION_CLOSED, 'connection closed');
      return RESOLVED;
    }
    let frame: EncodedFrame;
    try {
      frame = encodeFrameChunks(request, this.options.maxFrameBytes);
    } catch (e) {
      // Nothing was sent; the call fails at once with a stable code.
      const err = encodeFailure(e);
      this.failCall(id, err.rpcCode, err.message, err.data);
      return RESOLVED;
    }
    return this.writeFrame(frame) ? RESOLVED : this.drained();
  }

  /** Writes a reply (or a batch of them). One too large for a frame is replaced by an error reply. */
  private reply(response: JSONRPCResponse | JSONRPCResponse[]): void {
    if (this.closedWith || !this.writable()) return;
    let frame: EncodedFrame | undefined;
    try {
      frame = encodeFrameChunks(response, this.options.maxFrameBytes);
    } catch (e) {
      let err = encodeFailure(e);
      if (err.rpcCode !== ErrorCodes.FRAME_TOO_LARGE) {
        this.logger?.error({ peer: this.remote.name, err: e }, 'reply cannot be encoded');
        err = new RpcCallError('internal error', ErrorCodes.INTERNAL_ERROR);
      }
      const replace = (r: JSONRPCResponse): JSONRPCResponse => (r.error ? r : createJSONRPCErrorResponse(r.id, err.rpcCode, err.message, err.data));
      try {
        frame = encodeFrameChunks(Array.isArray(response) ? response.map(replace) : replace(response), this.options.maxFrameBytes);
      } catch {
        this.logger?.error({ peer: this.remote.name }, 'error reply cannot be encoded either; dropped');
        return;
      }
    }
    this.writeFrame(frame);
  }

  private writeFrame(frame: EncodedFrame): boolean {
    this.sentSinceTick = true;
    if (!Array.isArray(frame)) return this.stream.write(frame);
    // A frame in pieces (large binary left in place): corked, so the socket gathers them in one writev.
    this.stream.cork();
    let ok = true;
    for (const piece of frame) ok = this.stream.write(piece);
    this.stream.uncork();
    return ok;
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private flushDrainWaiters(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }

  // ---- reading ----

  /** @internal Bytes from the stream. */
  [ON_DATA](chunk: Buffer): void {
    this.receivedSinceTick = true;
    let bodies: Buffer[];
    try {
      bodies = this.decoder.push(chunk);
    } catch (e) {
      // An oversized frame: nothing of it is buffered; the connection cannot resync, so it ends.
      this.logger?.warn({ peer: this.remote.name, err: (e as Error).message }, 'closing connection: bad frame');
      this.destroy(e as Error);
      return;
    }
    if (bodies.length === 0) return;
    for (const body of bodies) this.backlog.push(body);
    this.pump();
  }

  /**
   * Handles waiting frames while fewer than maxInFlight requests are being handled, then stops or
   * restarts reading to match: one read may hold many frames, and those past the limit wait here,
   * while the socket is paused so that TCP pushes back on the sender.
   */
  private pump(): void {
    const max = this.options.maxInFlight;
    while (this.inFlight < max && !this.closedWith) {
      if (this.batch) {
        this.dispatchBatchItem(this.batch);
        continue;
      }
      if (this.backlogHead === this.backlog.length) break;
      const body = this.backlog[this.backlogHead]!;
      this.backlog[this.backlogHead++] = undefined;
      this.onFrame(body);
    }
    if (this.closedWith) return;
    if (this.backlogHead === this.backlog.length && this.backlogHead > 0) {
      this.backlog.length = 0;
      this.backlogHead = 0;
    }
    const waiting = this.batch !== undefined || this.backlogHead < this.backlog.length;
    if (!this.paused) {
      if (waiting || this.inFlight >= max) {
        this.paused = true;
        this.stream.pause();
      }
    } else if (!waiting && this.inFlight < max / 2) {
      this.paused = false;
      // The dead-peer clock starts again from now: what the peer sent meanwhile is about to be read.
      this.lastReceived = Date.now();
      this.stream.resume();
    }
    if (this.remoteEnded && !waiting && this.inFlight === 0 && this.writable()) {
      // Every request the peer sent before its half-close is answered: end our side too.
      this.stream.end();
    }
  }

  private onFrame(body: Buffer): void {
    let msg: unknown;
    try {
      msg = decodeBody(body);
    } catch (e) {
      this.protocolError(null, ErrorCodes.PARSE_ERROR, isBuilderError(e) ? e.message : 'parse error');
      return;
    }
    if (Array.isArray(msg)) {
      this.onBatch(msg);
      return;
    }
    if (!this.isValidShape(msg)) {
      const id = typeof msg === 'object' && msg !== null && isId((msg as RawMessage).id) ? ((msg as RawMessage).id as JSONRPCID) : null;
      this.protocolError(id, ErrorCodes.INVALID_REQUEST, 'not a JSON-RPC 2.0 message');
      return;
    }
    if (typeof (msg as RawMessage).method === 'string') this.dispatch(msg as JSONRPCRequest, undefined);
    else this.client.receive(msg as JSONRPCResponse);
  }

  private onBatch(msgs: unknown[]): void {
    if (msgs.length === 0 || msgs.length > this.options.maxBatch) {
      this.protocolError(null, ErrorCodes.INVALID_REQUEST, `batch must hold 1 to ${this.options.maxBatch} messages`);
      return;
    }
    if (!msgs.every((m) => this.isValidShape(m))) {
      this.protocolError(null, ErrorCodes.INVALID_REQUEST, 'invalid JSON-RPC message in batch');
      return;
    }
    const requests = msgs.filter((m) => typeof (m as RawMessage).method === 'string').length;
    if (requests === 0) {
      this.client.receive(msgs as JSONRPCResponse[]);
      return;
    }
    if (requests !== msgs.length) {
      this.protocolError(null, ErrorCodes.INVALID_REQUEST, 'a batch must hold only requests or only responses');
      return;
    }
    // pump hands its requests to the server one by one, each counted against maxInFlight.
    this.batch = { items: msgs as JSONRPCRequest[], next: 0, outstanding: 0, replies: [] };
  }

  private dispatchBatchItem(b: BatchState): void {
    const request = b.items[b.next++]!;
    if (b.next === b.items.length) this.batch = undefined;
    this.dispatch(request, b);
  }

  /** Hands one request (or notification) to its method table's server, which runs its handler. */
  private dispatch(request: JSONRPCRequest, batch: BatchState | undefined): void {
    this.inFlight++;
    if (batch) batch.outstanding++;
    const table = this.own !== undefined && this.own.serves(request.method) ? this.own : this.methods;
    void table.receive(request, this.ctx).then(
      (response) => this.onServed(response, batch),
      (e: unknown) => {
        this.logger?.error({ peer: this.remote.name, err: e }, 'dispatch failed');
        this.onServed(request.id === undefined ? null : createJSONRPCErrorResponse(request.id, ErrorCodes.INTERNAL_ERROR, 'internal error'), batch);
      },
    );
  }

  private onServed(response: JSONRPCResponse | null, batch: BatchState | undefined): void {
    this.inFlight--;
    if (batch) {
      if (response) batch.replies.push(response);
      batch.outstanding--;
      // The whole batch is answered at once, as one array (nothing for a batch of notifications).
      if (batch.outstanding === 0 && batch.next === batch.items.length && batch.replies.length > 0) this.reply(batch.replies);
    } else if (response) {
      this.reply(response);
    }
    this.pump();
  }

  private isValidShape(m: unknown): boolean {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
    const r = m as RawMessage;
    if (r.jsonrpc !== '2.0') return false;
    if (typeof r.method === 'string') return r.id === undefined || isId(r.id);
    if (r.method !== undefined) return false;
    return isId(r.id) && ('result' in r || (typeof r.error === 'object' && r.error !== null));
  }

  private protocolError(id: JSONRPCID, code: number, message: string): void {
    this.protocolErrors++;
    this.logger?.debug({ peer: this.remote.name, code, message }, 'protocol error from peer');
    this.reply(createJSONRPCErrorResponse(id, code, message));
    if (this.protocolErrors >= this.options.maxProtocolErrors) {
      this.logger?.warn({ peer: this.remote.name }, 'too many malformed messages; closing');
      setImmediate(() => this.destroy(new BuilderError('BUILDER_ERR_FRAME_DECODE', 'too many malformed messages')));
    }
  }

  /** The error of a response (the remote's, or one this end made: timeout, closed, too large). */
  private toCallError(error: JSONRPCError): RpcCallError {
    const code: unknown = error.code;
    const message = typeof error.message === 'string' ? error.message : 'error';
    // Code 0 is json-rpc-2.0's own, for a request it could not send or one pending at close.
    if (code === 0 || typeof code !== 'number') {
      return this.closedWith ? new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED) : new RpcCallError(message, ErrorCodes.INTERNAL_ERROR);
    }
    return new RpcCallError(message, code, error.data);
  }
}

/** The call error for a value that cannot be sent: too large for a frame, or not encodable. */
function encodeFailure(e: unknown): RpcCallError {
  if (isBuilderError(e, 'BUILDER_ERR_FRAME_TOO_LARGE')) return new RpcCallError(e.message, ErrorCodes.FRAME_TOO_LARGE, { code: e.code });
  return new RpcCallError('message cannot be encoded as msgpack', ErrorCodes.INVALID_PARAMS);
}
