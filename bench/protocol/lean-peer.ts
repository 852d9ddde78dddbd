/**
 * PROTOTYPE, kept as a yardstick (Builder does not use this): the work of RpcPeer's hot path
 * without json-rpc-2.0, to measure what the library still costs. RpcPeer keeps json-rpc-2.0 (the
 * design contract) and has since taken over idea 2 below and the overhead around the library;
 * run `--stacks builder,lean,...` to compare them. It keeps what matters for
 * safety and the contract: the same frames (FrameDecoder, encodeFrameParts/decodeBody with the
 * plain-data check), the JSON-RPC 2.0 message shape, the catalogue's role check and zod parsing
 * of params and results. It changes two things:
 *   1. pending calls live in a Map keyed by id, and a handler that returns a value is answered
 *      synchronously (no ES5 __awaiter/__generator chain per message);
 *   2. call deadlines are kept in the Map and would be swept by the 1 s tick RpcPeer already has,
 *      instead of one setTimeout/clearTimeout per call.
 * (A third idea, corking every write of a tick and uncorking on nextTick, was tried and measured
 * no gain at 64 in flight and a loss at 1: Node already gathers queued writes into one writev.)
 * Left out, because the benchmark does not exercise them: batches, notifications, heartbeats,
 * in-flight limits, async handlers, error mapping.
 */
import type { Duplex } from 'node:stream';
import { FrameDecoder, catalogue, decodeBody, encodeFrameParts, type MethodName, type ParamsOf, type PeerRole, type ResultOf } from '../../protocol/index.js';

interface Msg {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: unknown;
  result?: unknown;
  error?: unknown;
}

interface Pending {
  method: MethodName;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  deadline: number;
}

export class LeanPeer {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<string, (p: unknown) => unknown>();
  private nextId = 0;

  constructor(
    private readonly stream: Duplex,
    private readonly remoteRole: PeerRole,
    private readonly requestTimeoutMs = 30_000,
  ) {
    stream.on('data', (c: Buffer) => this.onData(c));
    stream.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('connection closed'));
      this.pending.clear();
    });
  }

  handle<M extends MethodName>(method: M, h: (p: ParamsOf<M>) => ResultOf<M>): this {
    this.handlers.set(method, h as (p: unknown) => unknown);
    return this;
  }

  call<M extends MethodName>(method: M, params: ParamsOf<M>): Promise<ResultOf<M>> {
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, deadline: Date.now() + this.requestTimeoutMs });
      this.send({ jsonrpc: '2.0', id, method, params });
    });
  }

  close(): void {
    this.stream.end();
    this.stream.destroy();
  }

  /** As RpcPeer.write: small frames as one buffer, large ones as header + body under cork. */
  private send(value: unknown): void {
    const [header, body] = encodeFrameParts(value);
    if (body.length < 64 * 1024) {
      this.stream.write(Buffer.concat([header, body], header.length + body.length));
      return;
    }
    this.stream.cork();
    this.stream.write(header);
    this.stream.write(body);
    this.stream.uncork();
  }

  private onData(chunk: Buffer): void {
    for (const body of this.decoder.push(chunk)) {
      const m = decodeBody(body) as Msg;
      if (typeof m !== 'object' || m === null || m.jsonrpc !== '2.0') throw new Error('not a JSON-RPC 2.0 message');
      if (typeof m.method === 'string') this.onRequest(m);
      else this.onResponse(m);
    }
  }

  private onRequest(m: Msg): void {
    const id = m.id;
    const method = m.method as MethodName;
    const d = Object.hasOwn(catalogue, method) ? catalogue[method] : undefined;
    const h = this.handlers.get(method);
    if (!d || !h) return this.reply(id, undefined, { code: -32601, message: 'method not found' });
    if (!d.roles.includes(this.remoteRole)) return this.reply(id, undefined, { code: -32003, message: 'forbidden' });
    const parsed = d.params.safeParse(m.params ?? {});
    if (!parsed.success) return this.reply(id, undefined, { code: -32602, message: 'invalid params' });
    this.reply(id, h(parsed.data), undefined);
  }

  private reply(id: unknown, result: unknown, error: { code: number; message: string } | undefined): void {
    if (typeof id !== 'number' && typeof id !== 'string') return; // a notification
    this.send(error ? { jsonrpc: '2.0', id, error } : { jsonrpc: '2.0', id, result });
  }

  private onResponse(m: Msg): void {
    if (typeof m.id !== 'number') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.error !== undefined) return p.reject(new Error('remote error'));
    const r = catalogue[p.method].result.safeParse(m.result);
    if (r.success) p.resolve(r.data);
    else p.reject(new Error(`invalid result for ${p.method}`));
  }
}
