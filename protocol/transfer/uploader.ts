import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { BuilderError } from '../errors.js';
import { SAFE_READ_FLAGS } from './hash-file.js';

/** Default bytes per chunk: small enough for one frame, large enough to amortise a round trip. */
export const DEFAULT_CHUNK_BYTES = 256 * 1024;
/** Default chunks in flight at once. */
export const DEFAULT_UPLOAD_WINDOW = 8;

/**
 * Reads `length` bytes at `offset` of a file the job left (without following a symlink). Returns
 * fewer bytes only at the end of the file.
 */
export async function readChunk(path: string, offset: number, length: number): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'readChunk: offset and length must be non-negative integers');
  }
  const fh = await open(path, SAFE_READ_FLAGS);
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === length ? buf : buf.subarray(0, got);
  } finally {
    await fh.close();
  }
}

/** The file to upload: what collection found. */
export interface UploadSource {
  readonly absPath: string;
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

/**
 * The receiving end, as the transport exposes it (RPC calls in the agent, a {@link ArtifactReceiver}
 * directly in tests). Transport-neutral: the uploader only needs these three calls.
 */
export interface UploadTarget {
  /** Starts or resumes the upload of `path`; resolves with how many leading bytes the receiver already holds. */
  begin(info: { path: string; size: number; sha256: string }): Promise<{ offset: number }>;
  /** Delivers `data` at `offset`. Several calls may be outstanding (`window`); they are issued in offset order. */
  sendChunk(offset: number, data: Buffer): Promise<void>;
  /** Asks the receiver to check and commit; resolves with the size and sha256 it computed. */
  finish(): Promise<{ size: number; sha256: string }>;
}

/** Options of {@link uploadArtifact}. */
export interface UploadOptions {
  /** Bytes per chunk. Default 256 KiB. */
  chunkBytes?: number;
  /** Chunks in flight at once. Default 8 (2 MiB with the default chunk). */
  window?: number;
  /** Aborts between chunks. */
  signal?: AbortSignal;
  /** Called with the receiver-confirmed offset as chunks are acknowledged. */
  onProgress?: (offset: number) => void;
}

/** What {@link uploadArtifact} did. */
export interface UploadResult {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  /** The offset the receiver reported at `begin` (0 for a fresh upload). */
  readonly resumedAt: number;
  readonly bytesSent: number;
}

/**
 * Uploads one artifact through `target`: asks where to start (resume), keeps up to `window`
 * chunks in flight, and checks the receiver's final size and sha256 against the ones taken at
 * collection. On a transport failure it rejects after the chunks in flight settle; calling it
 * again after a reconnect resumes at the offset the receiver reports.
 */
export async function uploadArtifact(src: UploadSource, target: UploadTarget, options: UploadOptions = {}): Promise<UploadResult> {
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const window = options.window ?? DEFAULT_UPLOAD_WINDOW;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0 || !Number.isSafeInteger(window) || window <= 0) {
    throw new BuilderError('BUILDER_ERR_CONFIG', 'uploadArtifact: chunkBytes and window must be positive integers');
  }
  const fh = await open(src.absPath, SAFE_READ_FLAGS);
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== src.size) {
      throw new BuilderError('BUILDER_ERR_CONFLICT', `artifact ${src.path} changed since it was collected`);
    }
    const { offset: start } = await target.begin({ path: src.path, size: src.size, sha256: src.sha256 });
    if (!Number.isSafeInteger(start) || start < 0 || start > src.size) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `receiver reported an impossible offset ${String(start)} for ${src.path}`);
    }
    // From offset 0 the sender hashes what it sends too: a file changed since collection is caught here.
    const local = start === 0 ? createHash('sha256') : undefined;
    const inflight: Array<{ end: number; p: Promise<void> }> = [];
    let failure: unknown;
    let sent = 0;
    let pos = start;
    const settleHead = async (): Promise<void> => {
      const head = inflight.shift();
      if (head === undefined) return;
      try {
        await head.p;
        options.onProgress?.(head.end);
      } catch (e) {
        failure ??= e;
      }
    };
    while (pos < src.size && failure === undefined) {
      if (options.signal?.aborted) {
        failure = new BuilderError('BUILDER_ERR_CONNECTION_CLOSED', `upload of ${src.path} aborted`);
        break;
      }
      if (inflight.length >= window) {
        await settleHead();
        continue;
      }
      const len = Math.min(chunkBytes, src.size - pos);
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, pos + got);
        if (bytesRead === 0) throw new BuilderError('BUILDER_ERR_CONFLICT', `artifact ${src.path} shrank during upload`);
        got += bytesRead;
      }
      local?.update(buf);
      const p = target.sendChunk(pos, buf);
      // Mark handled now; the error is taken in order by settleHead.
      p.catch(() => undefined);
      pos += len;
      sent += len;
      inflight.push({ end: pos, p });
    }
    while (inflight.length > 0) await settleHead();
    if (failure !== undefined) throw failure;
    if (local !== undefined && local.digest('hex') !== src.sha256) {
      throw new BuilderError('BUILDER_ERR_CHECKSUM', `artifact ${src.path} changed since it was collected (sha256 differs)`);
    }
    const fin = await target.finish();
    // End to end: the receiver hashed what it stored; it must be what collection hashed on the slave.
    if (fin.size !== src.size || fin.sha256 !== src.sha256) {
      throw new BuilderError('BUILDER_ERR_CHECKSUM', `artifact ${src.path}: receiver has ${fin.size} bytes sha256 ${fin.sha256}, expected ${src.size} bytes ${src.sha256}`);
    }
    return { path: src.path, size: src.size, sha256: src.sha256, resumedAt: start, bytesSent: sent };
  } finally {
    await fh.close();
  }
}
