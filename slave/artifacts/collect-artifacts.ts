import { createHash } from 'node:crypto';
import { lstat, open, opendir, readlink, realpath } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { checkRelativePath } from '../../protocol/names.js';
import { hashRange, SAFE_READ_FLAGS } from '../../protocol/transfer/index.js';

/** What the master does with an artifact: packages go to `incoming/`, anything else is an image. */
export type ArtifactKind = 'package' | 'image';

/** One regular file found under BUILDER_OUTPUT. */
export interface Artifact {
  /** Relative to the output dir, forward slashes, validated by `checkRelativePath`. */
  readonly path: string;
  /** Absolute path on the slave (for the uploader; never sent to the master). */
  readonly absPath: string;
  readonly size: number;
  /** Lower-case hex sha256 of the content at collection time. */
  readonly sha256: string;
  readonly kind: ArtifactKind;
}

/** Why an entry of the output dir is not an artifact. */
export type RefusalReason =
  | 'symlink'
  | 'fifo'
  | 'socket'
  | 'device'
  | 'escapes'
  | 'invalid-name'
  | 'too-deep'
  | 'too-many-files'
  | 'too-large'
  | 'changed'
  | 'foreign-owner'
  | 'not-a-directory'
  | 'unreadable'
  /** The last entry of a list cut at MAX_REFUSED_KEPT: its detail says how many more there were. */
  | 'too-many-refusals';

/** An entry refused as an artifact, reported to the master (the path is display text only). */
export interface RefusedEntry {
  /** The relative path, JSON-quoted if it is not a valid relative path. */
  readonly path: string;
  readonly reason: RefusalReason;
  readonly detail?: string;
}

/** An artifact whose relative name is one of the job's input files but whose content differs. */
export interface InputConflict {
  readonly path: string;
  readonly inputSha256: string;
  readonly artifactSha256: string;
}

/** The result of {@link collectArtifacts}. */
export interface ArtifactScan {
  readonly artifacts: Artifact[];
  readonly refused: RefusedEntry[];
  readonly conflicts: InputConflict[];
}

/** Options of {@link collectArtifacts}; all optional. */
export interface CollectArtifactsOptions {
  /** The job's input files (relative path -> sha256), to report artifacts that shadow one with other content. */
  inputs?: ReadonlyMap<string, string>;
  /** Most regular files taken; the rest are refused as `too-many-files`. Default 10,000. */
  maxFiles?: number;
  /** Deepest directory nesting walked; deeper entries are refused as `too-deep`. Default 32. */
  maxDepth?: number;
  /** Largest single artifact; larger files are refused as `too-large`. Default 16 GiB. */
  maxFileBytes?: number;
  /**
   * When jobs run as their own user: files not owned by it are refused as `foreign-owner` (a
   * hard link to a file of the slave's, which the slave could read and the job could not).
   * Default: no owner check.
   */
  ownerUid?: number;
}

/** Refused entries listed at most (the last one says how many more there were): the wire's limit too. */
export const MAX_REFUSED_KEPT = 1_000;

export const COLLECT_DEFAULTS = Object.freeze({ maxFiles: 10_000, maxDepth: 32, maxFileBytes: 16 * 1024 ** 3 });

const PACKAGE_SUFFIXES = ['.deb', '.udeb', '.rpm', '.dsc'];

/** `package` for .deb, .udeb, .rpm (source rpms included) and .dsc; `image` for everything else. */
export function artifactKind(path: string): ArtifactKind {
  const lower = path.toLowerCase();
  return PACKAGE_SUFFIXES.some((s) => lower.endsWith(s)) ? 'package' : 'image';
}

function display(rel: string): string {
  try {
    return checkRelativePath(rel);
  } catch {
    return JSON.stringify(rel).slice(0, 300);
  }
}

/**
 * Walks `outputDir` without following anything: every regular file is an artifact (streamed
 * sha256); symlinks, FIFOs, sockets, devices, invalid names and anything whose real path is not
 * inside the directory are refused and reported, never read. Runs after the job's process group
 * is gone, also after a failure.
 */
export async function collectArtifacts(outputDir: string, options: CollectArtifactsOptions = {}): Promise<ArtifactScan> {
  const maxFiles = options.maxFiles ?? COLLECT_DEFAULTS.maxFiles;
  const maxDepth = options.maxDepth ?? COLLECT_DEFAULTS.maxDepth;
  const maxFileBytes = options.maxFileBytes ?? COLLECT_DEFAULTS.maxFileBytes;
  for (const [k, v] of [['maxFiles', maxFiles], ['maxDepth', maxDepth], ['maxFileBytes', maxFileBytes]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new BuilderError('BUILDER_ERR_CONFIG', `collectArtifacts: ${k} must be a non-negative integer`);
  }
  const artifacts: Artifact[] = [];
  // Kept up to MAX_REFUSED_KEPT entries, the rest only counted: a job that leaves millions of
  // symlinks or files past maxFiles must not grow the slave's heap and its journal with them
  // (100,000 files past maxFiles made a 6.7 MB outcome line).
  const refusedKept: RefusedEntry[] = [];
  let refusedMore = 0;
  const refused = {
    push(e: RefusedEntry): void {
      if (refusedKept.length < MAX_REFUSED_KEPT - 1) refusedKept.push(e);
      else refusedMore++;
    },
  };
  const refusedList = (): RefusedEntry[] =>
    refusedMore === 0 ? refusedKept : [...refusedKept, { path: '…', reason: 'too-many-refusals', detail: `${refusedMore} more entries not listed` }];
  const conflicts: InputConflict[] = [];
  // Security: the job may have replaced the output dir itself, e.g. with a symlink to `/`.
  let top;
  try {
    top = await lstat(outputDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { artifacts, refused: refusedList(), conflicts };
    throw e;
  }
  if (top.isSymbolicLink() || !top.isDirectory()) {
    refused.push({ path: '.', reason: top.isSymbolicLink() ? 'symlink' : 'not-a-directory' });
    return { artifacts, refused: refusedList(), conflicts };
  }
  const root = await realpath(outputDir);

  const walk = async (dirRel: string, depth: number): Promise<void> => {
    const dirAbs = dirRel === '' ? root : join(root, dirRel);
    const names: string[] = [];
    const dir = await opendir(dirAbs);
    for await (const d of dir) names.push(d.name);
    names.sort();
    for (const name of names) {
      const rel = dirRel === '' ? name : `${dirRel}/${name}`;
      const abs = join(dirAbs, name);
      let st;
      try {
        st = await lstat(abs);
      } catch (e) {
        refused.push({ path: display(rel), reason: 'unreadable', detail: (e as NodeJS.ErrnoException).code ?? 'error' });
        continue;
      }
      // Security: lstat, never stat: a symlink (to a file or a directory) is reported, not followed.
      if (st.isSymbolicLink()) {
        let target = '';
        try {
          target = await readlink(abs);
        } catch {
          // keep the refusal without its target
        }
        refused.push({ path: display(rel), reason: 'symlink', detail: `-> ${JSON.stringify(target).slice(0, 200)}` });
        continue;
      }
      if (st.isDirectory()) {
        if (depth + 1 > maxDepth) refused.push({ path: display(rel), reason: 'too-deep' });
        else await walk(rel, depth + 1);
        continue;
      }
      if (st.isFIFO()) {
        refused.push({ path: display(rel), reason: 'fifo' });
        continue;
      }
      if (st.isSocket()) {
        refused.push({ path: display(rel), reason: 'socket' });
        continue;
      }
      if (!st.isFile()) {
        refused.push({ path: display(rel), reason: 'device' });
        continue;
      }
      let path: string;
      try {
        path = checkRelativePath(rel);
      } catch (e) {
        refused.push({ path: display(rel), reason: 'invalid-name', detail: e instanceof Error ? e.message.slice(0, 200) : undefined });
        continue;
      }
      // Security: belt and braces against a directory swapped for a symlink during the walk.
      let real: string;
      try {
        real = await realpath(abs);
      } catch {
        refused.push({ path, reason: 'unreadable' });
        continue;
      }
      if (!real.startsWith(root + sep)) {
        refused.push({ path, reason: 'escapes' });
        continue;
      }
      // Security: the job can only create files it owns; anything else is a link to someone else's file.
      if (options.ownerUid !== undefined && st.uid !== options.ownerUid) {
        refused.push({ path, reason: 'foreign-owner', detail: `uid ${st.uid}` });
        continue;
      }
      if (st.size > maxFileBytes) {
        refused.push({ path, reason: 'too-large', detail: `${st.size} bytes` });
        continue;
      }
      if (artifacts.length >= maxFiles) {
        refused.push({ path, reason: 'too-many-files' });
        continue;
      }
      const a = await hashEntry(abs, path, st.dev, st.ino);
      if ('reason' in a) {
        refused.push(a);
        continue;
      }
      artifacts.push(a);
      const inputSha = options.inputs?.get(path);
      if (inputSha !== undefined && inputSha !== a.sha256) conflicts.push({ path, inputSha256: inputSha, artifactSha256: a.sha256 });
    }
  };
  await walk('', 0);
  return { artifacts, refused: refusedList(), conflicts };
}

async function hashEntry(abs: string, path: string, dev: number, ino: number): Promise<Artifact | RefusedEntry> {
  let fh;
  try {
    fh = await open(abs, SAFE_READ_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { path, reason: code === 'ELOOP' ? 'symlink' : 'unreadable', detail: code };
  }
  try {
    const st = await fh.stat();
    // Security: the file opened must be the one lstat saw (no swap between the two calls).
    if (!st.isFile() || st.dev !== dev || st.ino !== ino) return { path, reason: 'changed' };
    const h = createHash('sha256');
    const n = await hashRange(fh, h, 0, st.size);
    if (n !== st.size) return { path, reason: 'changed', detail: 'size changed while hashing' };
    return { path, absPath: abs, size: n, sha256: h.digest('hex'), kind: artifactKind(path) };
  } finally {
    await fh.close();
  }
}

/**
 * Index of a directory's regular files (relative path -> sha256), e.g. of BUILDER_INPUT before the
 * job starts, for {@link CollectArtifactsOptions.inputs}.
 */
export async function indexFiles(dir: string, options: Omit<CollectArtifactsOptions, 'inputs'> = {}): Promise<Map<string, string>> {
  const scan = await collectArtifacts(dir, options);
  return new Map(scan.artifacts.map((a) => [a.path, a.sha256]));
}
