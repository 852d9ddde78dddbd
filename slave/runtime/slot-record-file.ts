import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import type { SlotEvent } from '../executor/index.js';

/** One line of `slot-record.jsonl`. */
export type SlotRecordLine =
  | { event: 'open'; pid: number; capacity: number; at: number }
  | { event: 'start' | 'end'; key: string; slots: number; usedAfter: number; capacity: number; at: number }
  /** The first line of a file started by a rotation: `used` slots were in use at that point. */
  | { event: 'rotate'; pid: number; capacity: number; used: number; at: number }
  | { event: 'close'; pid: number; at: number };

/** Default size bound of the slot record (one file; with the previous generation about twice that on disk). */
export const SLOT_RECORD_DEFAULT_MAX_BYTES = 8 * 1024 * 1024;
/** Smallest size bound allowed: room for a few lines, so that a rotation never follows a rotation. */
export const SLOT_RECORD_MIN_MAX_BYTES = 1024;

/** Options of a {@link SlotRecordFile}. */
export interface SlotRecordFileOptions {
  /**
   * Size bound of the file: a line that would take it past this goes to a new file, and the full
   * one becomes `<path>.1` (replacing the generation before it). Default 8 MiB, at least 1 KiB.
   */
  maxBytes?: number;
}

/** The previous generation of the record at `path`. */
export function previousSlotRecordPath(path: string): string {
  return `${path}.1`;
}

/**
 * The slave's own record of the slots it used, appended to a file as each attempt takes or
 * releases its slots (synchronously, in the order the slot pool saw them), so that a test or an
 * operator can check "never more than capacity at once" from outside the process, even after it
 * was killed. Append-only across restarts: each process starts with an `open` line.
 *
 * Rotated at `maxBytes`: the file is renamed to `<path>.1` and a new one begins with a `rotate`
 * line that carries the slots in use, so that a replay of either generation alone starts from
 * the right count. Every line goes to exactly one file, in order; {@link readSlotRecord} reads
 * both generations as one consistent record.
 */
export class SlotRecordFile {
  private fd: number | undefined;
  private size: number;
  /** The open file is still the one at `path` (false after a rotation renamed it but could not open the new file). */
  private atPath = true;
  private used = 0;
  readonly maxBytes: number;

  constructor(
    readonly path: string,
    private readonly capacity: number,
    options: SlotRecordFileOptions = {},
  ) {
    this.maxBytes = compileMaxBytes(options.maxBytes);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.fd = openSync(path, 'a+', 0o600);
    this.size = fstatSync(this.fd).size;
    this.endPartialLine();
    this.write({ event: 'open', pid: process.pid, capacity, at: Date.now() });
  }

  /**
   * Ends a line an earlier process left unfinished (a crash in the middle of a write), so that
   * it stays one bad line of its own and does not swallow this process's `open`.
   */
  private endPartialLine(): void {
    if (this.fd === undefined || this.size === 0) return;
    const last = Buffer.alloc(1);
    readSync(this.fd, last, 0, 1, this.size - 1);
    if (last[0] !== 0x0a) {
      writeSync(this.fd, '\n');
      this.size += 1;
    }
  }

  /** Records one event of the slot pool. */
  onSlotEvent(e: SlotEvent): void {
    try {
      this.write({ event: e.event, key: e.key, slots: e.slots, usedAfter: e.usedAfter, capacity: this.capacity, at: e.at });
    } finally {
      // Kept also when the write failed: the next rotate line must tell the pool's count.
      this.used = e.usedAfter;
    }
  }

  private write(line: SlotRecordLine): void {
    if (this.fd === undefined) return;
    const text = JSON.stringify(line) + '\n';
    const bytes = Buffer.byteLength(text);
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate(line.event === 'open', line.at);
    writeSync(this.fd, text);
    this.size += bytes;
  }

  /**
   * Moves the full file to `<path>.1` and continues in a new one. A failure (a full disk, a
   * directory in the way) loses no line: the lines go on into the old file, and the next line
   * tries again.
   */
  private rotate(opening: boolean, at: number): void {
    if (this.fd === undefined) return;
    if (this.atPath) {
      try {
        renameSync(this.path, previousSlotRecordPath(this.path));
      } catch {
        return;
      }
      this.atPath = false;
    }
    let fd: number;
    try {
      fd = openSync(this.path, 'a', 0o600);
    } catch {
      // Lines go on into the renamed file (now `.1`), still in order before any later file.
      return;
    }
    closeSync(this.fd);
    this.fd = fd;
    this.atPath = true;
    this.size = fstatSync(fd).size;
    // An `open` line needs no state: nothing of an earlier process runs in this one.
    if (!opening) {
      const text = JSON.stringify({ event: 'rotate', pid: process.pid, capacity: this.capacity, used: this.used, at } satisfies SlotRecordLine) + '\n';
      writeSync(fd, text);
      this.size += Buffer.byteLength(text);
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    this.write({ event: 'close', pid: process.pid, at: Date.now() });
    closeSync(this.fd);
    this.fd = undefined;
  }
}

function compileMaxBytes(v: number | undefined): number {
  const x = v ?? SLOT_RECORD_DEFAULT_MAX_BYTES;
  if (!Number.isSafeInteger(x) || x < SLOT_RECORD_MIN_MAX_BYTES) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `invalid slotRecordMaxBytes ${String(v)}: must be an integer of at least ${SLOT_RECORD_MIN_MAX_BYTES}`);
  }
  return x;
}

/** How often {@link readSlotRecord} reads again when the record rotated under it. */
const READ_TRIES = 100;

/**
 * Reads the slot record at `path` with its previous generation (`<path>.1`), oldest line first:
 * a consistent snapshot, also while the slave writes and rotates it. A last line still being
 * written (no newline yet) is left out. No file at all is an empty record.
 *
 * How the snapshot holds: the current file is opened first and its inode kept open, then `.1`;
 * then `path` must still name that inode. Only a rotation moves it away (and an inode held open
 * is never reused), so if it still does, no rotation happened in between and `.1` is the
 * generation just before it; otherwise the read starts again. The opens are synchronous, a few
 * system calls in a row, so that a rotation rarely falls between them.
 */
export function readSlotRecord(path: string): Promise<SlotRecordLine[]> {
  try {
    for (let i = 0; i < READ_TRIES; i++) {
      const got = readOnce(path);
      if (got !== undefined) return Promise.resolve(got);
    }
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
  return Promise.reject(new BuilderError('BUILDER_ERR_BAD_STATE', `the slot record ${path} rotated on every one of ${READ_TRIES} reads`));
}

function readOnce(path: string): SlotRecordLine[] | undefined {
  const cur = openIfThere(path);
  try {
    const prev = openIfThere(previousSlotRecordPath(path));
    try {
      // Still the current file after `.1` was opened: no rotation in between, so `.1` is the
      // generation just before it. What is read from the two descriptors is then one record,
      // whatever rotations happen while it is read.
      let now: number | undefined;
      try {
        now = statSync(path).ino;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      if (now !== (cur === undefined ? undefined : fstatSync(cur).ino)) return undefined;
      const prevText = prev === undefined ? '' : readFileSync(prev, 'utf8');
      const curText = cur === undefined ? '' : readFileSync(cur, 'utf8');
      return [...parseLines(prevText, previousSlotRecordPath(path)), ...parseLines(curText, path)];
    } finally {
      if (prev !== undefined) closeSync(prev);
    }
  } finally {
    if (cur !== undefined) closeSync(cur);
  }
}

function openIfThere(path: string): number | undefined {
  try {
    return openSync(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * The complete lines of `text`. An unfinished last line is not written yet (the writer is in the
 * middle of it) and is left out; an unreadable complete line is an error, not skipped.
 */
function parseLines(text: string, path: string): SlotRecordLine[] {
  const parts = text.split('\n');
  parts.pop();
  return parts.map((l, i) => {
    try {
      return JSON.parse(l) as SlotRecordLine;
    } catch {
      throw new BuilderError('BUILDER_ERR_BAD_STATE', `line ${i + 1} of the slot record ${path} is not JSON`);
    }
  });
}
