import { gunzipSync } from 'node:zlib';
import { xz } from '@napi-rs/lzma';
import { Decompress as ZstdDecompress } from 'fzstd';
import { BuilderError } from '../protocol/errors.js';

/**
 * Bounded decompression of the small members we read (control.tar.*). Each decoder refuses to
 * produce more than `max` bytes, so a compression bomb in a package costs nothing.
 */
export type Codec = 'none' | 'gz' | 'xz' | 'zst';

const tooBig = (max: number): BuilderError =>
  new BuilderError('BUILDER_ERR_INVALID_INPUT', `decompressed member exceeds the limit of ${max} bytes`);

function corrupt(codec: Codec, cause: unknown): BuilderError {
  return new BuilderError('BUILDER_ERR_INVALID_INPUT', `corrupt ${codec} data: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
}

/** Reads an xz multibyte integer (varint) at `pos`; returns [value, nextPos]. */
function readVli(buf: Uint8Array, pos: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let k = 0; k < 9; k++) {
    const b = buf[pos + k];
    if (b === undefined) throw new Error('truncated xz index');
    v += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return [v, pos + k + 1];
  }
  throw new Error('bad xz varint');
}

/**
 * The uncompressed size an .xz file declares, from its index (read backwards from the stream
 * footer). liblzma checks the index while decoding, so a lying index fails decompression.
 */
export function xzDeclaredSize(buf: Uint8Array): number {
  let end = buf.length;
  while (end >= 4 && buf[end - 1] === 0 && buf[end - 2] === 0 && buf[end - 3] === 0 && buf[end - 4] === 0) end -= 4; // stream padding
  let total = 0;
  while (end > 0) {
    if (end < 24) throw new Error('truncated xz stream');
    if (buf[end - 2] !== 0x59 || buf[end - 1] !== 0x5a) throw new Error('bad xz footer magic');
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const backward = (dv.getUint32(end - 8, true) + 1) * 4;
    const indexStart = end - 12 - backward;
    if (indexStart < 12 || buf[indexStart] !== 0) throw new Error('bad xz index');
    let [records, pos] = readVli(buf, indexStart + 1);
    if (records > 1_000_000) throw new Error('too many xz blocks');
    let blocksSize = 0;
    while (records-- > 0) {
      const [unpadded, p1] = readVli(buf, pos);
      const [size, p2] = readVli(buf, p1);
      blocksSize += Math.ceil(unpadded / 4) * 4;
      total += size;
      pos = p2;
    }
    end = indexStart - blocksSize - 12;
    if (end < 0) throw new Error('bad xz index');
    while (end >= 4 && buf[end - 1] === 0 && buf[end - 2] === 0 && buf[end - 3] === 0 && buf[end - 4] === 0) end -= 4;
  }
  return total;
}

/** Decompresses `data` with `codec`, refusing output larger than `max` bytes. */
export function decompressBounded(codec: Codec, data: Uint8Array, max: number): Buffer {
  if (codec === 'none') {
    if (data.length > max) throw tooBig(max);
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
  if (codec === 'gz') {
    try {
      return gunzipSync(data, { maxOutputLength: max });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooBig(max);
      throw corrupt(codec, e);
    }
  }
  if (codec === 'xz') {
    let declared: number;
    try {
      declared = xzDeclaredSize(data);
    } catch (e) {
      throw corrupt(codec, e);
    }
    if (declared > max) throw tooBig(max);
    try {
      const out = xz.decompressSync(data);
      if (out.length > max) throw tooBig(max);
      return out;
    } catch (e) {
      if (e instanceof BuilderError) throw e;
      throw corrupt(codec, e);
    }
  }
  const parts: Uint8Array[] = [];
  let total = 0;
  let overflow = false;
  const d = new ZstdDecompress((chunk) => {
    total += chunk.length;
    if (total > max) overflow = true;
    else parts.push(chunk);
  });
  try {
    // Feed in slices so an overflow stops the work early.
    const step = 64 * 1024;
    for (let off = 0; off < data.length && !overflow; off += step) {
      const end = Math.min(off + step, data.length);
      d.push(data.subarray(off, end), end === data.length);
    }
  } catch (e) {
    throw corrupt(codec, e);
  }
  if (overflow) throw tooBig(max);
  return Buffer.concat(parts);
}
