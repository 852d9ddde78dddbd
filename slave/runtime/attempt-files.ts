import { closeSync, constants, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { BuilderError } from '../../protocol/errors.js';
import { join } from 'node:path';
import { checkAttemptKey, FIRST_SEGMENT_NAME, listSpools, openEmpty } from '../spool/index.js';

/** What the slave keeps about an accepted attempt (the journal's `accepted` line). */
export interface AttemptRecord {
  readonly jobId: number;
  readonly attempt: number;
  readonly slots: number;
  readonly name: string;
  readonly acceptedAt: number;
}

/** An entry of BUILDER_OUTPUT that was not uploaded, and why (as attempt.finish carries it). */
export interface RefusedItem {
  readonly path: string;
  readonly reason: string;
  readonly detail?: string;
}

/** How an attempt ended on the slave (the journal's `outcome` line), written once the process is gone. */
export interface StoredOutcome {
  readonly state: 'succeeded' | 'failed' | 'timed_out' | 'cancelled';
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly reason: string | null;
  readonly setupFailure: boolean;
  readonly refused: RefusedItem[];
  readonly conflicts: Array<{ path: string; inputSha256: string; artifactSha256: string }>;
  /** Every collected artifact, with its local path (the upload source). */
  readonly artifacts: Array<{ path: string; absPath: string; size: number; sha256: string }>;
  readonly lastSeq: number;
  /** Output not stored in the spool (its sink failed: a full disk); absent when none. */
  readonly logLostBytes?: number;
}

/** An `upload` line of the journal: an artifact committed on the master, or one the slave gave up on. */
export type UploadEntry = { path: string; size: number; sha256: string } | { path: string; failed: string; detail: string };

/** What the journal of an attempt holds, read back after a restart. */
export interface AttemptJournal {
  readonly record: AttemptRecord | undefined;
  readonly pid: { pid: number; startTime: string | undefined } | undefined;
  readonly outcome: StoredOutcome | undefined;
  readonly uploads: Map<string, UploadEntry>;
}

/** One line of `attempt.jsonl`. */
type JournalLine =
  | ({ t: 'accepted' } & AttemptRecord)
  | { t: 'pid'; pid: number; startTime: string | null }
  | { t: 'outcome'; outcome: StoredOutcome }
  | ({ t: 'upload' } & UploadEntry);

const JOURNAL = 'attempt.jsonl';

/** Names of the recycled attempt dirs in the attempts root (never `<jobId>-<attempt>`, so recovery ignores them). */
const RECYCLED_RE = /^\.recycled\.\d+$/;

/**
 * Attempt dirs kept for reuse: when an attempt is over, its dir (with its journal and first
 * spool segment, emptied) is renamed to `.recycled.<n>` instead of removed, and the next
 * attempt renames it to its own name and truncates the two files when it opens them. No inode
 * is allocated or freed per attempt in the usual case: on a busy slave, ext4's inode allocator
 * (`__ext4_new_inode` -> `find_inode_bit` -> `recently_deleted`) was about 5% of the slave's CPU
 * for the three inodes a no-op attempt made. At most `max` dirs are kept; past that they are
 * removed as before.
 */
export class AttemptDirPool {
  private readonly free: string[] = [];
  private serial = 0;

  constructor(
    readonly root: string,
    readonly max: number,
  ) {}

  /** Dirs ready for reuse now. */
  get size(): number {
    return this.free.length;
  }

  /** True when {@link keep} would take one more dir. */
  get hasRoom(): boolean {
    return this.free.length < this.max;
  }

  /**
   * At start-up: removes the recycled dirs a previous process left (they hold nothing of use;
   * their number is not known to be within `max`). Returns how many were removed.
   */
  async clear(): Promise<number> {
    this.free.length = 0;
    let names: string[];
    try {
      names = readdirSync(this.root);
    } catch (e) {
      // No attempts dir yet (or not a directory: making an attempt's files will say so).
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return 0;
      throw e;
    }
    let n = 0;
    for (const name of names) {
      if (!RECYCLED_RE.test(name)) continue;
      await rm(join(this.root, name), { recursive: true, force: true });
      n++;
    }
    return n;
  }

  /** A recycled dir to rename into place, if any. */
  take(): string | undefined {
    return this.free.pop();
  }

  /** Gives back a dir {@link take} returned that could not be used. */
  putBack(path: string): void {
    this.free.push(path);
  }

  /**
   * Takes in the emptied dir `dir` (renamed to a recycled name). False when the pool is full or
   * the rename failed: the caller removes the dir.
   */
  keep(dir: string): boolean {
    if (this.free.length >= this.max) return false;
    const to = join(this.root, `.recycled.${++this.serial}`);
    try {
      renameSync(dir, to);
    } catch {
      return false;
    }
    this.free.push(to);
    return true;
  }
}

/**
 * The files of one attempt under `<root>/<jobId>-<attempt>/`: what lets a slave lose its master
 * (or be restarted) without losing the attempt's outcome. Two files: `attempt.jsonl`, an
 * append-only journal (`accepted` on accept, `pid` once the job's leader runs, to kill leftovers
 * after a crash, `outcome` once the process is gone, one `upload` per artifact committed), and the
 * log spool's segment (`seg-*.log`, see LogSpool), in the same directory.
 *
 * Why a journal: each file made and removed per attempt is an inode allocated and freed, and on a
 * busy slave (hundreds of short attempts a second) ext4's inode allocator became most of the
 * machine's CPU. Plain appends to one open file replace the earlier attempt.json, pid,
 * outcome.json and uploads.jsonl, and their tmp+rename writes (each rename-replace allocated an
 * inode too). A crash mid-append leaves a torn last line, which is ignored when read back (and cut
 * before appending again): a torn `outcome` means the attempt is treated as still running when
 * the slave stopped (the master requeues it), as a missing outcome.json did before.
 */
export class AttemptFiles {
  readonly dir: string;
  /** The log spool lives in the attempt dir itself (no directory of its own). */
  readonly spoolDir: string;
  readonly journalPath: string;
  private fd: number | undefined;
  /** Bytes of whole lines in the journal: where a failed append is cut back to. */
  private size = 0;

  /**
   * @param pool where a finished attempt's dir goes for reuse, and where {@link create} takes one
   *   from (none: every attempt makes and removes its own).
   */
  constructor(
    root: string,
    readonly jobId: number,
    readonly attempt: number,
    private readonly pool?: AttemptDirPool,
  ) {
    const k = checkAttemptKey(jobId, attempt);
    this.dir = join(root, `${k.jobId}-${k.attempt}`);
    this.spoolDir = this.dir;
    this.journalPath = join(this.dir, JOURNAL);
  }

  /**
   * Makes a fresh attempt dir (removing what an older run of the same attempt left) and starts the
   * journal. With a pool, a recycled dir is renamed into place (see {@link AttemptDirPool}).
   *
   * The journal's operations are synchronous: each is one small system call on a local, private
   * file (no fsync), where a round trip through libuv's thread pool cost about ten times the call
   * itself in CPU (measured: 35 us against 2.6 us per 16-byte write), and a no-op attempt made a
   * dozen of them.
   */
  async create(rec: AttemptRecord): Promise<void> {
    if (!this.reuse()) {
      // The usual case without a recycled dir (no such dir, the root exists) costs one mkdir.
      try {
        mkdirSync(this.dir, { mode: 0o700 });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST' && code !== 'ENOENT') throw e;
        await rm(this.dir, { recursive: true, force: true });
        mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      }
    }
    // A recycled dir's journal is reused (its inode), empty (see openEmpty: not O_TRUNC). O_NOFOLLOW: in depth; the dir is the slave's own.
    this.fd = openEmpty(this.journalPath, constants.O_WRONLY | constants.O_APPEND);
    this.size = 0;
    await this.append({ t: 'accepted', ...rec });
  }

  /**
   * Renames a recycled dir to this attempt's name and removes anything in it but the journal and
   * the first spool segment (which the journal's and the spool's openers truncate). False when
   * there is none, or it cannot be used (this attempt's dir exists and is not empty, say).
   */
  private reuse(): boolean {
    const from = this.pool?.take();
    if (from === undefined) return false;
    try {
      renameSync(from, this.dir);
    } catch {
      this.pool?.putBack(from);
      return false;
    }
    try {
      for (const n of readdirSync(this.dir)) {
        if (n !== JOURNAL && n !== FIRST_SEGMENT_NAME) rmSync(join(this.dir, n), { recursive: true, force: true });
      }
    } catch {
      // Cannot be made clean: start over the usual way (remove it, mkdir).
      rmSync(this.dir, { recursive: true, force: true });
      return false;
    }
    return true;
  }

  /**
   * Reads the journal back (after a restart). Only whole lines count: a torn last line is
   * ignored. Lines that are not JSON or not of a known shape are ignored too.
   */
  async load(): Promise<AttemptJournal> {
    let text: string;
    try {
      text = await readFile(this.journalPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // A dir from an older slave version (attempt.json, pid, ...): only its pid is of use, to kill leftovers.
      return { record: undefined, pid: await this.readLegacyPid(), outcome: undefined, uploads: new Map() };
    }
    let record: AttemptRecord | undefined;
    let pid: AttemptJournal['pid'];
    let outcome: StoredOutcome | undefined;
    const uploads = new Map<string, UploadEntry>();
    const whole = text.slice(0, text.lastIndexOf('\n') + 1);
    for (const line of whole.split('\n')) {
      if (line === '') continue;
      let v: Partial<JournalLine> & Record<string, unknown>;
      try {
        v = JSON.parse(line) as Partial<JournalLine> & Record<string, unknown>;
      } catch {
        continue;
      }
      if (typeof v !== 'object' || v === null) continue;
      switch (v.t) {
        case 'accepted': {
          const r = v as Partial<AttemptRecord>;
          if (r.jobId !== this.jobId || r.attempt !== this.attempt || typeof r.slots !== 'number' || !Number.isSafeInteger(r.slots) || r.slots < 1) break;
          record = { jobId: r.jobId, attempt: r.attempt, slots: r.slots, name: typeof r.name === 'string' ? r.name : '', acceptedAt: typeof r.acceptedAt === 'number' ? r.acceptedAt : 0 };
          break;
        }
        case 'pid': {
          const p = v.pid;
          if (typeof p !== 'number' || !Number.isSafeInteger(p) || p <= 1) break;
          pid = { pid: p, startTime: typeof v.startTime === 'string' ? v.startTime : undefined };
          break;
        }
        case 'outcome': {
          const o = v.outcome as Partial<StoredOutcome> | undefined;
          if (typeof o !== 'object' || o === null || typeof o.state !== 'string' || !Array.isArray(o.artifacts) || !Array.isArray(o.refused) || !Array.isArray(o.conflicts)) break;
          outcome = o as StoredOutcome;
          break;
        }
        case 'upload': {
          if (typeof v.path !== 'string') break;
          const { t: _t, ...e } = v;
          uploads.set(v.path, e as unknown as UploadEntry);
          break;
        }
        default:
          break;
      }
    }
    return { record, pid, outcome, uploads };
  }

  /** Opens the journal of a recovered attempt for more appends, cutting a torn last line first. */
  async reopen(): Promise<void> {
    if (this.fd !== undefined) return;
    const fh = await open(this.journalPath, 'r+');
    try {
      const { size } = await fh.stat();
      const buf = Buffer.alloc(size);
      await fh.read(buf, 0, size, 0);
      const keep = buf.lastIndexOf(0x0a) + 1;
      if (keep < size) await fh.truncate(keep);
      this.size = keep;
    } finally {
      await fh.close();
    }
    this.fd = openSync(this.journalPath, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
  }

  /** Appends one line (synchronously, see {@link create}; so appends never interleave). */
  private async append(line: JournalLine): Promise<void> {
    this.appendNow(Buffer.from(JSON.stringify(line) + '\n'));
  }

  private appendNow(buf: Buffer): void {
    const fd = this.fd;
    if (fd === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'the attempt journal is not open');
    // O_APPEND: each write lands at the end; a short write (a full disk) continues where it stopped.
    let off = 0;
    try {
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      // A failed append (a full disk) leaves no partial line for the next one to be glued onto:
      // cut back to the last whole line (ftruncate needs no free space).
      if (off > 0) {
        try {
          ftruncateSync(fd, this.size);
        } catch {
          // the next reader ignores a torn last line anyway
        }
      }
      throw e;
    }
    this.size += buf.length;
  }

  async writePid(pid: number, startTime: string | undefined): Promise<void> {
    await this.append({ t: 'pid', pid, startTime: startTime ?? null });
  }

  /** The leader's pid and start time as recorded (journal, or the `pid` file of an older slave version). */
  async readPid(): Promise<{ pid: number; startTime: string | undefined } | undefined> {
    return (await this.load()).pid;
  }

  private async readLegacyPid(): Promise<{ pid: number; startTime: string | undefined } | undefined> {
    try {
      const [p, t] = (await readFile(join(this.dir, 'pid'), 'utf8')).trim().split(' ');
      const pid = Number(p);
      if (!Number.isSafeInteger(pid) || pid <= 1) return undefined;
      return { pid, startTime: t === undefined || t === '-' ? undefined : t };
    } catch {
      return undefined;
    }
  }

  async writeOutcome(o: StoredOutcome): Promise<void> {
    await this.append({ t: 'outcome', outcome: o });
  }

  async appendUpload(e: UploadEntry): Promise<void> {
    await this.append({ t: 'upload', ...e });
  }

  /** Closes the journal (the files stay). */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }

  /**
   * Removes the attempt's files (the journal and the spool in its dir; close the spool first).
   * With a pool, the dir is emptied (the journal and the first segment truncated, other entries
   * removed) and kept for reuse instead, when the pool has room.
   */
  async remove(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) {
      // Emptied through the descriptor (when the dir is to be kept), then closed, exactly once.
      let truncated = false;
      try {
        if (this.pool?.hasRoom === true) {
          ftruncateSync(fd, 0);
          truncated = true;
        }
      } catch {
        // removed below instead
      }
      try {
        closeSync(fd);
      } catch {
        // nothing more to do with it
      }
      if (truncated && this.emptyForReuse(true) && this.pool?.keep(this.dir) === true) return;
    } else if (this.pool?.hasRoom === true && this.emptyForReuse(false) && this.pool.keep(this.dir)) {
      return;
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Empties the dir for a pool: the journal (unless `journalDone`) and the first segment
   * truncated, anything else removed. False if it could not be.
   */
  private emptyForReuse(journalDone: boolean): boolean {
    try {
      for (const n of readdirSync(this.dir)) {
        if (n === JOURNAL && journalDone) continue;
        const p = join(this.dir, n);
        if (n === JOURNAL || n === FIRST_SEGMENT_NAME) truncateSync(p, 0);
        else rmSync(p, { recursive: true, force: true });
      }
      return true;
    } catch {
      return false;
    }
  }
}

/** The attempt dirs under `root` (`<jobId>-<attempt>` with an integer job id); other entries are ignored. */
export async function listAttemptDirs(root: string): Promise<Array<{ jobId: number; attempt: number; name: string }>> {
  const out: Array<{ jobId: number; attempt: number; name: string }> = [];
  for (const d of await listSpools(root)) {
    // The master's job ids are integers; any other name is not an attempt of ours.
    if (!/^\d{1,15}$/.test(d.jobId) || Number(d.jobId) < 1) continue;
    out.push({ jobId: Number(d.jobId), attempt: d.attempt, name: `${d.jobId}-${d.attempt}` });
  }
  return out;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), to tell a pid from a recycled one. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  return processStartTimeSync(pid);
}

/**
 * {@link processStartTime}, synchronously: /proc is in memory, and its read through the thread
 * pool (open, fstat, read, close: four round trips) cost ten times the CPU of this (measured 163
 * against 17 us).
 */
export function processStartTimeSync(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}
