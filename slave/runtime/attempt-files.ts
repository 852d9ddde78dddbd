import { appendFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkAttemptKey, listSpools } from '../spool/index.js';

/** What the slave keeps about an accepted attempt (`attempt.json`). */
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

/** How an attempt ended on the slave (`outcome.json`), written once the process is gone. */
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
}

/** One line of `uploads.jsonl`: an artifact committed on the master, or one the slave gave up on. */
export type UploadEntry = { path: string; size: number; sha256: string } | { path: string; failed: string; detail: string };

/**
 * The files of one attempt under `<dir>/attempts/<jobId>-<attempt>/`. They are what lets a slave
 * lose its master (or be restarted) without losing the attempt's outcome: `attempt.json` (written
 * on accept), `pid` (the leader's pid and start time, to kill leftovers after a crash), `spool/`
 * (the log), `outcome.json` (written once the process is gone) and `uploads.jsonl` (appended as
 * each artifact is committed).
 */
export class AttemptFiles {
  readonly dir: string;
  readonly spoolDir: string;

  constructor(
    root: string,
    readonly jobId: number,
    readonly attempt: number,
  ) {
    const k = checkAttemptKey(jobId, attempt);
    this.dir = join(root, `${k.jobId}-${k.attempt}`);
    this.spoolDir = join(this.dir, 'spool');
  }

  /** Makes a fresh attempt dir (removing what an older run of the same attempt left) and writes attempt.json. */
  async create(rec: AttemptRecord): Promise<void> {
    // The usual case (no such dir, the root exists) costs one mkdir.
    try {
      await mkdir(this.dir, { mode: 0o700 });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOENT') throw e;
      await rm(this.dir, { recursive: true, force: true });
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
    }
    await writeJson(join(this.dir, 'attempt.json'), rec);
  }

  async readRecord(): Promise<AttemptRecord | undefined> {
    const v = await readJson(join(this.dir, 'attempt.json'));
    if (typeof v !== 'object' || v === null) return undefined;
    const r = v as Partial<AttemptRecord>;
    if (r.jobId !== this.jobId || r.attempt !== this.attempt || typeof r.slots !== 'number' || !Number.isSafeInteger(r.slots) || r.slots < 1) return undefined;
    return { jobId: r.jobId, attempt: r.attempt, slots: r.slots, name: typeof r.name === 'string' ? r.name : '', acceptedAt: typeof r.acceptedAt === 'number' ? r.acceptedAt : 0 };
  }

  async writePid(pid: number, startTime: string | undefined): Promise<void> {
    await writeFile(join(this.dir, 'pid'), `${pid} ${startTime ?? '-'}\n`, { mode: 0o600 });
  }

  async readPid(): Promise<{ pid: number; startTime: string | undefined } | undefined> {
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
    await writeJson(join(this.dir, 'outcome.json'), o);
  }

  async readOutcome(): Promise<StoredOutcome | undefined> {
    const v = await readJson(join(this.dir, 'outcome.json'));
    if (typeof v !== 'object' || v === null) return undefined;
    const o = v as Partial<StoredOutcome>;
    if (typeof o.state !== 'string' || !Array.isArray(o.artifacts) || !Array.isArray(o.refused) || !Array.isArray(o.conflicts)) return undefined;
    return v as StoredOutcome;
  }

  async appendUpload(e: UploadEntry): Promise<void> {
    await appendFile(join(this.dir, 'uploads.jsonl'), JSON.stringify(e) + '\n', { mode: 0o600 });
  }

  /** The upload entries so far; a torn last line (a crash mid-append) is ignored, so that artifact is uploaded again. */
  async readUploads(): Promise<Map<string, UploadEntry>> {
    const out = new Map<string, UploadEntry>();
    let text: string;
    try {
      text = await readFile(join(this.dir, 'uploads.jsonl'), 'utf8');
    } catch {
      return out;
    }
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const e = JSON.parse(line) as UploadEntry;
        if (typeof e.path === 'string') out.set(e.path, e);
      } catch {
        // torn line
      }
    }
    return out;
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
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

async function writeJson(path: string, v: unknown): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(v), { mode: 0o600 });
  // Atomic replace: a crash leaves the old file or the new one, never half of one.
  await rename(tmp, path);
}

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), to tell a pid from a recycled one. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}
