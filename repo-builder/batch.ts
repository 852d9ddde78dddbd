import { constants, rmSync } from 'node:fs';
import { lstat, mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BuilderError, isBuilderError } from '../protocol/errors.js';
import { readDeb, type DebInfo } from './deb-reader.js';
import { readDsc, type DscInfo } from './dsc-reader.js';
import { hashFile } from './fs-util.js';
import { fileKind, LISTING_SUFFIX, parseListing, type FileKind, type Listing } from './listing.js';
import type { RepoBuilderConfig } from './repo-builder-options.js';
import { readRpm, type RpmInfo } from './rpm-reader.js';
import { mapLimit } from './map-limit.js';
import type { StateStore } from './state-store.js';

/** A listed file that passed every check, with what was read from it. */
export interface VerifiedFile {
  name: string;
  kind: FileKind;
  path: string;
  sha256: string;
  size: number;
  mtimeMs: number;
  deb?: DebInfo;
  rpm?: RpmInfo;
  dsc?: DscInfo;
}

export interface VerifiedBatch {
  id: string;
  listing: Listing;
  dir: string;
  listingPath: string;
  files: VerifiedFile[];
}

/** Why a batch was refused; its message goes to reason.txt and the log. */
export class BatchRejected extends Error {
  constructor(
    readonly batchId: string,
    readonly reason: string,
  ) {
    super(reason);
    this.name = 'BatchRejected';
  }
}

async function readListing(path: string, max: number): Promise<string> {
  // Security: O_NOFOLLOW, so a listing that is a symlink cannot make us read another file.
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'listing is not a regular file');
    if (st.size > max) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `listing is larger than ${max} bytes`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Reads what the index needs from one file (its bytes if already in memory, else its path). */
async function readPackage(f: VerifiedFile, data: Buffer | undefined, cfg: RepoBuilderConfig): Promise<DebInfo | RpmInfo | DscInfo> {
  if (f.kind === 'deb') return readDeb(data ?? f.path, cfg.limits);
  if (f.kind === 'rpm' || f.kind === 'srpm') return readRpm(data ?? f.path, cfg.limits);
  return readDsc(f.path, cfg.limits.maxControlUncompressedBytes);
}

const cacheKind = (k: FileKind): string => (k === 'srpm' ? 'rpm' : k);

/** Attaches parsed metadata to a verified file, checking .src.rpm naming against the header. */
function attach(f: VerifiedFile, info: DebInfo | RpmInfo | DscInfo): void {
  if (f.kind === 'deb') f.deb = info as DebInfo;
  else if (f.kind === 'dsc') f.dsc = info as DscInfo;
  else {
    const rpm = info as RpmInfo;
    if (f.kind === 'srpm' && rpm.arch !== 'src') throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `${f.name} is named .src.rpm but is a binary package`);
    if (f.kind === 'rpm' && rpm.arch === 'src') throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `${f.name} is a source package but not named .src.rpm`);
    f.rpm = rpm;
  }
}

/**
 * Checks one batch against its listing: the listing's schema and names, then every file's
 * type, size and sha256, then each package's own metadata. Throws BatchRejected with a reason
 * a person can act on; never changes anything on disk.
 */
export async function verifyBatch(id: string, cfg: RepoBuilderConfig, store: StateStore): Promise<VerifiedBatch> {
  const listingPath = join(cfg.incomingDir, `${id}${LISTING_SUFFIX}`);
  const dir = join(cfg.incomingDir, id);
  const reject = (why: string): never => {
    throw new BatchRejected(id, why);
  };
  let listing: Listing;
  try {
    listing = parseListing(await readListing(listingPath, cfg.maxListingBytes), id, cfg.maxFilesPerBatch);
  } catch (e) {
    return reject(isBuilderError(e) ? e.message : `cannot read listing: ${(e as Error).message}`);
  }
  const st = await lstat(dir).catch(() => undefined);
  if (st === undefined) reject(`batch directory ${id}/ is missing`);
  if (!st!.isDirectory()) reject(`batch ${id} is not a directory (symlinks are not followed)`);
  const hashed = await mapLimit(listing.files, cfg.concurrency * 2, async (entry) => {
    const path = join(dir, entry.name);
    let h: Awaited<ReturnType<typeof hashFile>>;
    try {
      h = await hashFile(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return reject(`file ${entry.name} is listed but missing`);
      if (code === 'ELOOP') return reject(`file ${entry.name} is a symlink (refused)`);
      return reject(`file ${entry.name} cannot be read: ${code ?? (e as Error).message}`);
    }
    if (!h.isFile) reject(`file ${entry.name} is not a regular file`);
    if (h.size !== entry.size) reject(`file ${entry.name} has ${h.size} bytes, the listing says ${entry.size}`);
    if (h.sha256 !== entry.sha256) reject(`file ${entry.name} has sha256 ${h.sha256}, the listing says ${entry.sha256}`);
    const file: VerifiedFile = { name: entry.name, kind: fileKind(entry.name)!, path, sha256: h.sha256, size: h.size, mtimeMs: h.mtimeMs };
    return { file, data: h.data };
  });
  const files = hashed.map((x) => x.file);
  // What was read from a package is cached by its sha256: a package is parsed once, ever.
  const cached = await store.getMetaMany(files.filter((f) => f.kind !== 'debsrc').map((f) => f.sha256));
  const fresh: { sha256: string; kind: string; info: unknown }[] = [];
  await mapLimit(hashed, cfg.concurrency * 2, async ({ file: f, data }) => {
    if (f.kind === 'debsrc') return;
    try {
      let info = cached.get(f.sha256)?.get(cacheKind(f.kind)) as DebInfo | RpmInfo | DscInfo | undefined;
      if (info === undefined) {
        info = await readPackage(f, data, cfg);
        fresh.push({ sha256: f.sha256, kind: cacheKind(f.kind), info });
      }
      attach(f, info);
    } catch (e) {
      if (e instanceof BatchRejected) throw e;
      reject(`${f.name}: ${isBuilderError(e) ? e.message : `unreadable package (${(e as Error).message})`}`);
    }
  });
  if (fresh.length > 0) await store.putMetaMany(fresh);
  // Source tarballs travel with the .dsc that names them; a stray one has no place in the pool.
  const byName = new Map(files.map((f) => [f.name, f]));
  const claimed = new Set<string>();
  for (const f of files) {
    if (f.dsc === undefined) continue;
    for (const c of f.dsc.files) {
      const have = byName.get(c.name);
      if (have === undefined || have.kind !== 'debsrc') reject(`${f.name} names ${c.name}, which is not in the batch`);
      if (have!.size !== c.size || (c.sha256 !== undefined && have!.sha256 !== c.sha256)) reject(`${c.name} does not match its checksum in ${f.name}`);
      claimed.add(c.name);
    }
  }
  for (const f of files) if (f.kind === 'debsrc' && !claimed.has(f.name)) reject(`${f.name} is a source file that no .dsc in the batch names`);
  return { id, listing, dir, listingPath, files };
}

/**
 * Moves a refused batch (its directory and listing) to `rejected/<id>/` with `reason.txt`. A
 * name already taken there gets a time suffix, so an earlier rejection is never overwritten.
 */
export async function moveToRejected(cfg: RepoBuilderConfig, id: string, listingFile: string, reason: string): Promise<string> {
  await mkdir(cfg.rejectedDir, { recursive: true });
  let target = join(cfg.rejectedDir, id);
  if (await lstat(target).catch(() => undefined)) target = `${target}.${cfg.now()}`;
  const dir = join(cfg.incomingDir, id);
  const st = await lstat(dir).catch(() => undefined);
  if (st?.isDirectory() === true) {
    await rename(dir, target);
  } else {
    await mkdir(target);
    // Security: a symlink (or other non-directory) is moved inside, never written through.
    if (st !== undefined) await rename(dir, join(target, id));
  }
  await rename(join(cfg.incomingDir, listingFile), join(target, listingFile)).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') await rm(join(cfg.incomingDir, listingFile), { force: true });
  });
  await writeFile(join(target, 'reason.txt'), `${new Date(cfg.now()).toISOString()} rejected batch ${JSON.stringify(id)}: ${reason}\n`);
  return target;
}

/** Removes a published batch from incoming: the listing first (the commit mark), then its files. */
export async function removeBatch(b: VerifiedBatch, between: () => void = () => undefined): Promise<void> {
  await rm(b.listingPath, { force: true });
  between();
  // Unlinks only, done synchronously: a batch of thousands of files goes in a few ms.
  rmSync(b.dir, { recursive: true, force: true });
}
