import { isAbsolute, join, resolve } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import type { CollectArtifactsOptions } from '../artifacts/index.js';
import { findCgroupPlace, type CgroupPlace } from './cgroup.js';
import { nativeSpawnUnavailable } from './native-spawn.js';
import type { SlotEvent } from './slot-pool.js';

/** Options of the executor (one attempt or many through {@link Executor}). All but `dataDir` optional. */
export interface ExecutorOptions {
  /**
   * The slave's data dir; attempts run in `<dataDir>/work/slots/<slot>/` (one work dir per slot,
   * emptied after each attempt and checked before the next). Required.
   */
  dataDir: string;
  /**
   * Where work dirs go. Default `<dataDir>/work`. With `runAs`, every directory above it must be
   * traversable by that user (e.g. mode 0711), and it should not be inside a directory that holds
   * the slave's keys.
   */
  workRoot?: string;
  /**
   * Run jobs as this user and group instead of the slave's own (needs the slave to run as root).
   * The work dir is handed to that user; the slave's files stay out of the job's reach.
   * Default: the slave's user.
   */
  runAs?: { uid: number; gid: number };
  /** Slots run at once (each job weighs `slots`, default 1). Default 1. */
  capacity?: number;
  /** Interpreter of a script that has no `#!` line. Default `/bin/sh`. */
  shell?: string;
  /** PATH of the clean base environment. Default `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`. */
  path?: string;
  /** Timeout of an attempt whose spec has none; 0 = none. Default 6 hours. */
  defaultTimeoutMs?: number;
  /** Between SIGTERM and SIGKILL to the process group (timeout, cancel, leftovers). Default 10 s. */
  killGraceMs?: number;
  /**
   * After the leader has exited and the group is gone (or SIGKILLed), how long the output pipes
   * may stay open (held by a process that left the group with setsid) before the executor closes
   * its ends and finishes the attempt. Default 5 s.
   */
  pipeCloseTimeoutMs?: number;
  /** A batch of output goes to the log sink when it holds this many bytes. Default 64 KiB. */
  batchBytes?: number;
  /** ...or when its first byte is this old. Default 100 ms. */
  flushIntervalMs?: number;
  /** Largest chunk (consecutive output of one stream is merged up to this). At most the spool's maxRecordBytes. Default 256 KiB. */
  maxChunkBytes?: number;
  /** Largest script accepted. Default 1 MiB. */
  maxScriptBytes?: number;
  /**
   * A script without a `#!` line of at most this many bytes (and no NUL) runs as
   * `<shell> -c <text>` instead of from a file written into the work dir (one file fewer per
   * attempt). Longer scripts, and scripts with their own `#!` line, are written to
   * `<workDir>/script`. Note that a command line is readable by every local user (ps,
   * /proc/PID/cmdline) while the script file is not: set 0 to always use a file on a machine
   * shared with users who must not read job scripts. At most 128 KiB (Linux's limit on one
   * argument). Default 0: scripts stay private by default; a slave whose command lines are
   * private anyway (/proc mounted with hidepid=2) can set e.g. 65536.
   */
  maxInlineScriptBytes?: number;
  /**
   * Keep each attempt's whole work dir after it ends (debugging): it is moved to
   * `<workRoot>/<jobId>-<attempt>/` instead of being emptied for the next attempt. Default false.
   */
  keepWorkDirs?: boolean;
  /** Total bytes of the job's env (keys and values). Default 128 KiB. */
  maxEnvBytes?: number;
  /** Start/end events kept in the slot pool's record (oldest dropped first). Default 10,000. */
  maxRecordEvents?: number;
  /**
   * How job processes are started: `native` with the native spawner (native/spawn.c: vfork, no
   * copy of the slave's page tables), `node` with child_process.spawn (libuv forks the slave:
   * 1.5-3 ms of its event loop per job at its usual size), `auto` (default): native when the
   * addon is built, else node. The job's process is the same either way.
   */
  spawner?: 'auto' | 'native' | 'node';
  /**
   * A cgroup (v2) per attempt (slave/executor/cgroup.ts), so that cancel, timeout and the end of
   * an attempt kill every process the job started, also those that left its process group
   * (setsid, daemons). `auto` (default): when the slave's own cgroup is writable (root, or a
   * systemd unit with Delegate=yes), Linux is 5.14 or later and the native spawner is used;
   * `on`: the same, or the slave refuses to start, saying why; `off`: process groups only.
   */
  cgroups?: 'auto' | 'on' | 'off';
  /** Limits of artifact collection. */
  artifacts?: Omit<CollectArtifactsOptions, 'inputs'>;
  /** Clock for timestamps and durations (injected in tests). Default `Date.now`. */
  now?: () => number;
  /**
   * Called synchronously with every start/end event of the slot pool, as it happens (the agent
   * appends them to `DIR/slot-record.jsonl`). A throwing callback does not affect the pool.
   */
  onSlotEvent?: (e: SlotEvent) => void;
}

/** The validated form of {@link ExecutorOptions}. */
export interface CompiledExecutorOptions {
  readonly dataDir: string;
  readonly workRoot: string;
  readonly runAs: { readonly uid: number; readonly gid: number } | undefined;
  readonly capacity: number;
  readonly shell: string;
  readonly path: string;
  readonly defaultTimeoutMs: number;
  readonly killGraceMs: number;
  readonly pipeCloseTimeoutMs: number;
  readonly batchBytes: number;
  readonly flushIntervalMs: number;
  readonly maxChunkBytes: number;
  readonly maxScriptBytes: number;
  readonly maxInlineScriptBytes: number;
  readonly keepWorkDirs: boolean;
  readonly maxEnvBytes: number;
  readonly maxRecordEvents: number;
  readonly artifacts: Omit<CollectArtifactsOptions, 'inputs'>;
  /** What starts job processes (see ExecutorOptions.spawner). */
  readonly spawner: 'native' | 'node';
  /** Why `auto` chose `node`, if it did. */
  readonly spawnerNote: string | undefined;
  /** Where attempts' cgroups go, when they have any (see ExecutorOptions.cgroups). */
  readonly cgroup: CgroupPlace | undefined;
  /** Why attempts have no cgroup, if they have none. */
  readonly cgroupNote: string | undefined;
  readonly now: () => number;
  readonly onSlotEvent: ((e: SlotEvent) => void) | undefined;
}

export const EXECUTOR_DEFAULTS = Object.freeze({
  capacity: 1,
  shell: '/bin/sh',
  path: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  defaultTimeoutMs: 6 * 3600 * 1000,
  killGraceMs: 10_000,
  pipeCloseTimeoutMs: 5_000,
  batchBytes: 64 * 1024,
  flushIntervalMs: 100,
  maxChunkBytes: 256 * 1024,
  maxScriptBytes: 1024 * 1024,
  maxInlineScriptBytes: 0,
  maxEnvBytes: 128 * 1024,
  maxRecordEvents: 10_000,
});

function int(name: string, v: number | undefined, dflt: number, min: number): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min) throw new BuilderError('BUILDER_ERR_CONFIG', `executor option ${name} must be an integer >= ${min}, got ${String(v)}`);
  return x;
}

/** Linux refuses one argument longer than 32 pages (MAX_ARG_STRLEN) with E2BIG. */
const MAX_ARG_BYTES = 128 * 1024;

function inlineLimit(v: number | undefined): number {
  const x = int('maxInlineScriptBytes', v, EXECUTOR_DEFAULTS.maxInlineScriptBytes, 0);
  if (x >= MAX_ARG_BYTES) throw new BuilderError('BUILDER_ERR_CONFIG', `executor option maxInlineScriptBytes must be below ${MAX_ARG_BYTES} (one command-line argument), got ${x}`);
  return x;
}

/**
 * Largest uid/gid accepted for runAs. Linux ids go to 2^32-2, but Node's child_process.spawn
 * takes only an int32 (a larger one throws ERR_INVALID_ARG_TYPE at spawn time, i.e. every job
 * would fail), so the limit is refused here, when the slave starts, instead.
 */
export const MAX_RUN_AS_ID = 2 ** 31 - 1;

function compileRunAs(r: ExecutorOptions['runAs']): CompiledExecutorOptions['runAs'] {
  if (r === undefined) return undefined;
  for (const [name, n] of [['uid', r.uid], ['gid', r.gid]] as const) {
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_RUN_AS_ID) {
      throw new BuilderError('BUILDER_ERR_CONFIG', `executor option runAs.${name} must be an integer from 0 to ${MAX_RUN_AS_ID} (what child_process.spawn accepts), got ${String(n)}`);
    }
  }
  // Running jobs as root would give every build script the slave's keys and the whole machine.
  if (r.uid === 0) throw new BuilderError('BUILDER_ERR_CONFIG', 'executor option runAs may not be root (uid 0)');
  return Object.freeze({ uid: r.uid, gid: r.gid });
}

function compileSpawner(s: ExecutorOptions['spawner']): { spawner: 'native' | 'node'; spawnerNote: string | undefined } {
  if (s !== undefined && s !== 'auto' && s !== 'native' && s !== 'node') {
    throw new BuilderError('BUILDER_ERR_CONFIG', `executor option spawner must be auto, native or node, got ${JSON.stringify(s)}`);
  }
  if (s === 'node') return { spawner: 'node', spawnerNote: undefined };
  const why = nativeSpawnUnavailable();
  if (why === undefined) return { spawner: 'native', spawnerNote: undefined };
  if (s === 'native') throw new BuilderError('BUILDER_ERR_CONFIG', `executor option spawner native cannot be used: ${why}`);
  return { spawner: 'node', spawnerNote: why };
}

function compileCgroups(c: ExecutorOptions['cgroups'], spawner: 'native' | 'node', workRoot: string): { cgroup: CgroupPlace | undefined; cgroupNote: string | undefined } {
  if (c !== undefined && c !== 'auto' && c !== 'on' && c !== 'off') {
    throw new BuilderError('BUILDER_ERR_CONFIG', `executor option cgroups must be auto, on or off, got ${JSON.stringify(c)}`);
  }
  if (c === 'off') return { cgroup: undefined, cgroupNote: 'turned off (cgroups: off)' };
  const place = spawner === 'native' ? findCgroupPlace(workRoot) : { why: 'jobs join their cgroup through the native spawner, which is not used' };
  if (!('why' in place)) return { cgroup: place, cgroupNote: undefined };
  if (c === 'on') throw new BuilderError('BUILDER_ERR_CONFIG', `executor option cgroups on cannot be met: ${place.why}`);
  return { cgroup: undefined, cgroupNote: place.why };
}

/** Validates and normalises executor options once, at startup. */
export function compileExecutorOptions(o: ExecutorOptions): CompiledExecutorOptions {
  if (typeof o.dataDir !== 'string' || o.dataDir === '') throw new BuilderError('BUILDER_ERR_CONFIG', 'executor option dataDir is required');
  const dataDir = resolve(o.dataDir);
  const shell = o.shell ?? EXECUTOR_DEFAULTS.shell;
  if (!isAbsolute(shell)) throw new BuilderError('BUILDER_ERR_CONFIG', 'executor option shell must be an absolute path');
  const runAs = compileRunAs(o.runAs);
  const workRoot = o.workRoot === undefined ? join(dataDir, 'work') : resolve(o.workRoot);
  const spawner = compileSpawner(o.spawner);
  return Object.freeze({
    dataDir,
    workRoot,
    runAs,
    capacity: int('capacity', o.capacity, EXECUTOR_DEFAULTS.capacity, 1),
    shell,
    path: o.path ?? EXECUTOR_DEFAULTS.path,
    defaultTimeoutMs: int('defaultTimeoutMs', o.defaultTimeoutMs, EXECUTOR_DEFAULTS.defaultTimeoutMs, 0),
    killGraceMs: int('killGraceMs', o.killGraceMs, EXECUTOR_DEFAULTS.killGraceMs, 0),
    pipeCloseTimeoutMs: int('pipeCloseTimeoutMs', o.pipeCloseTimeoutMs, EXECUTOR_DEFAULTS.pipeCloseTimeoutMs, 0),
    batchBytes: int('batchBytes', o.batchBytes, EXECUTOR_DEFAULTS.batchBytes, 1),
    flushIntervalMs: int('flushIntervalMs', o.flushIntervalMs, EXECUTOR_DEFAULTS.flushIntervalMs, 0),
    maxChunkBytes: int('maxChunkBytes', o.maxChunkBytes, EXECUTOR_DEFAULTS.maxChunkBytes, 1),
    maxScriptBytes: int('maxScriptBytes', o.maxScriptBytes, EXECUTOR_DEFAULTS.maxScriptBytes, 1),
    maxInlineScriptBytes: inlineLimit(o.maxInlineScriptBytes),
    keepWorkDirs: o.keepWorkDirs ?? false,
    maxEnvBytes: int('maxEnvBytes', o.maxEnvBytes, EXECUTOR_DEFAULTS.maxEnvBytes, 0),
    maxRecordEvents: int('maxRecordEvents', o.maxRecordEvents, EXECUTOR_DEFAULTS.maxRecordEvents, 1),
    artifacts: { ...(o.artifacts ?? {}) },
    ...spawner,
    ...compileCgroups(o.cgroups, spawner.spawner, workRoot),
    now: o.now ?? Date.now,
    onSlotEvent: o.onSlotEvent,
  });
}
