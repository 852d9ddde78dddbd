import { lstatSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { checkAttemptKey } from '../spool/index.js';
import { checkAttemptSpec, type AttemptSpec } from './attempt-spec.js';
import { compileExecutorOptions, type CompiledExecutorOptions, type ExecutorOptions } from './executor-options.js';
import type { LogSink } from './output-batcher.js';
import { runAttempt, type AttemptHandle } from './run-attempt.js';
import { SlotPool, type SlotRecord } from './slot-pool.js';
import { removeTree, setAside, slotsRoot, TRASH_PREFIX } from './work-dir.js';

/** One attempt the executor is running. */
export interface RunningAttempt {
  readonly jobId: string;
  readonly attempt: number;
  readonly slots: number;
  readonly pid: number | undefined;
}

/**
 * The slave's executor: runs attempts in at most `capacity` slots at once, cancels by job id,
 * and drains. Transport-free: the agent turns `job.run` into {@link start}, `job.cancel` into
 * {@link cancel}, and SIGTERM into {@link shutdown}.
 */
export class Executor {
  readonly options: CompiledExecutorOptions;
  readonly pool: SlotPool;
  private readonly attempts = new Map<string, AttemptHandle>();

  constructor(options: ExecutorOptions) {
    this.options = compileExecutorOptions(options);
    this.pool = new SlotPool(this.options.capacity, { now: this.options.now, maxRecordEvents: this.options.maxRecordEvents, onEvent: this.options.onSlotEvent });
  }

  /** Free slots now (0 while draining). */
  get freeSlots(): number {
    return this.pool.free;
  }

  get draining(): boolean {
    return this.pool.draining;
  }

  /**
   * Starts an attempt if its slots are free. Throws BUILDER_ERR_UNAVAILABLE when draining or
   * full (the master should not have sent it), BUILDER_ERR_CONFLICT when the job already runs
   * here, BUILDER_ERR_INVALID_INPUT / _INVALID_NAME for a bad spec. The slots are released when
   * the attempt's result is ready (process gone, log flushed, artifacts collected).
   */
  start(spec: AttemptSpec, log: LogSink): AttemptHandle {
    const checked = checkAttemptSpec(spec, this.options);
    if (this.attempts.has(checked.jobId)) throw new BuilderError('BUILDER_ERR_CONFLICT', `job ${checked.jobId} is already running here`);
    const lease = this.pool.tryAcquire(`${checked.jobId}-${checked.attempt}`, checked.slots);
    if (lease === undefined) {
      throw new BuilderError('BUILDER_ERR_UNAVAILABLE', this.pool.draining ? 'slave is draining' : `not enough free slots (${this.pool.free} free, ${checked.slots} needed)`);
    }
    let handle: AttemptHandle;
    try {
      handle = runAttempt(spec, log, this.options, lease.indices[0] ?? 0);
    } catch (e) {
      lease.release();
      throw e;
    }
    this.attempts.set(checked.jobId, handle);
    void handle.result.finally(() => {
      this.attempts.delete(checked.jobId);
      lease.release();
    });
    return handle;
  }

  /** Cancels the running attempt of `jobId` (SIGTERM, then SIGKILL to its group). False if none runs. */
  cancel(jobId: string | number): boolean {
    const h = this.attempts.get(String(jobId));
    if (h === undefined) return false;
    h.cancel();
    return true;
  }

  /** The attempt of `jobId` running now, if any. */
  get(jobId: string | number): AttemptHandle | undefined {
    return this.attempts.get(String(jobId));
  }

  running(): RunningAttempt[] {
    return [...this.attempts.values()].map((h) => ({ jobId: h.jobId, attempt: h.attempt, slots: h.slots, pid: h.pid }));
  }

  /**
   * Removes what a finished attempt kept of its work dir (`<workRoot>/<jobId>-<attempt>`: its
   * output, or the whole dir with keepWorkDirs), after its artifacts and log reached the master.
   * Refuses while that attempt runs.
   */
  async removeWorkDir(jobId: string | number, attempt: number): Promise<void> {
    const k = checkAttemptKey(jobId, attempt);
    const running = this.attempts.get(k.jobId);
    if (running !== undefined && running.attempt === k.attempt) throw new BuilderError('BUILDER_ERR_BAD_STATE', `job ${k.jobId} attempt ${k.attempt} is still running`);
    const path = join(this.options.workRoot, `${k.jobId}-${k.attempt}`);
    // The usual case (a job that left no output) kept nothing: one synchronous lstat says so.
    if (!existsNoFollow(path)) return;
    await removeTree(path);
  }

  /**
   * At start-up (nothing runs yet, leftover processes already killed): every slot work dir a
   * previous process left is set aside ({@link setAside}) and made anew by its next attempt, so
   * that a process of an earlier job that outlived the slave (and still has a directory of it
   * as its cwd) cannot see or change the next job's files; then
   * every `.trash-*` is removed. Returns what could not be moved or removed (the slave goes on:
   * a trash it could not remove takes disk space, nothing else).
   */
  async resetWorkDirs(): Promise<Array<{ path: string; message: string }>> {
    if (this.attempts.size > 0) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'work dirs are reset only before any attempt runs');
    const workRoot = this.options.workRoot;
    const problems: Array<{ path: string; message: string }> = [];
    const stamp = Date.now();
    for (const n of await namesIn(slotsRoot(workRoot))) {
      const path = join(slotsRoot(workRoot), n);
      try {
        await setAside(workRoot, path, stamp);
      } catch (e) {
        problems.push({ path, message: (e as Error).message });
      }
    }
    for (const n of await namesIn(workRoot)) {
      if (!n.startsWith(TRASH_PREFIX)) continue;
      try {
        await removeTree(join(workRoot, n));
      } catch (e) {
        problems.push({ path: join(workRoot, n), message: (e as Error).message });
      }
    }
    return problems;
  }

  /** The slot pool's own record of what ran concurrently. */
  record(): SlotRecord {
    return this.pool.record();
  }

  drain(): void {
    this.pool.drain();
  }

  undrain(): void {
    this.pool.undrain();
  }

  /** Drains and waits up to `deadlineMs` for the running attempts to end. */
  drainAndWait(deadlineMs: number): Promise<{ drained: boolean; running: string[] }> {
    return this.pool.drainAndWait(deadlineMs);
  }

  /**
   * For SIGTERM: drain, wait up to `deadlineMs`, then cancel what still runs and wait for those
   * attempts to end (their kill grace included). Resolves with the job ids that were cancelled.
   */
  async shutdown(deadlineMs: number): Promise<{ drained: boolean; cancelled: string[] }> {
    const r = await this.pool.drainAndWait(deadlineMs);
    if (r.drained) return { drained: true, cancelled: [] };
    const left = [...this.attempts.values()];
    for (const h of left) h.cancel();
    await Promise.all(left.map((h) => h.result));
    return { drained: false, cancelled: left.map((h) => h.jobId) };
  }
}

/** True unless `path` is missing (an lstat: a symlink counts as there). */
function existsNoFollow(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** The entries of a directory; none when it does not exist. */
async function namesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}
