import { EventEmitter } from 'node:events';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

/**
 * The native spawner (native/spawn.c, built by `npm run build:native`, which `npm ci` runs): it
 * starts a job with vfork instead of libuv's fork, so that starting a job does not copy the
 * slave's page tables (1.5-3 ms of the slave's event loop per job at its usual 58-74 MB:
 * docs/benchmarks.md). Same process as child_process.spawn(..., { detached: true, stdio:
 * ['ignore', 'pipe', 'pipe'], uid, gid }): own session and process group, stdin /dev/null,
 * stdout and stderr piped, default signal dispositions; and no inherited descriptor beyond 2.
 */
interface NativeSpawnModule {
  spawn(file: string, argv: string[], env: string[], cwd: string, uid: number, gid: number, onExit: (code: number, signo: number) => void, cgroupProcs?: string): [number, number, number];
  /** Why this kernel cannot run the spawner (pidfd_open, waitid P_PIDFD, close_range), or undefined. */
  probe(): string | undefined;
  /** flock(fd, LOCK_EX | LOCK_NB): 0, or its errno. */
  lock(fd: number): number;
}

/** Where the addon is, from dist/slave/executor/ (or slave/executor/ run from source). */
const ADDON_URL = new URL('../../../native/build/Release/builder_spawn.node', import.meta.url);

let required: { mod: NativeSpawnModule } | { error: string } | undefined;
let loaded: { mod: NativeSpawnModule } | { error: string } | undefined;

/** The addon itself, whatever the kernel (its lock() needs nothing new). */
function requireAddon(): { mod: NativeSpawnModule } | { error: string } {
  if (required !== undefined) return required;
  if (process.platform !== 'linux') return (required = { error: `the native spawner is built for Linux only (this is ${process.platform})` });
  const path = fileURLToPath(ADDON_URL);
  try {
    const mod = createRequire(import.meta.url)(path) as NativeSpawnModule;
    if (typeof mod.spawn !== 'function' || typeof mod.probe !== 'function' || typeof mod.lock !== 'function') {
      return (required = { error: `${path} is not the spawner this code expects (rebuild it: npm run build:native)` });
    }
    required = { mod };
  } catch (e) {
    required = { error: `cannot load the native spawner ${path} (run \`npm run build:native\`): ${e instanceof Error ? e.message : String(e)}` };
  }
  return required;
}

function load(): { mod: NativeSpawnModule } | { error: string } {
  if (loaded !== undefined) return loaded;
  const r = requireAddon();
  if ('error' in r) return (loaded = r);
  const why = r.mod.probe();
  return (loaded = why === undefined ? r : { error: `the native spawner cannot run on this kernel: ${why}` });
}

/**
 * flock(fd, LOCK_EX | LOCK_NB) through the addon: `locked`, `held` (another open file holds
 * it), or why it cannot be tried (no addon). Other errors are thrown as errno errors.
 */
export function lockFd(fd: number): 'locked' | 'held' | { unavailable: string } {
  const r = requireAddon();
  if ('error' in r) return { unavailable: r.error };
  const e = r.mod.lock(fd);
  if (e === 0) return 'locked';
  if (e === constants.errno.EWOULDBLOCK || e === constants.errno.EAGAIN) return 'held';
  const name = Object.entries(constants.errno).find(([, n]) => n === e)?.[0] ?? `errno ${e}`;
  throw Object.assign(new Error(`flock: ${name}`), { code: name, errno: -e, syscall: 'flock' });
}

/** Why the native spawner cannot be used here, or undefined when it can. */
export function nativeSpawnUnavailable(): string | undefined {
  const l = load();
  return 'error' in l ? l.error : undefined;
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

/**
 * A job's process started by the native spawner: the part of ChildProcess the executor uses.
 * Emits `exit` (code, signal) once, on the event loop, as ChildProcess does; stdout and stderr
 * are the read ends of the job's pipes, as sockets.
 */
export class NativeChild extends EventEmitter<{ exit: [code: number | null, signal: NodeJS.Signals | null] }> {
  readonly pid: number;
  readonly stdout: Socket;
  readonly stderr: Socket;

  /** @internal use nativeSpawn */
  constructor(pid: number, outFd: number, errFd: number) {
    super();
    this.pid = pid;
    this.stdout = new Socket({ fd: outFd, readable: true, writable: false });
    this.stderr = new Socket({ fd: errFd, readable: true, writable: false });
  }

  /** @internal */
  exited(code: number, signo: number): void {
    // Neither (code -1, signo 0): the status was lost; the executor reports that as an error.
    this.emit('exit', code >= 0 ? code : null, code >= 0 ? null : (SIGNAL_NAMES.get(signo) ?? null));
  }
}

/**
 * Starts `file` (looked up in the PATH of `env` when it has no slash) with `args`, in `cwd`, with
 * exactly `env`, as `uid` and `gid` when given (both or neither), inside the cgroup whose
 * `cgroup.procs` is `cgroupProcs` when given (joined before the program runs; a failure to join
 * is thrown with syscall 'cgroup'). Throws (synchronously) what
 * child_process would report as an `error` event: an Error with `code` (ENOENT, EACCES, ...),
 * `errno` and `syscall` 'spawn'; and a TypeError for a NUL byte in any string or a bad id.
 * Throws a plain Error when the addon is not available (see nativeSpawnUnavailable).
 */
export function nativeSpawn(file: string, args: readonly string[], opts: { cwd: string; env: Record<string, string>; uid?: number; gid?: number; cgroupProcs?: string }): NativeChild {
  const l = load();
  if ('error' in l) throw new Error(l.error);
  const env = Object.entries(opts.env).map(([k, v]) => `${k}=${v}`);
  // onExit runs from the event loop (libuv polls a pidfd), never before `child` below exists.
  const [pid, outFd, errFd] = l.mod.spawn(file, [file, ...args], env, opts.cwd, opts.uid ?? -1, opts.gid ?? -1, (code, signo) => child.exited(code, signo), opts.cgroupProcs);
  const child = new NativeChild(pid, outFd, errFd);
  return child;
}

/**
 * Opens `path` (made with `mode` if missing; never through a symlink) and flocks it: `{ fd }`
 * when locked (the caller keeps the descriptor open as long as it holds the lock, and closes it
 * to let go), `'held'` when another open file holds it, or `{ unavailable }` without the addon.
 */
export function lockFile(path: string, mode: number): { fd: number } | 'held' | { unavailable: string } {
  const fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW, mode);
  let r: ReturnType<typeof lockFd>;
  try {
    r = lockFd(fd);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  if (r === 'locked') return { fd };
  closeSync(fd);
  return r;
}
