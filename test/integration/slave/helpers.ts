import { readFile } from 'node:fs/promises';
import type { LogChunk } from '../../../slave/spool/index.js';
import type { LogSink } from '../../../slave/executor/index.js';
import { isAlive } from '../../helpers/procs.js';

/** A log sink that keeps every chunk in memory (small outputs only). */
export class MemorySink implements LogSink {
  readonly chunks: LogChunk[] = [];
  private listeners: Array<() => void> = [];
  async append(chunks: readonly LogChunk[]): Promise<void> {
    this.chunks.push(...chunks.map((c) => ({ ...c, data: Buffer.from(c.data) })));
    for (const f of this.listeners.splice(0)) f();
  }
  text(stream?: 'stdout' | 'stderr'): string {
    return Buffer.concat(this.chunks.filter((c) => stream === undefined || c.stream === stream).map((c) => c.data)).toString('utf8');
  }
  /** Resolves once the captured output of `stream` contains `s`. */
  async waitFor(s: string, stream?: 'stdout' | 'stderr'): Promise<void> {
    while (!this.text(stream).includes(s)) await new Promise<void>((r) => this.listeners.push(r));
  }
}

/** Polls `cond` every 10 ms until it is true (the mocha timeout bounds it). */
export async function waitUntil(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 10));
}

export { isAlive };

/** Reads a pid a job script wrote to a file. */
export async function readPid(path: string): Promise<number> {
  const pid = Number((await readFile(path, 'utf8')).trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new Error(`no pid in ${path}`);
  return pid;
}

/** Tracks processes a test started and SIGKILLs any still alive (by pid, and their group). */
export class ProcessReaper {
  private pids = new Set<number>();
  private groups = new Set<number>();
  addPid(pid: number | undefined): void {
    if (pid !== undefined) this.pids.add(pid);
  }
  addGroup(pgid: number | undefined): void {
    if (pgid !== undefined) this.groups.add(pgid);
  }
  async reap(): Promise<void> {
    for (const g of this.groups) {
      try {
        process.kill(-g, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    for (const p of this.pids) {
      if (await isAlive(p)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    }
    this.pids.clear();
    this.groups.clear();
  }
}
