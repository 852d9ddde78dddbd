import { constants } from 'node:fs';
import { lstat, mkdir, open, realpath, rename, rm } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { ResultOf } from '../../../protocol/catalogue.js';
import { BuilderError } from '../../../protocol/errors.js';
import { checkRelativePath } from '../../../protocol/names.js';
import type { RpcPeer } from '../../../protocol/rpc-peer.js';
import { downloadInto } from '../../../protocol/transfer/index.js';

export type ArtifactView = ResultOf<'artifact.list'>['artifacts'][number];

/** Options of {@link downloadArtifact}; every limit named, with its default. */
export interface DownloadOptions {
  /** Replace a file that already exists at the destination. Default false. */
  force?: boolean;
  /** Bytes per artifact.read. Default 1 MiB. */
  chunkBytes?: number;
  /** artifact.read calls in flight. Default 4. */
  window?: number;
  /** Called with the bytes written so far. */
  onProgress?: (bytes: number) => void;
}

/**
 * Makes the directories of `rel` under `root`, refusing any that is a symlink or not a plain
 * directory: the download must land inside --out and nowhere else.
 */
async function mkdirInside(root: string, relDir: string): Promise<string> {
  let cur = root;
  if (relDir === '' || relDir === '.') return cur;
  for (const part of relDir.split('/')) {
    cur = join(cur, part);
    try {
      await mkdir(cur, { mode: 0o755 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Security: a symlinked directory under --out would carry the file outside it.
    if (!(await lstat(cur)).isDirectory()) throw new BuilderError('BUILDER_ERR_INVALID_NAME', `${cur} is not a plain directory`);
  }
  return cur;
}

/**
 * Downloads one artifact into `outDir` under its own (validated, relative) name: chunked
 * artifact.read calls, several in flight, written to `NAME.part`, sha256 and size checked
 * against artifact.list, then renamed into place. A mismatch leaves nothing behind.
 */
export async function downloadArtifact(peer: RpcPeer, a: ArtifactView, outDir: string, o: DownloadOptions = {}): Promise<string> {
  const chunkBytes = o.chunkBytes ?? 1024 * 1024;
  const window = o.window ?? 4;
  // Security: the name comes from the master; it must be a plain relative path.
  const rel = checkRelativePath(a.name);
  await mkdir(outDir, { recursive: true });
  const root = await realpath(outDir);
  const slash = rel.lastIndexOf('/');
  const dir = await mkdirInside(root, slash < 0 ? '' : rel.slice(0, slash));
  const dest = join(dir, slash < 0 ? rel : rel.slice(slash + 1));
  if (!dest.startsWith(root + sep)) throw new BuilderError('BUILDER_ERR_INVALID_NAME', `artifact name ${a.name} escapes ${outDir}`);
  const existing = await lstat(dest).catch(() => undefined);
  if (existing !== undefined) {
    if (!o.force) throw new BuilderError('BUILDER_ERR_CONFLICT', `${dest} already exists`, { hint: 'pass --force to replace it, or choose another --out' });
    if (!existing.isFile()) throw new BuilderError('BUILDER_ERR_CONFLICT', `${dest} exists and is not a regular file`);
  }
  const part = `${dest}.part`;
  // Security: O_NOFOLLOW, so a symlink planted at the .part name is refused, not written through.
  const fh = await open(part, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o644);
  let ok = false;
  try {
    await downloadInto(
      fh,
      { what: `artifact ${a.name}`, size: a.size, sha256: a.sha256, mismatchHint: 'nothing was kept; try again' },
      async (offset, length) => (await peer.call('artifact.read', { id: a.id, offset, length })).data,
      { chunkBytes, window, ...(o.onProgress ? { onProgress: o.onProgress } : {}) },
    );
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await rm(part, { force: true });
  }
  await rename(part, dest);
  return dest;
}

/**
 * Picks the artifacts to download: by NAME if given (the newest attempt's), else the newest
 * attempt's copy of every name.
 */
export function pickArtifacts(all: readonly ArtifactView[], name?: string): ArtifactView[] {
  const newest = new Map<string, ArtifactView>();
  for (const a of all) {
    const cur = newest.get(a.name);
    if (cur === undefined || a.attempt > cur.attempt || (a.attempt === cur.attempt && a.id > cur.id)) newest.set(a.name, a);
  }
  if (name === undefined) return [...newest.values()].sort((x, y) => x.name.localeCompare(y.name));
  const one = newest.get(name);
  return one ? [one] : [];
}
