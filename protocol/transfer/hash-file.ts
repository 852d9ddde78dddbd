import { constants } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';

/** Buffer size of streaming reads (hashing, chunk reading). */
export const READ_BUFFER_BYTES = 1024 * 1024;

/**
 * Flags for opening a file the job wrote: never follow a symlink, never block on a FIFO that was
 * swapped in after the lstat.
 */
export const SAFE_READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Feeds `length` bytes of `fh` from `start` into `hash`, 1 MiB at a time (never the whole file in memory). */
export async function hashRange(fh: FileHandle, hash: Hash, start: number, length: number): Promise<number> {
  const buf = Buffer.allocUnsafe(Math.min(READ_BUFFER_BYTES, Math.max(length, 1)));
  let pos = start;
  const end = start + length;
  while (pos < end) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return pos - start;
}

/** sha256 (hex) and size of a regular file, streamed; refuses to follow a symlink. */
export async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const fh = await open(path, SAFE_READ_FLAGS);
  try {
    const st = await fh.stat();
    const h = createHash('sha256');
    const n = await hashRange(fh, h, 0, st.size);
    return { sha256: h.digest('hex'), size: n };
  } finally {
    await fh.close();
  }
}
