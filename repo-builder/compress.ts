import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { crc32, gzip } from 'node:zlib';
import { promisify } from 'node:util';
import { BuilderError } from '../protocol/errors.js';
import { mapLimit } from './map-limit.js';

const gzipAsync = promisify(gzip);

/** Output codecs of the index writers. */
export type OutCodec = 'gz' | 'xz';

/** Compresses with gzip (one member). */
export async function gzipMember(data: Buffer, level: number): Promise<Buffer> {
  return gzipAsync(data, { level });
}

/**
 * Compresses each buffer as its own xz block, with ONE `xz` process (--block-list; blocks never
 * share state, and -T runs them in parallel). The npm xz writers tried were broken (@napi-rs/lzma
 * 1.4 writes an uncompressed container) or slower than xz-utils.
 */
export function xzBlocks(parts: Buffer[], preset: number, threads: number): Promise<XzBlock[]> {
  if (parts.length === 0) return Promise.resolve([]);
  const largest = Math.max(...parts.map((p) => p.length));
  // The dictionary need not exceed a block: a smaller one starts faster and uses less memory.
  const dict = Math.min(64 * 1024 * 1024, Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(Math.max(1, largest)))));
  const args = ['-c', '-q', `-T${threads}`, '--check=crc64', `--lzma2=preset=${preset},dict=${dict}`, `--block-list=${parts.map((p) => p.length).join(',')}`];
  return new Promise((resolve, reject) => {
    const p = spawn('xz', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', (e) => reject(new BuilderError('BUILDER_ERR_CONFIG', `cannot run xz: ${e.message}`, { hint: 'install xz-utils' })));
    p.on('close', (code) => {
      if (code !== 0) {
        reject(new BuilderError('BUILDER_ERR_INTERNAL', `xz exited with ${code}: ${err.trim()}`));
        return;
      }
      try {
        const blocks = xzSplitBlocks(Buffer.concat(out));
        if (blocks.length !== parts.length || blocks.some((b, i) => b.uncompressed !== parts[i]!.length)) {
          throw new BuilderError('BUILDER_ERR_INTERNAL', 'xz did not keep the requested block boundaries');
        }
        resolve(blocks);
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
    p.stdin.on('error', () => undefined);
    for (const part of parts) p.stdin.write(part);
    p.stdin.end();
  });
}

/** Reads an xz multibyte integer at `pos`; returns [value, nextPos]. */
function readVli(buf: Buffer, pos: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let k = 0; k < 9; k++) {
    const b = buf[pos + k];
    if (b === undefined) break;
    v += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return [v, pos + k + 1];
  }
  throw new BuilderError('BUILDER_ERR_INTERNAL', 'unexpected xz output (bad varint)');
}

function writeVli(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/** One xz block cut out of a single-block stream, with its index record. */
export interface XzBlock {
  /** Stream flags (2 bytes: the check type). */
  flags: Buffer;
  block: Buffer;
  unpadded: number;
  uncompressed: number;
}

/** Cuts the blocks out of one xz stream, using its index (stream padding is not expected). */
export function xzSplitBlocks(stream: Buffer): XzBlock[] {
  const bad = (): never => {
    throw new BuilderError('BUILDER_ERR_INTERNAL', 'unexpected xz data (not one stream)');
  };
  if (stream.length < 24 || stream[0] !== 0xfd || stream.toString('latin1', 1, 6) !== '7zXZ\x00') bad();
  const flags = Buffer.from(stream.subarray(6, 8));
  const end = stream.length;
  const backward = (stream.readUInt32LE(end - 8) + 1) * 4;
  const indexStart = end - 12 - backward;
  if (indexStart < 12 || stream[indexStart] !== 0) bad();
  let [records, pos] = readVli(stream, indexStart + 1);
  const blocks: XzBlock[] = [];
  let at = 12;
  while (records-- > 0) {
    const [unpadded, p1] = readVli(stream, pos);
    const [uncompressed, p2] = readVli(stream, p1);
    pos = p2;
    const len = Math.ceil(unpadded / 4) * 4;
    blocks.push({ flags, block: stream.subarray(at, at + len), unpadded, uncompressed });
    at += len;
  }
  if (at !== indexStart) bad();
  return blocks;
}

/**
 * Joins blocks compressed separately into ONE xz stream (header, blocks, index, footer). apt's
 * liblzma reader stops after the first stream of a file, so concatenated streams would not do;
 * several blocks in one stream is what multi-threaded xz writes and every reader accepts.
 */
export function xzJoinBlocks(blocks: XzBlock[]): Buffer {
  const flags = blocks[0]?.flags ?? Buffer.from([0x00, 0x04]);
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n >>> 0);
    return b;
  };
  const header = Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), flags, u32(crc32(flags))]);
  const idx: number[] = [0x00, ...writeVli(blocks.length)];
  for (const b of blocks) idx.push(...writeVli(b.unpadded), ...writeVli(b.uncompressed));
  while (idx.length % 4 !== 0) idx.push(0);
  const index = Buffer.from(idx);
  const indexFull = Buffer.concat([index, u32(crc32(index))]);
  const backward = u32(indexFull.length / 4 - 1);
  const footerBody = Buffer.concat([backward, flags]);
  const footer = Buffer.concat([u32(crc32(footerBody)), footerBody, Buffer.from('YZ', 'latin1')]);
  return Buffer.concat([header, ...blocks.map((b) => b.block), indexFull, footer]);
}

/** Where compressed chunks are kept between publishes (the state store implements it). */
export interface ChunkCache {
  getChunks(keys: string[], codec: OutCodec): Promise<Map<string, Buffer>>;
  putChunks(entries: { key: string; data: Buffer }[], codec: OutCodec): Promise<void>;
}

export interface ChunkedOptions {
  gzipLevel: number;
  xzPreset: number;
  /** Average number of entries per chunk (chunk boundaries depend on entry keys only). */
  chunkEntries: number;
  /** Compressions run at once. */
  concurrency: number;
}

export interface CompressedIndex {
  plain: Buffer;
  gz: Buffer;
  xz: Buffer | undefined;
}

/** FNV-1a, for content-defined chunk boundaries that do not move when a neighbour changes. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Builds an index (header + entries + footer) and its .gz and .xz forms. The compressed forms are
 * concatenations of independently compressed chunks (gzip members, xz streams), which gzip, xz,
 * zlib's gzread, liblzma (apt), librepo and libsolv all read as one file. Chunk boundaries are
 * chosen by the entries' keys, so adding one package changes one chunk and the others come from
 * the cache: one new package does not recompress the whole index.
 */
export async function buildCompressedIndex(
  header: string,
  entries: { key: string; text: string }[],
  footer: string,
  codecs: OutCodec[],
  cache: ChunkCache,
  opts: ChunkedOptions,
): Promise<CompressedIndex> {
  const chunks: string[] = [header];
  let cur: string[] = [];
  for (const e of entries) {
    cur.push(e.text);
    if (fnv1a(e.key) % opts.chunkEntries === 0) {
      chunks.push(cur.join(''));
      cur = [];
    }
  }
  if (cur.length > 0) chunks.push(cur.join(''));
  chunks.push(footer);
  const nonEmpty = chunks.filter((c) => c.length > 0).map((c) => Buffer.from(c, 'utf8'));
  const plain = Buffer.concat(nonEmpty);
  const keys = nonEmpty.map((b) => createHash('sha256').update(b).digest('hex'));
  const result: CompressedIndex = { plain, gz: Buffer.alloc(0), xz: undefined };
  for (const codec of codecs) {
    const have = await cache.getChunks([...new Set(keys)], codec);
    const missing = [...new Set(keys.filter((k) => !have.has(k)))];
    const byKey = new Map(keys.map((k, i) => [k, nonEmpty[i]!]));
    let made: { key: string; data: Buffer }[];
    if (codec === 'gz') {
      made = await mapLimit(missing, opts.concurrency, async (k) => ({ key: k, data: await gzipMember(byKey.get(k)!, opts.gzipLevel) }));
    } else {
      // Cached as a one-block stream each, so any later index can reuse the block.
      const parts = missing.map((k) => byKey.get(k)!);
      const blocks = await xzBlocks(parts, opts.xzPreset, Math.min(opts.concurrency, 4)).catch(async (e: unknown) => {
        // An xz that does not keep --block-list boundaries (older releases in threaded mode):
        // one process per chunk instead, which always yields one block each.
        if (!(e instanceof BuilderError) || !e.message.includes('block boundaries')) throw e;
        return (await mapLimit(parts, opts.concurrency, (p) => xzBlocks([p], opts.xzPreset, 1))).flat();
      });
      made = blocks.map((b, i) => ({ key: missing[i]!, data: xzJoinBlocks([b]) }));
    }
    for (const m of made) have.set(m.key, m.data);
    if (made.length > 0) await cache.putChunks(made, codec);
    // An empty index still needs a valid (empty) gzip member, not a zero-byte file.
    if (codec === 'gz') result.gz = keys.length === 0 ? await gzipMember(Buffer.alloc(0), opts.gzipLevel) : Buffer.concat(keys.map((k) => have.get(k)!));
    else result.xz = xzJoinBlocks(keys.map((k) => xzSplitBlocks(have.get(k)!)[0]!));
  }
  return result;
}
