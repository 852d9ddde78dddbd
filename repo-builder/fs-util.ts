import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, link, mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Prefix of every temporary file the repo-builder writes; leftovers are swept at startup. */
export const TMP_PREFIX = '.rb-tmp-';

export function tmpNameFor(path: string): string {
  return join(dirname(path), `${TMP_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}-${basename(path)}`);
}

/**
 * Writes `data` to `path` atomically: a temporary file in the same directory, optionally
 * fsynced, then renamed over the target. A reader sees the old file or the new one, never a
 * part of either.
 */
export async function atomicWrite(path: string, data: Buffer | string, fsync: boolean): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tmpNameFor(path);
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    if (fsync) await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Writes `data` at `path` unless a file is already there (content-addressed names). */
export async function writeIfAbsent(path: string, data: Buffer, fsync: boolean): Promise<void> {
  try {
    const fh = await open(path, 'r');
    const { size } = await fh.stat();
    await fh.close();
    if (size === data.length) return;
  } catch {
    // absent: write it
  }
  await atomicWrite(path, data, fsync);
}

/**
 * sha256 and size of a regular file. Opened with O_NOFOLLOW so a symlink planted in a watched
 * directory is refused instead of read (it could point anywhere on the machine).
 */
export async function hashFile(path: string): Promise<{ sha256: string; size: number; isFile: boolean }> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { sha256: '', size: st.size, isFile: false };
    const h = createHash('sha256');
    if (st.size <= 4 * 1024 * 1024) {
      h.update(await fh.readFile());
    } else {
      for await (const chunk of fh.createReadStream({ autoClose: false })) h.update(chunk as Buffer);
    }
    return { sha256: h.digest('hex'), size: st.size, isFile: true };
  } finally {
    await fh.close();
  }
}

/**
 * Puts `src` at `dest` atomically: a hard link when both are on one file system (no copy), a
 * copy otherwise; always through a temporary name and a rename.
 */
export async function placeFile(src: string, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tmpNameFor(dest);
  try {
    await link(src, tmp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw e;
    await copyFile(src, tmp);
  }
  try {
    await rename(tmp, dest);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** True when `path` exists (any type, symlinks not followed). */
export async function exists(path: string): Promise<boolean> {
  try {
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    await fh.close();
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ELOOP';
  }
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
