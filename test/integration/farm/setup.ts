/**
 * Shared pieces of the end-to-end farm tests: the short timings the tests pass as flags, gates
 * that hold a job until the test lets it go, and readers for what the slave and the jobs record.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitFor, type ProcessFarm } from '../../helpers/process-farm.js';
import { isAlive } from '../../helpers/procs.js';
import { replaySlots } from '../../helpers/slot-record.js';
import { readSlotRecord as readSlotRecordFile, type SlotRecordLine } from '../../../slave/index.js';

/**
 * `master run` flags that shorten the waits of a failure (docs/master.md). `grace` is how long a
 * slave that dropped its connection has to come back before its jobs go back to the queue.
 */
export function masterTimings(o: { graceMs: number; acceptTimeoutMs?: number }): string[] {
  return ['--slave-grace', `${o.graceMs}ms`, '--accept-timeout', `${o.acceptTimeoutMs ?? 5000}ms`];
}

/** `slave run` flags: a short SIGTERM-to-SIGKILL grace for timeouts and cancels (docs/slave.md). */
export function slaveTimings(o: { killGraceMs: number }): string[] {
  return ['--kill-grace', `${o.killGraceMs}ms`];
}

/** Quotes a string for /bin/sh. */
export function sh(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * A file-based gate: a job script made with `waitLine()` blocks until the test calls `open()`.
 * The file lives in the farm's temp dir, which the job (same user) can read.
 */
export class Gate {
  readonly path: string;
  constructor(farm: ProcessFarm, name: string) {
    this.path = join(farm.root, `gate-${name}`);
  }
  /** A shell line that waits (polling every 50 ms) until the gate is open. */
  waitLine(): string {
    return `while [ ! -e ${sh(this.path)} ]; do sleep 0.05; done`;
  }
  async open(): Promise<void> {
    await writeFile(this.path, 'open\n');
  }
}

/**
 * A file every job script appends one line to (`<job id> <attempt> <event> <ns time> <workdir>`):
 * the jobs' own record of what ran, where and when, independent of the master and the slave.
 */
export class RunLog {
  readonly path: string;
  constructor(farm: ProcessFarm, name = 'runs') {
    this.path = join(farm.root, `${name}.log`);
  }
  line(event: string): string {
    return `echo "$BUILDER_JOB_ID $BUILDER_ATTEMPT ${event} $(date +%s%N) $BUILDER_WORKDIR" >> ${sh(this.path)}`;
  }
  async read(): Promise<Array<{ jobId: number; attempt: number; event: string; atNs: bigint; workdir: string }>> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [jobId, attempt, event, at, workdir] = l.split(' ');
        return { jobId: Number(jobId), attempt: Number(attempt), event: event!, atNs: BigInt(at!), workdir: workdir! };
      });
  }
}

/**
 * Reads a slave's slot record, `DIR/slot-record.jsonl` with its previous generation `.1` (the
 * slave appends to it as attempts start and end, and rotates it at a size bound): each slave
 * process starts with `open` and, when stopped cleanly, ends with `close`.
 */
export async function readSlotRecord(slaveDir: string): Promise<SlotRecordLine[]> {
  return readSlotRecordFile(join(slaveDir, 'slot-record.jsonl'));
}

/** The start and end events of the record, in order. */
export function slotEvents(rec: readonly SlotRecordLine[]): Array<Extract<SlotRecordLine, { event: 'start' | 'end' }>> {
  return rec.flatMap((e) => (e.event === 'start' || e.event === 'end' ? [e] : []));
}

/**
 * The most slots in use at once, replayed from the record's start and end events (not from the
 * slave's own `usedAfter` figure, which is checked separately): see replaySlots.
 */
export function maxConcurrentSlots(rec: readonly SlotRecordLine[]): number {
  return replaySlots(rec).max;
}

export type { SlotRecordLine };

export { isAlive };

/** Waits for a file a job writes (e.g. a pid) and returns its trimmed content. */
export async function waitForFile(path: string, timeoutMs = 20_000): Promise<string> {
  return waitFor(
    `file ${path}`,
    async () => {
      try {
        await access(path);
      } catch {
        return undefined;
      }
      const t = (await readFile(path, 'utf8')).trim();
      return t.length > 0 ? t : undefined;
    },
    timeoutMs,
  );
}
