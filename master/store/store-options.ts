import { isAbsolute, join, resolve } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';

/**
 * Options of the master's store. Every field but `dir` is optional; defaults are documented here
 * and applied once by {@link compileStoreOptions}.
 */
export interface StoreOptions {
  /** The master's data directory; the database is `<dir>/master.db`. Required. */
  dir: string;
  /** File name of the database inside `dir`. Default `master.db`. */
  fileName?: string;
  /**
   * SQLite `synchronous` in WAL mode. Default `FULL`.
   * - `FULL`: the WAL is fsynced at every COMMIT, so an acknowledged transition survives a
   *   process crash (SIGKILL) and a power loss or kernel crash. Group commit pays that fsync once
   *   per batch, not once per transition.
   * - `NORMAL`: COMMIT writes the WAL to the OS but syncs only at checkpoints: an acknowledged
   *   transition survives SIGKILL of the master (the kernel still holds the pages), but the last
   *   transactions before a power loss may roll back (the database stays consistent).
   */
  synchronous?: 'FULL' | 'NORMAL';
  /**
   * Who copies the WAL back into the database file. Default `background`.
   * - `background`: a connection of its own runs a PASSIVE checkpoint after
   *   `checkpointEveryCommits` commits or `checkpointMaxDelayMs` after the first commit not yet
   *   copied, once no commit came for `checkpointIdleMs` (at the latest twice
   *   `checkpointMaxDelayMs` after that commit): no COMMIT waits for a checkpoint.
   * - `commit`: SQLite's own (wal_autocheckpoint = 1000 pages): the COMMIT that crosses 1,000
   *   pages runs it before it returns.
   */
  checkpoint?: 'background' | 'commit';
  /** Commits after which a background checkpoint is due. Default 100 (on an idle farm about the 1,000 WAL pages SQLite would wait for). */
  checkpointEveryCommits?: number;
  /** Longest time a committed write waits to be copied back, also under a steady stream of writes (bounds the WAL). Default 1,000 ms. */
  checkpointMaxDelayMs?: number;
  /** Quiet time of the writer before a due background checkpoint runs. Default 5 ms. */
  checkpointIdleMs?: number;
  /**
   * WAL size (in pages) past which the next checkpoint runs on the writer's queue, between two
   * write batches, so that the WAL is rewound (only under writes back to back). Default 4,000
   * (16 MiB with 4 KiB pages).
   */
  maxWalFrames?: number;
  /**
   * Called when a background checkpoint fails (nothing is lost: the WAL keeps every commit, and
   * the next checkpoint retries). Default: ignored. The master logs it (rate-limited).
   */
  onCheckpointError?: (e: unknown) => void;
  /** How long a connection waits for a lock held by another connection. Default 5,000 ms. */
  busyTimeoutMs?: number;
  /** Most writes committed in one transaction. Default 1,000. */
  maxBatch?: number;
  /** Max attempts of a job that does not say. Default 3. */
  defaultMaxAttempts?: number;
  /** Upper bound of a job's max attempts. Default 20. */
  maxAttemptsLimit?: number;
  /** Timeout of a job that does not say; 0 = none. Default 6 h. */
  defaultTimeoutMs?: number;
  /** Largest job weight in slots. Default 1,024. */
  maxSlots?: number;
  /** Largest script or argv, in bytes. Default 1 MiB. */
  maxScriptBytes?: number;
  /** Largest job env (names + values), in bytes. Default 64 KiB. */
  maxEnvBytes?: number;
  /** Most input files of one job. Default 1,000. */
  maxInputs?: number;
  /** Largest page a list call returns. Default 1,000. */
  maxListLimit?: number;
  /** The clock for timestamps (ms since the epoch). Default `Date.now`. */
  now?: () => number;
}

export interface CompiledStoreOptions {
  file: string;
  synchronous: 'FULL' | 'NORMAL';
  checkpoint: 'background' | 'commit';
  checkpointEveryCommits: number;
  checkpointMaxDelayMs: number;
  checkpointIdleMs: number;
  maxWalFrames: number;
  onCheckpointError: (e: unknown) => void;
  busyTimeoutMs: number;
  maxBatch: number;
  defaultMaxAttempts: number;
  maxAttemptsLimit: number;
  defaultTimeoutMs: number;
  maxSlots: number;
  maxScriptBytes: number;
  maxEnvBytes: number;
  maxInputs: number;
  maxListLimit: number;
  now: () => number;
}

function posInt(name: string, v: number | undefined, dflt: number, min = 1): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < min) throw new BuilderError('BUILDER_ERR_CONFIG', `store option ${name} must be an integer >= ${min}, got ${String(x)}`);
  return x;
}

/** Validates and normalises store options once, at startup. */
export function compileStoreOptions(o: StoreOptions): CompiledStoreOptions {
  if (typeof o.dir !== 'string' || o.dir === '') throw new BuilderError('BUILDER_ERR_CONFIG', 'store option dir is required');
  const fileName = o.fileName ?? 'master.db';
  if (fileName.includes('/') || fileName === '' || fileName.startsWith('.')) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `store option fileName must be a plain file name, got ${JSON.stringify(fileName)}`);
  }
  const synchronous = o.synchronous ?? 'FULL';
  if (synchronous !== 'FULL' && synchronous !== 'NORMAL') throw new BuilderError('BUILDER_ERR_CONFIG', 'store option synchronous must be FULL or NORMAL');
  const checkpoint = o.checkpoint ?? 'background';
  if (checkpoint !== 'background' && checkpoint !== 'commit') throw new BuilderError('BUILDER_ERR_CONFIG', 'store option checkpoint must be background or commit');
  const c: CompiledStoreOptions = {
    file: join(isAbsolute(o.dir) ? o.dir : resolve(o.dir), fileName),
    synchronous,
    checkpoint,
    checkpointEveryCommits: posInt('checkpointEveryCommits', o.checkpointEveryCommits, 100),
    checkpointMaxDelayMs: posInt('checkpointMaxDelayMs', o.checkpointMaxDelayMs, 1000),
    checkpointIdleMs: posInt('checkpointIdleMs', o.checkpointIdleMs, 5, 0),
    maxWalFrames: posInt('maxWalFrames', o.maxWalFrames, 4000),
    onCheckpointError: o.onCheckpointError ?? (() => undefined),
    busyTimeoutMs: posInt('busyTimeoutMs', o.busyTimeoutMs, 5000, 0),
    maxBatch: posInt('maxBatch', o.maxBatch, 1000),
    defaultMaxAttempts: posInt('defaultMaxAttempts', o.defaultMaxAttempts, 3),
    maxAttemptsLimit: posInt('maxAttemptsLimit', o.maxAttemptsLimit, 20),
    defaultTimeoutMs: posInt('defaultTimeoutMs', o.defaultTimeoutMs, 6 * 3600_000, 0),
    maxSlots: posInt('maxSlots', o.maxSlots, 1024),
    maxScriptBytes: posInt('maxScriptBytes', o.maxScriptBytes, 1 << 20),
    maxEnvBytes: posInt('maxEnvBytes', o.maxEnvBytes, 64 << 10),
    maxInputs: posInt('maxInputs', o.maxInputs, 1000, 0),
    maxListLimit: posInt('maxListLimit', o.maxListLimit, 1000),
    now: o.now ?? Date.now,
  };
  if (c.defaultMaxAttempts > c.maxAttemptsLimit) throw new BuilderError('BUILDER_ERR_CONFIG', 'store option defaultMaxAttempts is over maxAttemptsLimit');
  return c;
}
