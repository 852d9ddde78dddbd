import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { BuilderError } from '../errors.js';

/** What {@link downloadInto} fetches and checks. */
export interface DownloadExpect {
  /** Names the file in errors ("input a.tar", "artifact x.deb"). */
  readonly what: string;
  readonly size: number;
  readonly sha256: string;
  /** Hint attached to a sha256 mismatch. */
  readonly mismatchHint?: string;
}

/** Options of {@link downloadInto}. */
export interface DownloadOptions {
  /** Bytes asked for per read. */
  chunkBytes: number;
  /** Reads in flight at once. Default 1. */
  window?: number;
  /** Checked before each read is issued. */
  signal?: AbortSignal;
  /** Called with the bytes written so far, in order. */
  onProgress?: (done: number) => void;
}

/**
 * The receiving half of a ranged download (the counterpart of {@link uploadArtifact}): asks
 * `read` for `chunkBytes` at a time, up to `window` reads in flight, writes each range at its
 * offset into `fh`, and checks every range's length and the whole file's sha256. Rejects with
 * BUILDER_ERR_CHECKSUM on a short or long range or a wrong sha256; the caller owns `fh` (sync,
 * close, and removing what a failure left).
 */
export async function downloadInto(
  fh: FileHandle,
  expect: DownloadExpect,
  read: (offset: number, length: number) => Promise<Uint8Array>,
  o: DownloadOptions,
): Promise<void> {
  const window = o.window ?? 1;
  const hash = createHash('sha256');
  const queue: Array<{ offset: number; length: number; p: Promise<Uint8Array> }> = [];
  let next = 0;
  let done = 0;
  const issue = (): void => {
    while (queue.length < window && next < expect.size) {
      if (o.signal?.aborted) throw new BuilderError('BUILDER_ERR_BAD_STATE', `${expect.what}: download cancelled`);
      const length = Math.min(o.chunkBytes, expect.size - next);
      const p = read(next, length);
      // Settled by the loop below, or left behind when an earlier range failed.
      p.catch(() => undefined);
      queue.push({ offset: next, length, p });
      next += length;
    }
  };
  issue();
  while (queue.length > 0) {
    const head = queue.shift()!;
    const data = await head.p;
    if (data.length !== head.length) {
      throw new BuilderError('BUILDER_ERR_CHECKSUM', `${expect.what}: the master sent ${data.length} bytes at offset ${head.offset}, expected ${head.length}`);
    }
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let written = 0;
    while (written < buf.length) {
      const { bytesWritten } = await fh.write(buf, written, buf.length - written, head.offset + written);
      written += bytesWritten;
    }
    hash.update(buf);
    done += buf.length;
    o.onProgress?.(done);
    issue();
  }
  const got = hash.digest('hex');
  if (got !== expect.sha256) {
    throw new BuilderError(
      'BUILDER_ERR_CHECKSUM',
      `${expect.what}: sha256 ${got} does not match the expected ${expect.sha256}`,
      expect.mismatchHint === undefined ? {} : { hint: expect.mismatchHint },
    );
  }
}
