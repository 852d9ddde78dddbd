import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';

/**
 * A cgroup (v2) per attempt, so that cancel, timeout and the end of an attempt reach every
 * process the job started, also one that left its process group (setsid, a daemon that
 * double-forks): the process group alone cannot.
 *
 * Layout: `<the slave's own cgroup>/builder-<tag>-<jobId>-<attempt>`, where `tag` is a hash of
 * the slave's work root (two slaves on one machine never share a name, and a slave finds the
 * cgroups its previous process left). The job's process joins its cgroup before it runs the
 * program (the native spawner writes to `cgroup.procs` between vfork and exec), so nothing it
 * forks can start outside. No controller is enabled: membership and `cgroup.kill` are all this
 * uses, which any cgroup v2 offers (kill: Linux 5.14). Under systemd, the slave's unit needs
 * `Delegate=yes` for its cgroup to be the slave's to divide.
 */
export interface CgroupPlace {
  /** The slave's own cgroup directory (the parent of the attempts' cgroups). */
  readonly parent: string;
  /** Start of the names of this slave's attempt cgroups (`builder-<tag>-`). */
  readonly prefix: string;
}

/** Linux 5.14 added cgroup.kill. */
const MIN_KERNEL: readonly [number, number] = [5, 14];

function kernelAtLeast(r: string, [maj, min]: readonly [number, number]): boolean {
  const m = /^(\d+)\.(\d+)/.exec(r);
  if (m === null) return false;
  const a = Number(m[1]);
  return a > maj || (a === maj && Number(m[2]) >= min);
}

/** The cgroup v2 mounts (mount point and the root of the hierarchy each shows), from /proc/self/mountinfo text. */
export function cgroup2Mounts(mountinfo: string): Array<{ mountPoint: string; root: string }> {
  const found: Array<{ mountPoint: string; root: string }> = [];
  for (const line of mountinfo.split('\n')) {
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const [fstype] = line.slice(dash + 3).split(' ');
    if (fstype !== 'cgroup2') continue;
    const f = line.slice(0, dash).split(' ');
    // Fields: id, parent, major:minor, root, mount point, ... (octal escapes for spaces and such).
    if (f.length < 5) continue;
    found.push({ root: unescapeMount(f[3]!), mountPoint: unescapeMount(f[4]!) });
  }
  return found;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Where cgroup `own` (a path in the hierarchy) is in the file system: in the first mount that shows it. */
export function cgroupDirIn(mounts: ReadonlyArray<{ mountPoint: string; root: string }>, own: string): string | undefined {
  for (const m of mounts) {
    const root = m.root === '/' ? '' : m.root;
    if (root !== '' && own !== root && !own.startsWith(root + '/')) continue;
    const rel = own.slice(root.length);
    return rel === '' || rel === '/' ? m.mountPoint : join(m.mountPoint, rel);
  }
  return undefined;
}

/** The process's cgroup v2 path (the `0::` line of /proc/self/cgroup), or undefined. */
export function ownCgroupPath(procCgroup: string): string | undefined {
  for (const line of procCgroup.split('\n')) if (line.startsWith('0::')) return line.slice(3);
  return undefined;
}

/**
 * Where this slave can put its attempts' cgroups, or why it cannot. Reads /proc only (nothing is
 * made until the first attempt): the cgroup v2 mount, this process's cgroup in it, that the
 * kernel has cgroup.kill, and that the directory is writable by this process.
 */
export function findCgroupPlace(workRoot: string): CgroupPlace | { why: string } {
  if (process.platform !== 'linux') return { why: `cgroups are a Linux feature (this is ${process.platform})` };
  if (!kernelAtLeast(release(), MIN_KERNEL)) return { why: `Linux ${MIN_KERNEL.join('.')} or later is needed for cgroup.kill (this is ${release()})` };
  let mounts: ReturnType<typeof cgroup2Mounts>;
  let own: string | undefined;
  try {
    mounts = cgroup2Mounts(readFileSync('/proc/self/mountinfo', 'utf8'));
    own = ownCgroupPath(readFileSync('/proc/self/cgroup', 'utf8'));
  } catch (e) {
    return { why: `cannot read /proc: ${(e as Error).message}` };
  }
  if (mounts.length === 0) return { why: 'no cgroup v2 hierarchy is mounted' };
  if (own === undefined) return { why: 'this process has no cgroup v2 path (/proc/self/cgroup has no 0:: line)' };
  if (own.endsWith(' (deleted)')) return { why: `this process's cgroup ${own} was removed` };
  const parent = cgroupDirIn(mounts, own);
  if (parent === undefined) return { why: `this process's cgroup ${own} is outside every mounted cgroup v2 tree (${mounts.map((m) => `${m.mountPoint} shows ${m.root}`).join(', ')})` };
  try {
    accessSync(parent, constants.W_OK);
  } catch (e) {
    return { why: `cannot make cgroups in ${parent} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); under systemd, run the slave with Delegate=yes` };
  }
  const tag = createHash('sha256').update(workRoot).digest('hex').slice(0, 10);
  return { parent, prefix: `builder-${tag}-` };
}

function isDigits(s: string): boolean {
  return /^[0-9]+$/.test(s);
}

/** One attempt's cgroup. All calls are synchronous: cgroupfs answers from memory (tens of microseconds). */
export class AttemptCgroup {
  private constructor(readonly path: string) {}

  /** The cgroup of `name` under `place`, made now (one that a previous slave process left is emptied first). */
  static make(place: CgroupPlace, name: string): AttemptCgroup {
    const cg = new AttemptCgroup(join(place.parent, place.prefix + name));
    try {
      mkdirSync(cg.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      cg.kill();
    }
    return cg;
  }

  /** An attempt cgroup that exists already (found by sweepCgroups). */
  static existing(path: string): AttemptCgroup {
    return new AttemptCgroup(path);
  }

  /** What the job's process writes its pid to (the native spawner does, before exec). */
  get procsFile(): string {
    return join(this.path, 'cgroup.procs');
  }

  /** The pids in it now, in its sub-cgroups too (a job may make some: a container runtime); none once it is removed. */
  pids(): number[] {
    const out: number[] = [];
    for (const dir of subtree(this.path)) {
      let text: string;
      try {
        text = readFileSync(join(dir, 'cgroup.procs'), 'latin1');
      } catch {
        continue;
      }
      for (const l of text.split('\n')) if (isDigits(l)) out.push(Number(l));
    }
    return out;
  }

  /**
   * Sends `sig` once to every process in it (sub-cgroups included); the number signalled. Two
   * passes over the list, each pid once: a process forked between the first read and the
   * signals is caught by the second (one forked after that gets the SIGKILL of cgroup.kill).
   */
  signal(sig: NodeJS.Signals): number {
    const done = new Set<number>();
    for (let pass = 0; pass < 2; pass++) {
      for (const pid of this.pids()) {
        if (done.has(pid)) continue;
        done.add(pid);
        try {
          process.kill(pid, sig);
        } catch {
          // gone meanwhile
        }
      }
    }
    return done.size;
  }

  /** SIGKILL to every process in it, also those forked meanwhile (cgroup.kill). */
  kill(): void {
    try {
      writeFileSync(join(this.path, 'cgroup.kill'), '1');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  /** Whether a live process is in it (exited ones, zombies included, are not). */
  populated(): boolean {
    try {
      return /^populated 1$/m.test(readFileSync(join(this.path, 'cgroup.events'), 'latin1'));
    } catch {
      return false;
    }
  }

  /** Removes it, its sub-cgroups first (if the job made any); false when one still holds a process (EBUSY). */
  remove(): boolean {
    try {
      rmdirSync(this.path);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return true;
      if (code !== 'EBUSY') throw e;
    }
    // Busy: processes, or sub-cgroups to remove first.
    let all = true;
    for (const dir of subtree(this.path).reverse()) {
      try {
        rmdirSync(dir);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue;
        if (code === 'EBUSY') {
          all = false;
          continue;
        }
        throw e;
      }
    }
    return all;
  }

  /**
   * Empties (cgroup.kill) and removes it, waiting up to `waitMs` for the killed processes to
   * be gone (the kill is asynchronous: an rmdir right after it finds them still there). Resolves
   * false when it could not be removed (a process in uninterruptible sleep); never rejects.
   */
  async killAndRemove(waitMs: number): Promise<boolean> {
    try {
      if (this.remove()) return true;
      this.kill();
      const deadline = Date.now() + waitMs;
      for (;;) {
        await new Promise((r) => setTimeout(r, 20));
        if (this.remove()) return true;
        if (Date.now() >= deadline) return false;
      }
    } catch {
      return false;
    }
  }
}

/**
 * At slave start-up: SIGKILLs what is left in the attempt cgroups a previous process of this
 * slave made (its jobs that outlived it, whatever their process group), waits up to `waitMs` for
 * them to die, and removes the cgroups. Returns the names it found and those it could not remove.
 */
export async function sweepCgroups(place: CgroupPlace, waitMs = 5_000): Promise<{ found: string[]; left: string[] }> {
  let names: string[];
  try {
    names = readdirSync(place.parent).filter((n) => n.startsWith(place.prefix));
  } catch {
    return { found: [], left: [] };
  }
  const cgs = names.map((n) => AttemptCgroup.existing(join(place.parent, n)));
  const removed = await Promise.all(cgs.map((cg) => cg.killAndRemove(waitMs)));
  return { found: names, left: cgs.filter((_, i) => !removed[i]).map((cg) => cg.path) };
}

/** `dir` and every directory under it (its sub-cgroups), parents before children. */
function subtree(dir: string): string[] {
  const out = [dir];
  for (let i = 0; i < out.length; i++) {
    let entries;
    try {
      entries = readdirSync(out[i]!, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) if (e.isDirectory()) out.push(join(out[i]!, e.name));
  }
  return out;
}
