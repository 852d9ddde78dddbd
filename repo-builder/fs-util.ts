import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, linkSync, mkdirSync, openSync, readSync, type Stats } from 'node:fs';
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

/** Files up to this size are read whole, hashed and parsed from memory. */
export const IN_MEMORY_BYTES = 4 * 1024 * 1024;

/**
 * sha256, size and mtime of a regular file, and its bytes when small. Opened with O_NOFOLLOW so
 * a symlink planted in a watched directory is refused instead of read (it could point anywhere),
 * and O_NONBLOCK so a FIFO cannot hang the builder.
 */
export async function hashFile(path: string): Promise<{ sha256: string; size: number; isFile: boolean; mtimeMs: number; data: Buffer | undefined }> {
  // Small files are read with synchronous calls: four thread-pool round trips per file cost
  // more than the read itself, and a publish reads thousands of them.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  let st: Stats;
  try {
    st = fstatSync(fd);
    if (!st.isFile()) return { sha256: '', size: st.size, isFile: false, mtimeMs: st.mtimeMs, data: undefined };
    if (st.size <= IN_MEMORY_BYTES) {
      const data = Buffer.allocUnsafe(st.size);
      let got = 0;
      while (got < st.size) {
        const n = readSync(fd, data, got, st.size - got, got);
        if (n === 0) break;
        got += n;
      }
      const d = data.subarray(0, got);
      return { sha256: createHash('sha256').update(d).digest('hex'), size: got, isFile: true, mtimeMs: st.mtimeMs, data: d };
    }
  } finally {
    closeSync(fd);
  }
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const h = createHash('sha256');
    let size = 0;
    for await (const chunk of fh.createReadStream({ autoClose: false })) {
      h.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { sha256: h.digest('hex'), size, isFile: true, mtimeMs: st.mtimeMs, data: undefined };
  } finally {
    await fh.close();
  }
}

/**
 * Puts `src` at `dest`: a hard link (one atomic step, no copy) when both are on one file system,
 * else a copy to a temporary name and a rename. Returns false, doing nothing, when `dest`
 * already exists. `dirs` remembers directories already made.
 */
export async function placeFile(src: string, dest: string, dirs: Set<string> = new Set()): Promise<boolean> {
  const dir = dirname(dest);
  // mkdir and link are metadata-only calls of a few microseconds: done synchronously, thousands
  // of them cost less than the thread-pool round trips of their async forms.
  if (!dirs.has(dir)) {
    mkdirSync(dir, { recursive: true });
    dirs.add(dir);
  }
  try {
    linkSync(src, dest);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw e;
  }
  const tmp = tmpNameFor(dest);
  await copyFile(src, tmp);
  try {
    await link(tmp, dest);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
