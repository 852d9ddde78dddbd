import { randomBytes } from 'node:crypto';
import { Packr, RESERVE_START_SPACE, Unpackr } from 'msgpackr';
import { BuilderError } from './errors.js';
import { assertPlainData } from './plain-data.js';

/** Bytes in the length prefix. */
export const FRAME_HEADER_BYTES = 4;
/** Default maximum frame body: 16 MiB (room for a 1 MiB file chunk many times over). */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/**
 * Binary values at least this long are not copied into the msgpack body: the frame is written as
 * the msgpack around them plus the original bytes (see encodeFrameChunks).
 */
export const LARGE_BIN_BYTES = 64 * 1024;

// One packer for the process: records off (plain maps only), binary as bin.
const packr = new Packr({ useRecords: false, moreTypes: false, encodeUndefinedAsNil: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, moreTypes: false, int64AsType: 'number' });

/** One encoded frame: a single buffer (header and body), or the pieces to write in order. */
export type EncodedFrame = Buffer | Buffer[];

function tooLarge(bytes: number, max: number): BuilderError {
  return new BuilderError('BUILDER_ERR_FRAME_TOO_LARGE', `outgoing frame of ${bytes} bytes exceeds the limit of ${max}`);
}

/** Packs `value` with 4 bytes reserved in front of it and fills them with the body length. */
function packWithHeader(value: unknown, maxFrameBytes: number): Buffer {
  const frame = packr.pack(value, RESERVE_START_SPACE | FRAME_HEADER_BYTES);
  const bodyBytes = frame.length - FRAME_HEADER_BYTES;
  if (bodyBytes > maxFrameBytes) throw tooLarge(bodyBytes, maxFrameBytes);
  frame.writeUInt32BE(bodyBytes, 0);
  return frame;
}

// Stand-ins for large binary values while the rest of the message is packed. Each is 16 bytes:
// 12 random bytes drawn once per process (no message can contain them by chance or by design,
// since no peer ever sees them) and a 4-byte index. msgpackr writes each as bin8 (0xc4 0x10 ...).
const MARK_SALT = randomBytes(12);
const MARK_BYTES = 16;
const MARK_ENCODED_BYTES = 2 + MARK_BYTES;
const marks: Buffer[] = [];
function mark(i: number): Buffer {
  let m = marks[i];
  if (!m) {
    m = Buffer.allocUnsafe(MARK_BYTES);
    MARK_SALT.copy(m, 0);
    m.writeUInt32BE(i, 12);
    marks[i] = m;
  }
  return m;
}

interface Swap {
  holder: Record<string, unknown> | unknown[];
  key: string | number;
  bytes: Uint8Array;
}

/** A frozen or read-only slot keeps its value (and msgpackr copies it as usual). */
function swappable(holder: object, key: string | number): boolean {
  return Object.getOwnPropertyDescriptor(holder, key)?.writable === true;
}

/** Large Uint8Arrays in the first levels of a message (where params and results keep their bytes). */
function findLargeBins(v: unknown, depth: number, out: Swap[]): void {
  if (depth > 4 || typeof v !== 'object' || v === null || v instanceof Uint8Array) return;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (x instanceof Uint8Array) {
        if (x.length >= LARGE_BIN_BYTES && swappable(v, i)) out.push({ holder: v, key: i, bytes: x });
      } else if (typeof x === 'object' && x !== null) findLargeBins(x, depth + 1, out);
    }
    return;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    const x = o[k];
    if (x instanceof Uint8Array) {
      if (x.length >= LARGE_BIN_BYTES && swappable(o, k)) out.push({ holder: o, key: k, bytes: x });
    } else if (typeof x === 'object' && x !== null) findLargeBins(x, depth + 1, out);
  }
}

/** msgpack bin32 header for `n` bytes. */
function bin32Header(n: number): Buffer {
  const h = Buffer.allocUnsafe(5);
  h[0] = 0xc6;
  h.writeUInt32BE(n, 1);
  return h;
}

/**
 * Encodes one value as a frame ready to write: 4-byte big-endian length, then msgpack.
 *
 * Small messages come back as one buffer (msgpackr packs straight after the reserved header, no
 * concatenation). A message holding binary values of LARGE_BIN_BYTES or more (file and log
 * chunks) comes back as pieces: the msgpack around each such value, the value's bin32 header and
 * the caller's own bytes, so a 1 MiB chunk is never copied before the socket takes it. The bytes
 * on the wire are a valid msgpack body either way. Throws BUILDER_ERR_FRAME_TOO_LARGE, having
 * produced nothing, when the body would exceed `maxFrameBytes`.
 */
export function encodeFrameChunks(value: unknown, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): EncodedFrame {
  const swaps: Swap[] = [];
  findLargeBins(value, 0, swaps);
  if (swaps.length === 0) return packWithHeader(value, maxFrameBytes);
  let bodyBytes = 0;
  for (const s of swaps) bodyBytes += s.bytes.length;
  if (bodyBytes > maxFrameBytes) throw tooLarge(bodyBytes, maxFrameBytes);
  // The stand-ins go in for the time of one synchronous pack and are always put back.
  let envelope: Buffer;
  try {
    swaps.forEach((s, i) => ((s.holder as Record<string | number, unknown>)[s.key] = mark(i)));
    envelope = packr.pack(value, RESERVE_START_SPACE | FRAME_HEADER_BYTES);
  } finally {
    for (const s of swaps) (s.holder as Record<string | number, unknown>)[s.key] = s.bytes;
  }
  const pieces: Buffer[] = [];
  let from = 0;
  for (let i = 0; i < swaps.length; i++) {
    const at = envelope.indexOf(mark(i), i === 0 ? FRAME_HEADER_BYTES : from);
    // Cannot happen (the stand-in is packed as bin8 of 16 bytes); stay correct anyway.
    if (at < 2 || envelope[at - 2] !== 0xc4 || envelope[at - 1] !== MARK_BYTES) return packWithHeader(value, maxFrameBytes);
    pieces.push(envelope.subarray(from, at - 2), bin32Header(swaps[i]!.bytes.length), asBuffer(swaps[i]!.bytes));
    from = at + MARK_BYTES;
  }
  pieces.push(envelope.subarray(from));
  bodyBytes = envelope.length - FRAME_HEADER_BYTES - swaps.length * MARK_ENCODED_BYTES;
  for (const s of swaps) bodyBytes += 5 + s.bytes.length;
  if (bodyBytes > maxFrameBytes) throw tooLarge(bodyBytes, maxFrameBytes);
  envelope.writeUInt32BE(bodyBytes, 0);
  return pieces;
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** Encodes one value as a frame: 4-byte big-endian length, then msgpack. Returns [header, body]. */
export function encodeFrameParts(value: unknown, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): [Buffer, Buffer] {
  const frame = encodeFrame(value, maxFrameBytes);
  return [frame.subarray(0, FRAME_HEADER_BYTES), frame.subarray(FRAME_HEADER_BYTES)];
}

/** Encodes one value as a single frame buffer. */
export function encodeFrame(value: unknown, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const f = encodeFrameChunks(value, maxFrameBytes);
  return Array.isArray(f) ? Buffer.concat(f) : f;
}

/** Decodes one msgpack body and checks that it is plain data. */
export function decodeBody(body: Buffer): unknown {
  let value: unknown;
  try {
    value = unpackr.unpack(body);
  } catch {
    throw new BuilderError('BUILDER_ERR_FRAME_DECODE', 'frame body is not valid msgpack');
  }
  assertPlainData(value);
  return value;
}

export interface FrameDecoderOptions {
  /** Largest body accepted; a longer declared length fails before any of it is buffered. Default 16 MiB. */
  maxFrameBytes?: number;
}

/**
 * Incremental frame reader: feed it chunks as they arrive, in any split; it returns the complete
 * frame bodies. A declared length over the limit throws as soon as the header is read, so an
 * oversized frame is never buffered.
 */
export class FrameDecoder {
  private readonly max: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1; // body length of the frame being read, -1 while reading the header

  constructor(opts: FrameDecoderOptions = {}) {
    this.max = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  /** Bytes held for an incomplete frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** Adds a chunk; returns the bodies of every frame it completes (zero or more). */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (chunk.length === 0) return out;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < FRAME_HEADER_BYTES) break;
        const len = this.peekHeader();
        if (len > this.max) {
          throw new BuilderError('BUILDER_ERR_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds the limit of ${this.max}`);
        }
        this.take(FRAME_HEADER_BYTES);
        this.need = len;
      }
      if (this.buffered < this.need) break;
      out.push(this.take(this.need));
      this.need = -1;
    }
    return out;
  }

  private peekHeader(): number {
    const first = this.chunks[0]!;
    if (first.length >= FRAME_HEADER_BYTES) return first.readUInt32BE(0);
    return Buffer.concat(this.chunks, FRAME_HEADER_BYTES).readUInt32BE(0);
  }

  /** Removes and returns the next n buffered bytes, copying only when they span chunks. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}
