import { randomBytes } from 'node:crypto';
import { constants, lstatSync, readdirSync, type Stats } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The directories of a work dir, as the job sees them (cwd, HOME, BUILDER_INPUT, BUILDER_OUTPUT, TMPDIR). */
export const WORK_SUBDIRS = ['build', 'home', 'input', 'output', 'tmp'] as const;

/** `<workRoot>/slots`: the parent of the per-slot work dirs (a name no `<jobId>-<attempt>` can take). */
export function slotsRoot(workRoot: string): string {
  return join(workRoot, 'slots');
}

/** `<workRoot>/slots/<slot>`: the work dir of the attempts that run in slot `slot` (0-based). */
export function slotWorkDir(workRoot: string, slot: number): string {
  return join(slotsRoot(workRoot), String(slot));
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * The path of an open directory. Paths below it resolve inside the directory the descriptor
 * holds, whatever happens to its name meanwhile (Linux /proc/self/fd): the `*at()` system calls,
 * which Node does not expose.
 */
function fdPath(fh: FileHandle): string {
  return `/proc/self/fd/${fh.fd}`;
}

/**
 * Removes the entry `name` of the open directory `parent`, recursively, never following a
 * symlink. Security: the job (or a process of it that escaped its group) may still be changing
 * the tree while it is removed, e.g. swapping a directory for a symlink to `/etc`; every step
 * goes through a descriptor of a directory checked with O_NOFOLLOW, so a swap can only make a
 * step fail, never make it act outside the tree. A directory the job made unreadable or
 * unwritable (chmod 000) is made 0700 first: that chmod goes through a path, which is safe
 * because it is only needed when the slave is not root, i.e. when the job runs as the slave's own
 * user and gains nothing by redirecting it.
 */
async function removeEntry(parent: FileHandle, name: string): Promise<void> {
  const p = join(fdPath(parent), name);
  let st;
  try {
    st = await lstat(p);
  } catch (e) {
    if (errno(e) === 'ENOENT') return;
    throw e;
  }
  if (!st.isDirectory()) {
    await withWritable(parent, () => unlink(p));
    return;
  }
  let sub: FileHandle;
  try {
    sub = await open(p, DIR_FLAGS);
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR' || code === 'ELOOP') {
      // Swapped for a file or a symlink since the lstat: that is removed instead.
      await withWritable(parent, () => unlink(p));
      return;
    }
    if (code !== 'EACCES') throw e;
    await chmod(p, 0o700);
    sub = await open(p, DIR_FLAGS);
  }
  try {
    await emptyOpenDir(sub);
  } finally {
    await sub.close();
  }
  await withWritable(parent, () => rmdir(p));
}

/** Runs `f` (an unlink or rmdir in `dir`); on EACCES/EPERM makes `dir` 0700 and tries once more. */
async function withWritable(dir: FileHandle, f: () => Promise<void>): Promise<void> {
  try {
    await f();
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOENT') return;
    if (code !== 'EACCES' && code !== 'EPERM') throw e;
    await dir.chmod(0o700);
    await f();
  }
}

/** Removes every entry of the open directory (the directory itself stays). */
async function emptyOpenDir(dir: FileHandle, keep?: ReadonlySet<string>): Promise<void> {
  let names: string[];
  try {
    names = await readdir(fdPath(dir));
  } catch (e) {
    if (errno(e) !== 'EACCES') throw e;
    await dir.chmod(0o700);
    names = await readdir(fdPath(dir));
  }
  for (const n of names) if (keep === undefined || !keep.has(n)) await removeEntry(dir, n);
}

/** Removes `path` (a file, a symlink or a whole tree), never following symlinks; no error when it is missing. */
export async function removeTree(path: string): Promise<void> {
  let parent: FileHandle;
  try {
    parent = await open(dirname(path), DIR_FLAGS);
  } catch (e) {
    if (errno(e) === 'ENOENT') return;
    throw e;
  }
  try {
    await removeEntry(parent, basename(path));
  } finally {
    await parent.close();
  }
}

interface Want {
  readonly mode: number;
  readonly uid: number;
  /** Checked and set only when given (without runAs, a new directory's group is the file system's business). */
  readonly gid: number | undefined;
}

/**
 * Opens the directory `name` of `parent` after checking it is what `want` says (a real
 * directory, not a symlink, with that mode and owner); otherwise removes whatever is there and
 * makes it anew. Returns it open.
 */
async function ensureDir(parent: FileHandle, name: string, want: Want): Promise<FileHandle> {
  const p = join(fdPath(parent), name);
  let fh: FileHandle | undefined;
  try {
    fh = await open(p, DIR_FLAGS);
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOTDIR' || code === 'ELOOP' || code === 'EACCES') await removeEntry(parent, name);
    else if (code !== 'ENOENT') throw e;
  }
  if (fh !== undefined) {
    const st = await fh.stat();
    if ((st.mode & 0o7777) === want.mode && st.uid === want.uid && (want.gid === undefined || st.gid === want.gid)) return fh;
    await fh.close();
    await removeEntry(parent, name);
  }
  await mkdir(p, { mode: want.mode });
  fh = await open(p, DIR_FLAGS);
  try {
    // The exact mode whatever the umask; the owner through the descriptor (a chown by path could be redirected).
    await fh.chmod(want.mode);
    if (want.gid !== undefined) await fh.chown(want.uid, want.gid);
    return fh;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/**
 * The mode and owner of the work dir itself (`top`), of build/, home/, output/ and tmp/ (`job`),
 * and of input/. Security: with runAs the work dir stays the slave's (0711): the job's user, or
 * a process of an earlier job that outlived its group, can then not rename `input/` and put a
 * symlink in its place between the check and the input fetch (which writes as the slave).
 */
function wants(owner: WorkDirOwner): { top: Want; job: Want; input: Want } {
  const uid = process.getuid?.() ?? 0;
  const r = owner.runAs;
  if (r === undefined) {
    const own = { mode: 0o700, uid, gid: undefined };
    return { top: own, job: own, input: own };
  }
  const gid = process.getgid?.() ?? 0;
  return { top: { mode: 0o711, uid, gid }, job: { mode: 0o700, uid: r.uid, gid: r.gid }, input: { mode: 0o755, uid, gid } };
}

function matches(st: Stats, want: Want): boolean {
  return st.isDirectory() && (st.mode & 0o7777) === want.mode && st.uid === want.uid && (want.gid === undefined || st.gid === want.gid);
}

/**
 * The usual case, checked without leaving the event loop (about ten system calls on cached
 * metadata, where the thread pool's round trips would cost more than the calls): the work dir
 * and its four subdirs are as wanted and empty. It only reads; anything else goes to the full
 * (asynchronous, descriptor-based) path.
 */
function isFresh(dir: string, owner: WorkDirOwner): boolean {
  const w = wants(owner);
  try {
    if (!matches(lstatSync(dir), w.top)) return false;
    const names = readdirSync(dir);
    if (names.length !== WORK_SUBDIRS.length) return false;
    for (const name of WORK_SUBDIRS) {
      const p = join(dir, name);
      if (!matches(lstatSync(p), name === 'input' ? w.input : w.job)) return false;
      if (readdirSync(p).length !== 0) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** Who owns what in a work dir. */
export interface WorkDirOwner {
  /** The job's user and group (runAs), or undefined when jobs run as the slave's own user. */
  readonly runAs: { readonly uid: number; readonly gid: number } | undefined;
}

/**
 * Makes the work dir `dir` (a slot's, reused attempt after attempt) fresh and empty: `dir`
 * itself and its `build/`, `input/`, `output/` and `tmp/` exist, are real directories (not
 * symlinks) with the expected mode and owner, and hold nothing else. What is right is kept (a
 * no-op job costs no mkdir at all); what is wrong (a symlink in place of `build/`, a `chmod 000`,
 * a directory of another owner, files the last job left) is removed, and what is missing made.
 *
 * Modes and owners: without runAs everything is the slave's own, 0700. With runAs: `dir` the
 * slave's, 0711 (see {@link wants}); `build/`, `home/`, `output/`, `tmp/` 0700 of the job's user;
 * `input/` the slave's, 0755 (the job reads its inputs and cannot change them); `workRoot` and
 * its `slots/` are made 0711 (traversable) when anything had to be fixed.
 */
export async function prepareWorkDir(workRoot: string, dir: string, owner: WorkDirOwner): Promise<void> {
  if (isFresh(dir, owner)) return;
  const parentPath = dirname(dir);
  let parent: FileHandle;
  try {
    parent = await open(parentPath, DIR_FLAGS);
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
    await mkdir(parentPath, { recursive: true, mode: 0o700 });
    parent = await open(parentPath, DIR_FLAGS);
  }
  try {
    if (owner.runAs !== undefined) {
      // The job's user must traverse (not list) the directories above its work dir.
      await chmod(workRoot, 0o711);
      await parent.chmod(0o711);
    }
    const { top: topWant, job: jobWant, input: inputWant } = wants(owner);
    const top = await ensureDir(parent, basename(dir), topWant);
    try {
      await emptyOpenDir(top, new Set(WORK_SUBDIRS));
      for (const name of WORK_SUBDIRS) {
        const sub = await ensureDir(top, name, name === 'input' ? inputWant : jobWant);
        try {
          await emptyOpenDir(sub);
        } finally {
          await sub.close();
        }
      }
    } finally {
      await top.close();
    }
  } finally {
    await parent.close();
  }
}

/**
 * {@link prepareWorkDir}, and when that fails (a tree the job made too deep to walk within the
 * descriptor limit, a file system error) the slot's dir is moved aside to
 * `<workRoot>/.trash-<slot>-<time>` (one rename, whatever is inside) and made anew, so that one
 * hostile job cannot leave its slot unusable. The trash is then removed in the background, on a
 * best-effort basis; `onTrashError` hears of a removal that failed.
 */
export async function resetWorkDir(workRoot: string, dir: string, owner: WorkDirOwner, onTrashError?: (path: string, e: unknown) => void): Promise<void> {
  try {
    await prepareWorkDir(workRoot, dir, owner);
    return;
  } catch {
    // Below: set the damaged tree aside.
  }
  const trash = await setAside(workRoot, dir);
  await prepareWorkDir(workRoot, dir, owner);
  void removeTree(trash).catch((e: unknown) => onTrashError?.(trash, e));
}

/** What names a set-aside tree in `workRoot` (no kept `<jobId>-<attempt>` dir starts with a dot). */
export const TRASH_PREFIX = '.trash-';

/**
 * Renames `dir` to `<workRoot>/.trash-<name>-<ms>-<random>` (nothing when it is missing) and
 * returns that path. The random part keeps two set-asides of one slot in the same millisecond apart.
 */
export async function setAside(workRoot: string, dir: string, stamp = Date.now()): Promise<string> {
  const trash = join(workRoot, `${TRASH_PREFIX}${basename(dir)}-${stamp}-${randomBytes(4).toString('hex')}`);
  try {
    await rename(dir, trash);
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
  }
  return trash;
}
