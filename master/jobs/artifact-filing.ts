import { constants } from 'node:fs';
import { copyFile, link, lstat, mkdir, open, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { checkRelativePath, isValidName } from '../../protocol/names.js';
import type { ArtifactKind } from '../store/index.js';

/**
 * `package` for .deb, .udeb, .rpm (source rpms included) and .dsc, `image` for everything else:
 * the same split as the slave's collection (slave/artifacts `artifactKind`), kept here because
 * master/ and slave/ share only protocol/ and pki/.
 */
export function artifactKindOf(path: string): ArtifactKind {
  const lower = path.toLowerCase();
  return ['.deb', '.udeb', '.rpm', '.dsc'].some((s) => lower.endsWith(s)) ? 'package' : 'image';
}

/** The promoted job id of an image name (`images/<name>/current` -> `<job id>`), or null. */
export async function promotedOf(imagesDir: string, name: string): Promise<number | null> {
  try {
    const t = await readlink(join(imagesDir, name, 'current'));
    return /^\d+$/.test(t) ? Number(t) : null;
  } catch {
    return null;
  }
}

/** File names the repo-builder takes in a batch (docs/repo-builder.md, "The incoming contract"). */
const INCOMING_PACKAGE_RE = /\.(deb|rpm|dsc)$/;
const SOURCE_FILE_RE = /\.(tar|tar\.gz|tar\.xz|tar\.bz2|tar\.zst|tar\.lzma|diff\.gz)$/;

/** Whether `name` (one path segment) is a name the repo-builder accepts in a listing. */
function incomingNameOk(name: string): boolean {
  // eslint-disable-next-line no-control-regex
  return name.length > 0 && name.length <= 255 && !name.startsWith('.') && !/[/\\\x00-\x1f\x7f]/.test(name) && name !== '..';
}

/** One artifact as the slave reported it and the master received it. */
export interface AttemptArtifact {
  /** Relative path under BUILDER_OUTPUT. */
  path: string;
  size: number;
  sha256: string;
}

/** One artifact after filing: where the master keeps it. */
export interface FiledArtifact extends AttemptArtifact {
  kind: ArtifactKind;
  /** Absolute path of the master's copy. */
  storedAt: string;
}

export interface FilingPlaces {
  /** Where artifact.finish committed the attempt's uploads: `DIR/uploads/<job>/<attempt>`. */
  uploads: string;
  /** `DIR/packages/<job>`: the master's copy of a job's packages (also served by artifact.read). */
  packages: string;
  /** `DIR/images/<job name>/<job id>`. */
  images: string;
  /** The repo-builder's incoming directory. */
  incoming: string;
}

export interface FilingResult {
  filed: FiledArtifact[];
  /** The incoming batch id, when the attempt had packages. */
  batch: string | null;
  /** Human notes: artifacts not found, names the incoming contract cannot take. */
  notes: string[];
}

async function statFile(p: string): Promise<{ size: number } | undefined> {
  try {
    const st = await lstat(p);
    return st.isFile() ? { size: st.size } : undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function fsyncDir(d: string): Promise<void> {
  const fh = await open(d, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The file names a .dsc names (Files / Checksums-* fields): its source tarballs and diffs. */
async function dscMembers(path: string): Promise<string[]> {
  const st = await statFile(path);
  // A .dsc is a few KiB; a huge one is not read (the repo-builder will reject the batch anyway).
  if (st === undefined || st.size > 1024 * 1024) return [];
  const text = await readFile(path, 'utf8');
  const out: string[] = [];
  let inList = false;
  for (const line of text.split('\n')) {
    if (/^(Files|Checksums-Sha256|Checksums-Sha1|Checksums-Md5)\s*:/i.test(line)) {
      inList = true;
      continue;
    }
    if (inList && /^[ \t]+\S/.test(line)) {
      const parts = line.trim().split(/\s+/);
      const n = parts[parts.length - 1];
      if (n !== undefined) out.push(n);
    } else {
      inList = false;
    }
  }
  return out;
}

/**
 * Files an attempt's artifacts, idempotently (the slave repeats attempt.finish when its reply is
 * lost, and the master may have crashed half way):
 * 1. each artifact moves from the upload area to its home: packages under `packages`, images
 *    under `images` (an artifact already there with its size is left alone; a filed file is
 *    never replaced: other bytes under its name, or a path that clashes with it, get a note);
 * 2. packages the repo-builder takes (.deb, .rpm, .src.rpm, .dsc and the source files a .dsc of
 *    the attempt names) are hard-linked (copied across file systems) into
 *    `<incoming>/<batch>/`, then the listing is written to a dotfile, fsynced and renamed to
 *    `<incoming>/<batch>.listing.json`: the listing is the commit mark, written last.
 */
export async function fileAttempt(
  places: FilingPlaces,
  meta: { jobId: number; attempt: number; channel: string },
  artifacts: readonly AttemptArtifact[],
): Promise<FilingResult> {
  const notes: string[] = [];
  const filed: FiledArtifact[] = [];
  for (const a of artifacts) {
    const rel = checkRelativePath(a.path);
    const kind = artifactKindOf(rel);
    const dest = join(kind === 'package' ? places.packages : places.images, rel);
    let have: { size: number } | undefined;
    try {
      have = await statFile(dest);
      if (have !== undefined && have.size !== a.size) {
        // Never replaced: filed files are served, linked into batches and promoted.
        notes.push(`${rel}: not filed: other bytes are filed under this name`);
        continue;
      }
      if (have === undefined) {
        const src = join(places.uploads, rel);
        const up = await statFile(src);
        if (up === undefined || up.size !== a.size) {
          notes.push(`${rel}: not uploaded`);
          continue;
        }
        await mkdir(dirname(dest), { recursive: true });
        await rename(src, dest);
      }
    } catch (e) {
      // A file where a directory of the path must be, or the reverse (`out` and `out/x`).
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTDIR' && code !== 'EEXIST' && code !== 'EISDIR' && code !== 'ENOTEMPTY') throw e;
      notes.push(`${rel}: not filed: its path clashes with another artifact's`);
      continue;
    }
    filed.push({ ...a, path: rel, kind, storedAt: dest });
  }

  // What goes to the repo-builder: binary packages and .dsc files, then the files the .dsc files name.
  const byBase = new Map<string, FiledArtifact>();
  const chosen = new Map<string, FiledArtifact>();
  for (const f of filed) {
    const b = basename(f.path);
    if (!byBase.has(b)) byBase.set(b, f);
  }
  const take = (f: FiledArtifact): void => {
    const b = basename(f.path);
    const cur = chosen.get(b);
    if (cur === f) return;
    if (cur !== undefined) {
      notes.push(`${f.path}: not filed for the repository (another artifact is named ${b})`);
      return;
    }
    if (!incomingNameOk(b)) {
      notes.push(`${f.path}: not filed for the repository (file name not accepted)`);
      return;
    }
    chosen.set(b, f);
  };
  for (const f of filed) {
    if (f.kind !== 'package') continue;
    if (INCOMING_PACKAGE_RE.test(f.path)) take(f);
    else notes.push(`${f.path}: kept, not filed for the repository (the repo-builder does not take this type)`);
  }
  for (const f of [...chosen.values()]) {
    if (!f.path.endsWith('.dsc')) continue;
    for (const m of await dscMembers(f.storedAt)) {
      const g = byBase.get(m);
      if (g === undefined) notes.push(`${f.path} names ${m}, which is not among the artifacts`);
      else if (SOURCE_FILE_RE.test(m) || g.kind === 'package') take(g);
    }
  }
  if (chosen.size === 0) return { filed, batch: null, notes };

  const batch = `job-${meta.jobId}-a${meta.attempt}`;
  if (!isValidName(batch)) throw new Error(`batch id ${batch} is not a valid name`);
  const listingPath = join(places.incoming, `${batch}.listing.json`);
  if ((await statFile(listingPath)) === undefined) {
    const bdir = join(places.incoming, batch);
    // A batch directory without its listing is a filing cut short: redo it whole.
    await rm(bdir, { recursive: true, force: true });
    await mkdir(bdir, { recursive: true });
    const files: Array<{ name: string; size: number; sha256: string }> = [];
    for (const [name, f] of chosen) {
      const to = join(bdir, name);
      try {
        await link(f.storedAt, to);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
        await copyFile(f.storedAt, to, constants.COPYFILE_EXCL);
        const fh = await open(to, 'r');
        await fh.sync().finally(() => fh.close());
      }
      files.push({ name, size: f.size, sha256: f.sha256 });
    }
    await fsyncDir(bdir);
    const listing = JSON.stringify({ version: 1, batch, job: String(meta.jobId), channel: meta.channel, files });
    const tmp = join(places.incoming, `.${batch}.listing.json.tmp`);
    await writeFile(tmp, listing, { mode: 0o644 });
    const fh = await open(tmp, 'r');
    await fh.sync().finally(() => fh.close());
    await rename(tmp, listingPath);
    await fsyncDir(places.incoming);
  }
  return { filed, batch, notes };
}
