import { closeSync, ftruncateSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { lockFile } from '../executor/native-spawn.js';

/**
 * `DIR/slave.lock`, locked (flock) by the slave process that runs on DIR, for its whole life.
 * Two slaves on one directory would clear each other's attempt files and, with job cgroups,
 * kill each other's jobs at start; the second is refused. The kernel drops the lock when the
 * process dies, however it dies, so a crash leaves nothing stale. The file holds the holder's
 * pid, for the message.
 */
export class SlaveDirLock {
  private constructor(
    private fd: number | undefined,
    readonly path: string,
  ) {}

  /**
   * Locks `dir`. Throws BUILDER_ERR_CONFLICT when another process holds it. Without the native
   * addon (which does the flock), the slave runs unlocked: `unlocked` says why.
   */
  static acquire(dir: string): { lock: SlaveDirLock } | { unlocked: string } {
    const path = join(dir, 'slave.lock');
    // Not through a symlink planted in DIR (lockFile refuses one): the file is truncated once locked.
    const r = lockFile(path, 0o644);
    if (r === 'held') throw new BuilderError('BUILDER_ERR_CONFLICT', `another slave process${holderPid(path)} runs on ${dir}`, {
      hint: "stop it first: two slaves on one directory would remove each other's attempt files and kill each other's jobs",
    });
    if ('unavailable' in r) return { unlocked: r.unavailable };
    ftruncateSync(r.fd, 0);
    writeSync(r.fd, `${process.pid}\n`, 0);
    return { lock: new SlaveDirLock(r.fd, path) };
  }

  /** Unlocks (closes the file; it stays, empty of meaning, for the next start). */
  release(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}

/** ` (pid N)` from the lock file of the process holding it, or nothing when it cannot be read. */
function holderPid(path: string): string {
  let holder = '';
  try {
    holder = readFileSync(path, 'utf8').trim();
  } catch {
    // unreadable: said without the pid
  }
  return /^\d+$/.test(holder) ? ` (pid ${holder})` : '';
}
