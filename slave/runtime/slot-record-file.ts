import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { SlotEvent } from '../executor/index.js';

/** One line of `slot-record.jsonl`. */
export type SlotRecordLine =
  | { event: 'open'; pid: number; capacity: number; at: number }
  | { event: 'start' | 'end'; key: string; slots: number; usedAfter: number; capacity: number; at: number }
  | { event: 'close'; pid: number; at: number };

/**
 * The slave's own record of the slots it used, appended to a file as each attempt takes or
 * releases its slots (synchronously, in the order the slot pool saw them), so that a test or an
 * operator can check "never more than capacity at once" from outside the process, even after it
 * was killed. Append-only across restarts: each process starts with an `open` line.
 */
export class SlotRecordFile {
  private fd: number | undefined;

  constructor(
    readonly path: string,
    private readonly capacity: number,
  ) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.fd = openSync(path, 'a', 0o600);
    this.write({ event: 'open', pid: process.pid, capacity, at: Date.now() });
  }

  /** Records one event of the slot pool. */
  onSlotEvent(e: SlotEvent): void {
    this.write({ event: e.event, key: e.key, slots: e.slots, usedAfter: e.usedAfter, capacity: this.capacity, at: e.at });
  }

  private write(line: SlotRecordLine): void {
    if (this.fd === undefined) return;
    writeSync(this.fd, JSON.stringify(line) + '\n');
  }

  close(): void {
    if (this.fd === undefined) return;
    this.write({ event: 'close', pid: process.pid, at: Date.now() });
    closeSync(this.fd);
    this.fd = undefined;
  }
}
