/**
 * Where the Builder stack's time goes, without TLS, sockets or a second process: one round trip
 * at a time (and 64 at a time) over an in-memory duplex pair, in three layers.
 *
 *   raw      4-byte length + bytes, echoed (the framing alone)
 *   msgpack  the same plus encodeFrameParts/decodeBody (msgpack and the plain-data check) of a
 *            JSON-RPC-shaped request and response, matched by hand
 *   rpcpeer  RpcPeer on both ends: json-rpc-2.0, zod params/result parsing, catalogue, one
 *            deadline timer for all pending calls
 *   lean     LeanPeer (lean-peer.ts), the PROTOTYPE that does without json-rpc-2.0: the same
 *            frames and checks as RpcPeer, its own id map and dispatch
 *
 *   npm run build && node dist/bench/protocol/overhead.js [--duration-ms 2000] [--runs 3] [--layers raw,msgpack,rpcpeer,lean]
 *     [--payload-bytes 16]
 *
 * The differences between layers are the cost each layer adds per round trip (client + server).
 */
import { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { FrameDecoder, RpcPeer, decodeBody, encodeFrameParts } from '../../protocol/index.js';
import { LeanPeer } from './lean-peer.js';
import { median } from './measure.js';

const { values: args } = parseArgs({
  options: {
    'duration-ms': { type: 'string', default: '2000' },
    runs: { type: 'string', default: '3' },
    layers: { type: 'string', default: 'raw,msgpack,rpcpeer,lean' },
    'payload-bytes': { type: 'string', default: '16' },
  },
});
const durationMs = Number(args['duration-ms']);
const runs = Number(args.runs);

/** Two duplexes wired to each other; a write on one is readable on the other. */
function duplexPair(): [Duplex, Duplex] {
  const sides: Duplex[] = [];
  const make = (other: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        other().push(chunk);
        cb();
      },
      final(cb) {
        other().push(null);
        cb();
      },
    });
  sides.push(make(() => sides[1]!), make(() => sides[0]!));
  return [sides[0]!, sides[1]!];
}

type Call = (seq: number) => Promise<void>;

function frame(body: Buffer): Buffer {
  const h = Buffer.allocUnsafe(4);
  h.writeUInt32BE(body.length, 0);
  return Buffer.concat([h, body]);
}

/** A FIFO client over a framed duplex: each answer settles the oldest call. */
function fifoClient(stream: Duplex, onBody: (body: Buffer) => void): Array<() => void> {
  const pending: Array<() => void> = [];
  const dec = new FrameDecoder();
  stream.on('data', (c: Buffer) => {
    for (const b of dec.push(c)) {
      onBody(b);
      pending.shift()?.();
    }
  });
  return pending;
}

function rawLayer(payload: Buffer): Call {
  const [a, b] = duplexPair();
  const dec = new FrameDecoder();
  b.on('data', (c: Buffer) => {
    for (const body of dec.push(c)) b.write(frame(body));
  });
  const pending = fifoClient(a, () => undefined);
  return () =>
    new Promise<void>((resolve) => {
      pending.push(resolve);
      a.write(frame(payload));
    });
}

function msgpackLayer(payload: Buffer): Call {
  const [a, b] = duplexPair();
  const dec = new FrameDecoder();
  b.on('data', (c: Buffer) => {
    for (const body of dec.push(c)) {
      const req = decodeBody(body) as { id: number; params: unknown };
      b.write(Buffer.concat(encodeFrameParts({ jsonrpc: '2.0', id: req.id, result: req.params })));
    }
  });
  const pending = fifoClient(a, (body) => decodeBody(body));
  return (seq) =>
    new Promise<void>((resolve) => {
      pending.push(resolve);
      a.write(Buffer.concat(encodeFrameParts({ jsonrpc: '2.0', id: seq, method: 'peer.echo', params: { data: payload, seq } })));
    });
}

function rpcPeerLayer(payload: Buffer): Call {
  const [a, b] = duplexPair();
  const server = new RpcPeer(b, { role: 'client', name: 'bench' });
  server.handle('peer.echo', (p) => p);
  const client = new RpcPeer(a, { role: 'master', name: 'master' });
  return async (seq) => {
    await client.call('peer.echo', { data: payload as Uint8Array<ArrayBuffer>, seq });
  };
}

function leanLayer(payload: Buffer): Call {
  const [a, b] = duplexPair();
  new LeanPeer(b, 'client').handle('peer.echo', (p) => p);
  const client = new LeanPeer(a, 'master');
  return async (seq) => {
    await client.call('peer.echo', { data: payload as Uint8Array<ArrayBuffer>, seq });
  };
}

async function rate(call: Call, inFlight: number): Promise<number> {
  let n = 0;
  let seq = 0;
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < deadline) {
        await call(++seq);
        n++;
      }
    }),
  );
  return n / ((performance.now() - t0) / 1000);
}

const payload = Buffer.alloc(Number(args['payload-bytes']), 7);
const layers: Array<[string, Call]> = [
  ['raw', rawLayer(payload)],
  ['msgpack', msgpackLayer(payload)],
  ['rpcpeer', rpcPeerLayer(payload)],
  ['lean', leanLayer(payload)],
].filter(([name]) => args.layers.split(',').includes(name as string)) as Array<[string, Call]>;
process.stdout.write(`| Layer (${payload.length} B, in-memory, one process) | 1 in flight: us per round trip | 64 in flight: us per call |\n|---|---:|---:|\n`);
for (const [name, call] of layers) {
  await rate(call, 1); // warm-up
  const one: number[] = [];
  const many: number[] = [];
  for (let r = 0; r < runs; r++) {
    one.push(1e6 / (await rate(call, 1)));
    many.push(1e6 / (await rate(call, 64)));
  }
  process.stdout.write(`| ${name} | ${median(one).toFixed(1)} | ${median(many).toFixed(1)} |\n`);
}
process.exit(0);
