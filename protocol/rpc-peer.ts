import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  JSONRPCClient,
  JSONRPCErrorException,
  JSONRPCServer,
  JSONRPCServerAndClient,
  createJSONRPCErrorResponse,
  type JSONRPCID,
} from 'json-rpc-2.0';
import type { Logger } from 'pino';
import { catalogue, type MethodName, type ParamsOf, type PeerRole, type ResultOf } from './catalogue.js';
import { BuilderError, ErrorCodes, isBuilderError } from './errors.js';
import { decodeBody, encodeFrameParts, FrameDecoder, DEFAULT_MAX_FRAME_BYTES } from './frame-codec.js';

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

/** Passed to every handler. */
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

/**
 * One full-duplex JSON-RPC 2.0 connection over msgpack frames, on any duplex stream (TLS in
 * production, in-memory pairs in tests). Both ends serve the catalogue's methods for their side
 * and call the other's, through json-rpc-2.0's JSONRPCServerAndClient.
 */
export class RpcPeer extends EventEmitter<RpcPeerEvents> {
  readonly options: CompiledRpcPeerOptions;
  readonly remote: RemoteIdentity;
  private readonly stream: Duplex;
  private readonly log: Logger | undefined;
  private readonly decoder: FrameDecoder;
  private readonly sac: JSONRPCServerAndClient<CallContext, void>;
  private readonly served = new Set<string>();
  private inFlight = 0;
  private paused = false;
  private protocolErrors = 0;
  private lastReceived = Date.now();
  private lastSent = Date.now();
  private drainWaiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private closedWith: { err: Error | undefined } | undefined;
  private readonly ctx: CallContext;

  constructor(stream: Duplex, remote: RemoteIdentity, opts: RpcPeerOptions & { logger?: Logger } = {}) {
    super();
    this.options = compileRpcPeerOptions(opts);
    this.stream = stream;
    this.remote = remote;
    this.log = opts.logger;
    this.decoder = new FrameDecoder({ maxFrameBytes: this.options.maxFrameBytes });
    this.ctx = { peer: this, remote };
    const server = new JSONRPCServer<CallContext>({ errorListener: () => undefined });
    server.mapErrorToJSONRPCErrorResponse = (id, error) => this.mapError(id, error);
    const client = new JSONRPCClient<void>((payload) => this.write(payload));
    this.sac = new JSONRPCServerAndClient(server, client, { errorListener: () => undefined });
    // The heartbeat is answered by reading it: receiving anything proves liveness.
    this.handle('peer.heartbeat', () => null);

    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('drain', () => this.flushDrainWaiters());
    stream.on('error', (err) => this.finish(err));
    stream.on('close', () => this.finish(undefined));
    stream.on('end', () => {
      // The remote half-closed: nothing more will arrive; finish our side.
      this.stream.end();
    });
    this.timer = setInterval(() => this.tick(), Math.min(this.options.heartbeatIntervalMs, 1000));
    this.timer.unref();
  }

  /** True once the connection is closed. */
  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Serves a catalogue method on this end. Params are validated and the caller's role checked first. */
  handle<M extends MethodName>(method: M, handler: Handler<M>): this {
    const d = catalogue[method];
    this.served.add(method);
    this.sac.addMethod(method, async (params: unknown, ctx: CallContext) => {
      // Security: the role comes from the verified certificate, never from the message.
      if (!d.roles.includes(ctx.remote.role)) {
        throw new JSONRPCErrorException(`role ${ctx.remote.role} may not call ${method}`, ErrorCodes.FORBIDDEN, {
          code: 'BUILDER_ERR_FORBIDDEN',
        });
      }
      const parsed = d.params.safeParse(params ?? {});
      if (!parsed.success) {
        const first = parsed.error.issues[0];
        const where = first && first.path.length > 0 ? first.path.join('.') + ': ' : '';
        throw new JSONRPCErrorException(`invalid params: ${where}${first?.message ?? 'schema mismatch'}`, ErrorCodes.INVALID_PARAMS);
      }
      return handler(parsed.data as ParamsOf<M>, ctx);
    });
    return this;
  }

  /** Calls a method on the remote end and returns its validated result. */
  async call<M extends MethodName>(method: M, params: ParamsOf<M>, opts: { timeoutMs?: number } = {}): Promise<ResultOf<M>> {
    if (this.closedWith) throw new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED);
    let result: unknown;
    try {
      result = await this.sac.timeout(opts.timeoutMs ?? this.options.requestTimeoutMs).request(method, params);
    } catch (e) {
      throw this.toCallError(e);
    }
    const parsed = catalogue[method].result.safeParse(result);
    if (!parsed.success) throw new RpcCallError(`peer sent an invalid result for ${method}`, ErrorCodes.INVALID_REQUEST);
    return parsed.data as ResultOf<M>;
  }

  /** Sends a notification; resolves once written (waits for 'drain' under backpressure). */
  notify<M extends MethodName>(method: M, params: ParamsOf<M>): Promise<void> {
    if (this.closedWith) return Promise.reject(new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED));
    return this.write({ jsonrpc: '2.0', method, params });
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

  private finish(err: Error | undefined): void {
    if (this.closedWith) return;
    this.closedWith = { err };
    if (this.timer) clearInterval(this.timer);
    this.sac.rejectAllPendingRequests('connection closed');
    this.flushDrainWaiters();
    this.emit('close', err);
  }

  private tick(): void {
    const now = Date.now();
    if (now - this.lastReceived > this.options.deadAfterMs) {
      this.log?.warn({ peer: this.remote.name }, 'peer missed its heartbeats; closing');
      this.destroy(new BuilderError('BUILDER_ERR_HEARTBEAT', `no message from ${this.remote.name} for ${now - this.lastReceived} ms`));
      return;
    }
    if (now - this.lastSent >= this.options.heartbeatIntervalMs) {
      this.notify('peer.heartbeat', { t: now }).catch(() => undefined);
    }
  }

  private write(value: unknown): Promise<void> {
    if (this.closedWith || this.stream.destroyed) return Promise.reject(new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED));
    const [header, body] = encodeFrameParts(value, this.options.maxFrameBytes);
    let ok: boolean;
    if (body.length < this.options.coalesceBelowBytes) {
      ok = this.stream.write(Buffer.concat([header, body], header.length + body.length));
    } else {
      // Large bodies (file chunks) go as two writes so they are not copied.
      this.stream.cork();
      this.stream.write(header);
      ok = this.stream.write(body);
      this.stream.uncork();
    }
    this.lastSent = Date.now();
    if (ok) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private flushDrainWaiters(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }

  private onData(chunk: Buffer): void {
    this.lastReceived = Date.now();
    let bodies: Buffer[];
    try {
      bodies = this.decoder.push(chunk);
    } catch (e) {
      // An oversized frame: nothing of it is buffered; the connection cannot resync, so it ends.
      this.log?.warn({ peer: this.remote.name, err: (e as Error).message }, 'closing connection: bad frame');
      this.destroy(e as Error);
      return;
    }
    for (const body of bodies) {
      if (this.closedWith) return;
      this.onFrame(body);
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
      if (msg.length === 0 || msg.length > this.options.maxBatch) {
        this.protocolError(null, ErrorCodes.INVALID_REQUEST, `batch must hold 1 to ${this.options.maxBatch} messages`);
        return;
      }
      if (!msg.every((m) => this.isValidShape(m))) {
        this.protocolError(null, ErrorCodes.INVALID_REQUEST, 'invalid JSON-RPC message in batch');
        return;
      }
    } else if (!this.isValidShape(msg)) {
      const id = typeof msg === 'object' && msg !== null && isId((msg as RawMessage).id) ? ((msg as RawMessage).id as JSONRPCID) : null;
      this.protocolError(id, ErrorCodes.INVALID_REQUEST, 'not a JSON-RPC 2.0 message');
      return;
    }
    const isRequest = Array.isArray(msg) || typeof (msg as RawMessage).method === 'string';
    if (!isRequest) {
      this.sac.receiveAndSend(msg as never, this.ctx).catch(() => undefined);
      return;
    }
    this.inFlight++;
    if (this.inFlight >= this.options.maxInFlight && !this.paused) {
      // Backpressure: stop reading until handlers catch up.
      this.paused = true;
      this.stream.pause();
    }
    this.sac
      .receiveAndSend(msg as never, this.ctx)
      .catch((e: unknown) => this.log?.debug({ peer: this.remote.name, err: (e as Error).message }, 'reply not sent'))
      .finally(() => {
        this.inFlight--;
        if (this.paused && this.inFlight < this.options.maxInFlight / 2) {
          this.paused = false;
          this.stream.resume();
        }
      });
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
    this.log?.debug({ peer: this.remote.name, code, message }, 'protocol error from peer');
    this.write(createJSONRPCErrorResponse(id, code, message)).catch(() => undefined);
    if (this.protocolErrors >= this.options.maxProtocolErrors) {
      this.log?.warn({ peer: this.remote.name }, 'too many malformed messages; closing');
      setImmediate(() => this.destroy(new BuilderError('BUILDER_ERR_FRAME_DECODE', 'too many malformed messages')));
    }
  }

  /** Error replies carry only stable codes and safe messages: never internal text. */
  private mapError(id: JSONRPCID, error: unknown) {
    if (error instanceof JSONRPCErrorException) return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
    if (isBuilderError(error) && error.expose) {
      return createJSONRPCErrorResponse(id, error.wireCode, error.message, { code: error.code, hint: error.hint });
    }
    this.log?.error({ peer: this.remote.name, err: error }, 'handler failed');
    return createJSONRPCErrorResponse(id, ErrorCodes.INTERNAL_ERROR, 'internal error');
  }

  private toCallError(e: unknown): RpcCallError {
    if (e instanceof RpcCallError) return e;
    // Pending calls are rejected by the library with code 0 when the connection closes.
    if (this.closedWith && (!(e instanceof JSONRPCErrorException) || e.code === 0) && !(e instanceof JSONRPCErrorException && e.message === 'Request timeout')) {
      return new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED);
    }
    if (e instanceof JSONRPCErrorException) {
      if (e.code === 0 && e.message === 'Request timeout') return new RpcCallError('request timed out', ErrorCodes.TIMEOUT);
      return new RpcCallError(e.message, e.code, e.data);
    }
    const msg = e instanceof Error ? e.message : String(e);
    if (this.closedWith) return new RpcCallError('connection closed', ErrorCodes.CONNECTION_CLOSED);
    return new RpcCallError(msg, ErrorCodes.INTERNAL_ERROR);
  }

  /** Whether this end serves `method`. */
  serves(method: string): boolean {
    return this.served.has(method);
  }
}
