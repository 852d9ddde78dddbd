import { Packr, Unpackr } from 'msgpackr';
import { BuilderError } from './errors.js';
import { assertPlainData } from './plain-data.js';

/** Bytes in the length prefix. */
export const FRAME_HEADER_BYTES = 4;
/** Default maximum frame body: 16 MiB (room for a 1 MiB file chunk many times over). */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

// One packer for the process: records off (plain maps only), binary as bin.
const packr = new Packr({ useRecords: false, moreTypes: false, encodeUndefinedAsNil: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, moreTypes: false, int64AsType: 'number' });

/** Encodes one value as a frame: 4-byte big-endian length, then msgpack. Returns [header, body]. */
export function encodeFrameParts(value: unknown, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): [Buffer, Buffer] {
  const body = packr.pack(value);
  if (body.length > maxFrameBytes) {
    throw new BuilderError('BUILDER_ERR_FRAME_TOO_LARGE', `outgoing frame of ${body.length} bytes exceeds the limit of ${maxFrameBytes}`);
  }
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  return [header, body];
}

/** Encodes one value as a single frame buffer. */
export function encodeFrame(value: unknown, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const [h, b] = encodeFrameParts(value, maxFrameBytes);
  return Buffer.concat([h, b]);
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
