import { spawn } from 'node:child_process';
import { constants, lstatSync, opendirSync, readdirSync, readFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BuilderError } from '../../protocol/errors.js';
import { collectArtifacts, indexFiles, type ArtifactScan } from '../artifacts/index.js';
import { LogSpool } from '../spool/index.js';
import { checkAttemptSpec, type AttemptSpec, type CheckedAttemptSpec } from './attempt-spec.js';
import { AttemptCgroup } from './cgroup.js';
import type { CompiledExecutorOptions } from './executor-options.js';
import { nativeSpawn } from './native-spawn.js';
import { OutputBatcher, type LogSink } from './output-batcher.js';
import { userNameOf } from './user-name.js';
import { removeTree, resetWorkDir, setAside, slotWorkDir } from './work-dir.js';

/** How an attempt ended, in the master's terms. */
export type AttemptOutcome = 'succeeded' | 'failed' | 'timed_out' | 'cancelled';

/** What one attempt did. */
export interface AttemptResult {
  readonly jobId: string;
  readonly attempt: number;
  readonly outcome: AttemptOutcome;
  /** The leader's exit code, or null when a signal ended it (or it never ran). */
  readonly exitCode: number | null;
  /** The signal that ended the leader (e.g. `SIGSEGV`, `SIGKILL`), or null. */
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly cancelled: boolean;
  /** Processes were left in the group (or the attempt's cgroup) after the leader exited and were killed. */
  readonly leftoversKilled: boolean;
  /** The pipes stayed open (held outside the group) past `pipeCloseTimeoutMs`; the executor closed its ends. */
  readonly pipesForcedClosed: boolean;
  readonly pid: number | undefined;
  /** Where the job ran (its slot's work dir: emptied again by the time the result is ready). */
  readonly workDir: string;
  /**
   * What is left of the work dir after the attempt, at `<workRoot>/<jobId>-<attempt>`: the
   * output dir when the job left files in it (the artifacts' `absPath`s point there), or the
   * whole work dir with `keepWorkDirs`; undefined when nothing was kept. Removed by
   * Executor.removeWorkDir.
   */
  readonly keptDir: string | undefined;
  /** The last log seq written (firstSeq - 1 when the job printed nothing). */
  readonly lastSeq: number;
  readonly stdoutBytes: number;
  readonly stderrBytes: number;
  /** Output that could not be stored because the log sink failed (e.g. a full disk), and why. */
  readonly logLostBytes: number;
  readonly logError: { code: string; message: string } | undefined;
  /** Why the attempt failed before or around the process (input fetch, spawn), if it did. */
  readonly error: { code: string; message: string } | undefined;
  /** Collected after the process ended, also after a failure; undefined if the work dir was never made. */
  readonly artifacts: ArtifactScan | undefined;
  readonly artifactsError: { code: string; message: string } | undefined;
  readonly startedAt: number;
  readonly endedAt: number;
  readonly durations: { readonly setupMs: number; readonly runMs: number; readonly collectMs: number; readonly totalMs: number };
}

/** A running attempt. */
export interface AttemptHandle {
  readonly jobId: string;
  readonly attempt: number;
  readonly slots: number;
  readonly workDir: string;
  /** Resolves when the attempt is over (never rejects: failures are in the result). */
  readonly result: Promise<AttemptResult>;
  /** The process group leader's pid, once spawned. */
  readonly pid: number | undefined;
  /** SIGTERM to the group, SIGKILL after the grace; before the spawn, the process never starts. */
  cancel(): void;
}

function errInfo(e: unknown): { code: string; message: string } {
  if (e instanceof BuilderError) return { code: e.code, message: e.message };
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return { code: typeof code === 'string' ? code : 'BUILDER_ERR_INTERNAL', message: e instanceof Error ? e.message : String(e) };
}

/**
 * The clean base environment plus the job's env plus the BUILDER_* variables (which win). `user`
 * is the name of the user the job runs as (the runAs uid's, else the slave's: see userNameOf);
 * without one, USER and LOGNAME are left unset.
 */
export function attemptEnv(spec: CheckedAttemptSpec, workDir: string, o: CompiledExecutorOptions, user: string | undefined): Record<string, string> {
  // Security: nothing of the slave's own environment leaks into the job (no credentials, no agent sockets).
  const base: Record<string, string> = {
    PATH: o.path,
    HOME: join(workDir, 'home'),
    LANG: 'C.UTF-8',
    TMPDIR: join(workDir, 'tmp'),
    ...(user === undefined ? {} : { USER: user, LOGNAME: user }),
  };
  return {
    ...base,
    ...spec.env,
    BUILDER_JOB_ID: spec.jobId,
    BUILDER_JOB_NAME: spec.name,
    BUILDER_CHANNEL: spec.channel,
    BUILDER_ARCH: spec.arch,
    BUILDER_ATTEMPT: String(spec.attempt),
    BUILDER_WORKDIR: workDir,
    BUILDER_INPUT: join(workDir, 'input'),
    BUILDER_OUTPUT: join(workDir, 'output'),
  };
}

/**
 * Runs one attempt in slot `slot` (0-based; the Executor passes the first slot of the attempt's
 * lease, so that no two running attempts share one; a caller that runs several attempts itself
 * must do the same): the slot's work dir `<workRoot>/slots/<slot>/` (`build/` = cwd, `home/`,
 * `input/`, `output/`, `tmp/`) checked fresh and empty (see prepareWorkDir), inputs fetched, the
 * process started as the leader of its own process
 * group with a clean environment, its output batched into `log`, a timeout and cancel that
 * SIGTERM then SIGKILL the whole group, and the artifacts collected after it ends (also after a
 * failure). Throws synchronously only for an invalid spec.
 *
 * The attempt ends when the leader has exited, no process is left in its group, and both pipes
 * are closed. Processes left in the group after the leader exits are SIGTERMed at once and
 * SIGKILLed after `killGraceMs`: a grandchild that ignores SIGTERM cannot keep the attempt alive.
 */
export function runAttempt(specIn: AttemptSpec, log: LogSink, o: CompiledExecutorOptions, slot = 0): AttemptHandle {
  const spec = checkAttemptSpec(specIn, o);
  // Every chunk must fit in one spool record, or the whole log would be refused at the first append.
  if (log instanceof LogSpool && log.options.maxRecordBytes < o.maxChunkBytes) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `executor maxChunkBytes (${o.maxChunkBytes}) is above the spool's maxRecordBytes (${log.options.maxRecordBytes})`);
  }
  if (!Number.isSafeInteger(slot) || slot < 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `slot must be a non-negative integer, got ${String(slot)}`);
  return new AttemptRun(spec, log, o, slot);
}

class AttemptRun implements AttemptHandle {
  readonly jobId: string;
  readonly attempt: number;
  readonly slots: number;
  readonly workDir: string;
  readonly result: Promise<AttemptResult>;
  private readonly spec: CheckedAttemptSpec;
  private readonly log: LogSink;
  private readonly o: CompiledExecutorOptions;
  private readonly abort = new AbortController();
  private child: { readonly stdout: Readable; readonly stderr: Readable } | undefined;
  private _pid: number | undefined;
  private timedOut = false;
  private cancelled = false;
  private termSent = false;
  private killTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private pipeTimer: NodeJS.Timeout | undefined;
  private leftoverTimer: NodeJS.Timeout | undefined;
  /** The leader has exited (what is left is being killed, if anything): a cancel changes nothing now. */
  private leaderExited = false;
  /** The attempt's cgroup, when the slave gives attempts one (options.cgroup), from just before the spawn. */
  private cgroup: AttemptCgroup | undefined;
  private finished = false;
  private leftoversKilled = false;
  private pipesForcedClosed = false;

  private readonly keptPath: string;

  constructor(spec: CheckedAttemptSpec, log: LogSink, o: CompiledExecutorOptions, slot: number) {
    this.spec = spec;
    this.log = log;
    this.o = o;
    this.jobId = spec.jobId;
    this.attempt = spec.attempt;
    this.slots = spec.slots;
    this.workDir = slotWorkDir(o.workRoot, slot);
    this.keptPath = join(o.workRoot, `${spec.jobId}-${spec.attempt}`);
    this.result = this.run();
  }

  get pid(): number | undefined {
    return this._pid;
  }

  cancel(): void {
    if (this.finished || this.cancelled) return;
    // The job has ended (its leftovers are being killed): its own outcome stands.
    if (this.leaderExited) return;
    this.cancelled = true;
    this.abort.abort();
    this.terminate();
  }

  /**
   * Sends `sig` to every process of the job, once each: with a cgroup, to each process in it
   * (the group's included; SIGKILL by cgroup.kill, which also reaches what forks meanwhile),
   * else to the process group. Each gets one SIGTERM: many programs take a second as "quit now",
   * which would skip the shutdown the grace is for.
   */
  private signalAll(sig: 'SIGTERM' | 'SIGKILL'): void {
    if (this._pid === undefined || this.finished) return;
    if (this.cgroup !== undefined) {
      try {
        if (sig === 'SIGKILL') this.cgroup.kill();
        else this.cgroup.signal(sig);
        if (sig === 'SIGTERM') return;
      } catch {
        // cgroupfs refused (removed under us): the group, at least
      }
    }
    try {
      // A negative pid addresses the process group the leader created (detached: setsid).
      process.kill(-this._pid, sig);
    } catch {
      // the group is gone
    }
  }

  /**
   * Whether a live process of the job is left: in its cgroup when it has one (whatever their
   * process group), else in its process group. Zombies do not count: where PID 1 does not reap
   * orphans (a container without an init), a dead leftover stays one for good.
   */
  private processesLeft(): boolean {
    if (this._pid === undefined) return false;
    if (this.cgroup !== undefined) return this.cgroup.populated();
    try {
      return groupHasLiveProcess(this._pid);
    } catch {
      // /proc unreadable (EMFILE...): count it as left, the deadline ends the wait.
      return true;
    }
  }

  /** SIGTERM to the group now, SIGKILL after the grace (once, whoever asks first). */
  private terminate(): void {
    if (this._pid === undefined) return;
    if (!this.termSent) {
      this.termSent = true;
      this.signalAll('SIGTERM');
    }
    if (this.killTimer === undefined) {
      this.killTimer = setTimeout(() => {
        this.signalAll('SIGKILL');
      }, this.o.killGraceMs);
    }
  }

  /**
   * Calls `done` once no live process of the job is left: the SIGKILL after the grace ends any
   * holdout. Checks after 20 ms, then less and less often (up to every second: without a
   * cgroup, a check may read all of /proc), and right after the SIGKILL. Gives up after the
   * grace plus `pipeCloseTimeoutMs` (a process in uninterruptible sleep outlives even SIGKILL
   * for a while).
   */
  private whenLeftoversGone(done: () => void): void {
    const killAt = Date.now() + this.o.killGraceMs;
    const deadline = killAt + this.o.pipeCloseTimeoutMs;
    let delay = 20;
    const check = (): void => {
      const now = Date.now();
      if (!this.processesLeft() || now >= deadline) {
        this.leftoverTimer = undefined;
        done();
        return;
      }
      // Next: twice the last wait, at most 1 s, and not past the SIGKILL by more than 20 ms.
      delay = Math.min(delay * 2, 1000);
      const wait = now < killAt ? Math.min(delay, killAt - now + 20) : delay;
      this.leftoverTimer = setTimeout(check, Math.max(wait, 1));
    };
    this.leftoverTimer = setTimeout(check, delay);
  }

  private async run(): Promise<AttemptResult> {
    const o = this.o;
    const startedAt = o.now();
    const dirs = { input: join(this.workDir, 'input'), output: join(this.workDir, 'output'), build: join(this.workDir, 'build'), tmp: join(this.workDir, 'tmp') };
    let exitCode: number | null = null;
    let signal: NodeJS.Signals | null = null;
    let error: { code: string; message: string } | undefined;
    let inputs: Map<string, string> | undefined;
    let workDirMade = false;
    let runStart = startedAt;
    let runEnd = startedAt;
    const batcher = new OutputBatcher(
      this.log,
      { batchBytes: o.batchBytes, flushIntervalMs: o.flushIntervalMs, maxChunkBytes: o.maxChunkBytes },
      this.spec.firstSeq,
      () => {
        this.child?.stdout?.pause();
        this.child?.stderr?.pause();
      },
      () => {
        this.child?.stdout?.resume();
        this.child?.stderr?.resume();
      },
    );
    try {
      // Nothing synchronous on the caller's turn: the slave answers the assignment on it, and the
      // checks below (readdir, lstat) held that answer back by ~0.1 ms (docs/benchmarks.md, "Jobs").
      await nextTurn();
      // The slot's work dir, reused from attempt to attempt: checked and emptied here (also after
      // a crash of the slave or a job that damaged it); a no-op job costs no mkdir. Without a
      // cgroup, a process of an earlier job that left its group (setsid) is not killed and may
      // still have its cwd in that tree: the tree is set aside and made anew, so that what such a
      // process writes never shows up in this job's dirs.
      if (o.cgroup === undefined) {
        const trash = await setAside(o.workRoot, this.workDir);
        void removeTree(trash).catch(() => undefined);
      }
      await resetWorkDir(o.workRoot, this.workDir, { runAs: o.runAs });
      workDirMade = true;
      if (this.spec.fetchInputs !== undefined && !this.cancelled) {
        // A cancel does not wait for a fetch that ignores its AbortSignal.
        const fetched = await Promise.race([this.spec.fetchInputs(dirs.input, this.abort.signal), this.aborted()]);
        // Nothing fetched: no input can conflict with an artifact (what else is in input/ is not an input).
        inputs = fetched === 0 ? new Map() : await indexFiles(dirs.input, o.artifacts);
      }
      let cmd: string;
      let args: string[];
      if (this.spec.command.kind === 'script') {
        const text = this.spec.command.text;
        if (!text.startsWith('#!') && !text.includes('\0') && Buffer.byteLength(text) <= o.maxInlineScriptBytes) {
          // No file: one inode fewer per attempt (see maxInlineScriptBytes for what this shows to `ps`).
          cmd = o.shell;
          args = ['-c', text];
        } else {
          const scriptPath = join(this.workDir, 'script');
          await writeScript(scriptPath, text, o.runAs !== undefined);
          if (text.startsWith('#!')) {
            cmd = scriptPath;
            args = [];
          } else {
            cmd = o.shell;
            args = [scriptPath];
          }
        }
      } else {
        const [first, ...rest] = this.spec.command.argv;
        cmd = first ?? '';
        args = rest;
      }
      // Looked up once per uid (the first attempt may wait for getent), before the clock of the run.
      const user = await userNameOf(o.runAs?.uid ?? process.getuid?.() ?? 0);
      if (!this.cancelled) {
        runStart = o.now();
        const r = await this.spawnAndWait(cmd, args, attemptEnv(this.spec, this.workDir, o, user), dirs.build, batcher);
        exitCode = r.exitCode;
        signal = r.signal;
        error = r.error;
        runEnd = o.now();
      }
    } catch (e) {
      error = errInfo(e);
    } finally {
      this.clearTimers();
      this.finished = true;
      this.dropCgroup();
    }
    await batcher.flush();
    runEnd = Math.max(runEnd, runStart);
    const collectStart = o.now();
    let artifacts: ArtifactScan | undefined;
    let artifactsError: { code: string; message: string } | undefined;
    let keptDir: string | undefined;
    if (workDirMade) {
      let outputDir = dirs.output;
      try {
        // The work dir goes back to the slot now; what the attempt still needs (its artifacts,
        // uploaded after the slots are free) moves out first, by a rename (no copy, no inode).
        const kept = await this.keep(dirs.output);
        if (kept === 'empty') {
          // A real, empty directory (the usual case of a job that leaves nothing): nothing to collect.
          artifacts = { artifacts: [], refused: [], conflicts: [] };
        } else {
          if (kept !== undefined) {
            keptDir = kept.path;
            outputDir = o.keepWorkDirs ? join(kept.path, 'output') : kept.path;
          }
          artifacts = await collectArtifacts(outputDir, { ...o.artifacts, inputs, ownerUid: o.runAs?.uid });
        }
      } catch (e) {
        artifactsError = errInfo(e);
      }
      if (!o.keepWorkDirs) {
        // Emptied before the slot is free, so that the disk space is back; the next attempt checks it again anyway.
        await resetWorkDir(o.workRoot, this.workDir, { runAs: o.runAs }).catch(() => undefined);
      }
    }
    const endedAt = o.now();
    const outcome: AttemptOutcome = this.cancelled
      ? 'cancelled'
      : this.timedOut
        ? 'timed_out'
        : exitCode === 0 && signal === null && error === undefined
          ? 'succeeded'
          : 'failed';
    return {
      jobId: this.jobId,
      attempt: this.attempt,
      outcome,
      exitCode,
      signal,
      timedOut: this.timedOut,
      cancelled: this.cancelled,
      leftoversKilled: this.leftoversKilled,
      pipesForcedClosed: this.pipesForcedClosed,
      pid: this._pid,
      workDir: this.workDir,
      keptDir,
      lastSeq: batcher.lastSeq,
      stdoutBytes: batcher.bytes.stdout,
      stderrBytes: batcher.bytes.stderr,
      logLostBytes: batcher.lostBytes,
      logError: batcher.error === undefined ? undefined : errInfo(batcher.error),
      error,
      artifacts,
      artifactsError,
      startedAt,
      endedAt,
      durations: { setupMs: runStart - startedAt, runMs: runEnd - runStart, collectMs: endedAt - collectStart, totalMs: endedAt - startedAt },
    };
  }

  private aborted(): Promise<never> {
    return new Promise((_, reject) => {
      const fail = (): void => reject(new BuilderError('BUILDER_ERR_BAD_STATE', 'attempt cancelled'));
      if (this.abort.signal.aborted) fail();
      else this.abort.signal.addEventListener('abort', fail, { once: true });
    });
  }

  /**
   * Moves what must outlive the slot to `<workRoot>/<jobId>-<attempt>`: the whole work dir with
   * `keepWorkDirs`, else the output dir when it holds anything (a real directory only: a symlink
   * the job left in its place is not moved, and collection refuses it). Returns the new path,
   * `'empty'` when the output dir is a real, empty directory (nothing moved, nothing to collect),
   * or undefined when nothing was moved otherwise. The look at the output dir is synchronous (a
   * few system calls on cached metadata, cheaper than the thread pool's round trips): it reads one
   * entry, never the whole (job-controlled, possibly huge) listing.
   */
  private async keep(output: string): Promise<{ path: string } | 'empty' | undefined> {
    if (this.o.keepWorkDirs) {
      await removeTree(this.keptPath);
      await rename(this.workDir, this.keptPath);
      return { path: this.keptPath };
    }
    let st;
    try {
      st = lstatSync(output);
    } catch {
      return undefined;
    }
    if (!st.isDirectory()) return undefined;
    if (isEmptyDir(output)) return 'empty';
    await removeTree(this.keptPath);
    await rename(output, this.keptPath);
    return { path: this.keptPath };
  }

  private clearTimers(): void {
    for (const t of [this.killTimer, this.timeoutTimer, this.pipeTimer, this.leftoverTimer]) if (t !== undefined) clearTimeout(t);
  }

  /**
   * Removes the attempt's cgroup. Should a process still be in it (one the wait gave up on), it
   * is killed and the cgroup removed once empty, in the background, for up to a minute; one
   * left after that is swept at the slave's next start.
   */
  private dropCgroup(): void {
    const cg = this.cgroup;
    if (cg === undefined) return;
    try {
      if (cg.remove()) return;
    } catch {
      // tried again below
    }
    void cg.killAndRemove(60_000);
  }

  private spawnAndWait(
    cmd: string,
    args: string[],
    env: Record<string, string>,
    cwd: string,
    batcher: OutputBatcher,
  ): Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; error: { code: string; message: string } | undefined }> {
    return new Promise((resolve) => {
      let exitCode: number | null = null;
      let signal: NodeJS.Signals | null = null;
      let error: { code: string; message: string } | undefined;
      let exited = false;
      let openPipes = 2;
      /** False while processes left behind by the leader are being killed. */
      let leftoversGone = true;
      let settled = false;
      let child: { readonly pid?: number | undefined; readonly stdout: Readable; readonly stderr: Readable };
      const maybeDone = (): void => {
        if (settled || !exited || openPipes > 0 || !leftoversGone) return;
        settled = true;
        resolve({ exitCode, signal, error });
      };
      const onExit = (code: number | null, sig: NodeJS.Signals | null): void => {
        exitCode = code;
        signal = sig;
        exited = true;
        this.leaderExited = true;
        // Neither: the native spawner could not read the status (the process was reaped elsewhere).
        if (code === null && sig === null) error ??= { code: 'ECHILD', message: 'the exit status of the job process was lost' };
        if (this.timeoutTimer !== undefined) clearTimeout(this.timeoutTimer);
        // Anything left (in the group, or the cgroup) is an orphan of this job: SIGTERM now,
        // SIGKILL after the grace, and the attempt ends once they are gone.
        let wait = this.o.pipeCloseTimeoutMs;
        if (this.processesLeft()) {
          this.leftoversKilled = true;
          this.terminate();
          wait += this.o.killGraceMs;
          leftoversGone = false;
          this.whenLeftoversGone(() => {
            leftoversGone = true;
            maybeDone();
          });
        }
        // Without a cgroup, a process that left the group (setsid) may still hold the pipes: stop waiting for it eventually.
        // (Not while the pipes are paused for a slow log sink: that output is the job's and is kept.)
        const forceClose = (): void => {
          if (openPipes === 0) return;
          if (batcher.isPaused) {
            this.pipeTimer = setTimeout(forceClose, this.o.pipeCloseTimeoutMs);
            return;
          }
          this.pipesForcedClosed = true;
          child.stdout.destroy();
          child.stderr.destroy();
        };
        this.pipeTimer = setTimeout(forceClose, wait);
        maybeDone();
      };
      const runAs = this.o.runAs === undefined ? {} : { uid: this.o.runAs.uid, gid: this.o.runAs.gid };
      if (this.o.spawner === 'native') {
        try {
          if (this.o.cgroup !== undefined) this.cgroup = AttemptCgroup.make(this.o.cgroup, `${this.jobId}-${this.attempt}`);
          const c = nativeSpawn(cmd, args, { cwd, env, ...runAs, cgroupProcs: this.cgroup?.procsFile });
          c.on('exit', onExit);
          child = c;
        } catch (e) {
          // Not started (ENOENT, EACCES, a bad cwd, no cgroup): no process, no pipes.
          resolve({ exitCode: null, signal: null, error: spawnErrInfo(e) });
          return;
        }
      } else {
        const c = spawn(cmd, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'], ...runAs });
        c.on('error', (e) => {
          // spawn failed (ENOENT, EACCES): no process, the pipes close on their own.
          error ??= errInfo(e);
          if (c.pid === undefined) {
            exited = true;
            maybeDone();
          }
        });
        c.on('exit', onExit);
        child = c;
      }
      this.child = child;
      this._pid = child.pid;
      if (child.pid !== undefined) {
        try {
          this.spec.onSpawn?.(child.pid);
        } catch {
          // An observer's failure does not change the attempt.
        }
      }
      const onPipeClosed = (): void => {
        openPipes--;
        maybeDone();
      };
      child.stdout.on('data', (d: Buffer) => batcher.push('stdout', d));
      child.stderr.on('data', (d: Buffer) => batcher.push('stderr', d));
      child.stdout.on('close', onPipeClosed);
      child.stderr.on('close', onPipeClosed);
      child.stdout.on('error', () => undefined);
      child.stderr.on('error', () => undefined);
      if (child.pid !== undefined) {
        if (this.spec.timeoutMs > 0) {
          this.timeoutTimer = setTimeout(() => {
            if (exited) return;
            this.timedOut = true;
            this.terminate();
          }, this.spec.timeoutMs);
        }
        if (this.cancelled) this.terminate();
      }
    });
  }
}

/** errInfo, with a failure to make or join the attempt's cgroup said as such. */
function spawnErrInfo(e: unknown): { code: string; message: string } {
  const info = errInfo(e);
  const err = e as NodeJS.ErrnoException;
  if (err.syscall === 'cgroup' || err.syscall === 'mkdir') return { code: info.code, message: `cannot put the job into a cgroup of its own: ${info.message}` };
  return info;
}

/**
 * Whether process group `pgid` has a live member. kill(-pgid, 0) says whether it has any; when
 * it has, /proc tells zombies (dead, never reaped: PID 1 of a container may not reap orphans)
 * from live processes. Only asked when a job's leader has exited, so the scan is rare.
 */
export function groupHasLiveProcess(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue;
    }
    // After the command name (which may hold spaces and parentheses): state, ppid, pgrp, ...
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ', 3);
    if (Number(f[2]) === pgid && f[0] !== 'Z' && f[0] !== 'X') return true;
  }
  return false;
}

/**
 * Writes the job's script as a new file. Security, in depth: the work dir is the slave's, but
 * should anything have planted a symlink named `script` there, O_EXCL|O_NOFOLLOW refuses to write
 * through it, and the mode is set on the descriptor, not the path. With runAs the script stays the slave's (0555): the job reads it and cannot change it.
 */
async function writeScript(path: string, text: string, readOnly: boolean): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o700);
  try {
    await fh.writeFile(text);
    if (readOnly) await fh.chmod(0o555);
  } finally {
    await fh.close();
  }
}

/** Whether a directory has no entry, from its first one only (opendir reads in small batches). */
function isEmptyDir(path: string): boolean {
  const dir = opendirSync(path);
  try {
    return dir.readSync() === null;
  } finally {
    dir.closeSync();
  }
}
