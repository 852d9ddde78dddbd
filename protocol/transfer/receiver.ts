import { constants } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { lstat, mkdir, open, readFile, realpath, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { BuilderError } from '../errors.js';
import { checkRelativePath } from '../names.js';
import { hashRange } from './hash-file.js';

/** Options of an {@link ArtifactReceiver}; all optional. */
export interface ArtifactReceiverOptions {
  /** Largest artifact accepted (declared size). Default 16 GiB. */
  maxBytes?: number;
  /** Largest single chunk. Default 4 MiB. */
  maxChunkBytes?: number;
  /** Out-of-order chunks held in memory until the gap before them fills. Default 32 MiB. */
  maxPendingBytes?: number;
}

/**
 * Chunks parked ahead of a gap, at most, whatever their size: a sender keeps a window of a few
 * (8 by default), and each parked chunk costs a map entry besides its bytes.
 */
export const MAX_PARKED_CHUNKS = 1024;

export const RECEIVER_DEFAULTS = Object.freeze({ maxBytes: 16 * 1024 ** 3, maxChunkBytes: 4 * 1024 * 1024, maxPendingBytes: 32 * 1024 * 1024 });

const SHA256_RE = /^[0-9a-f]{64}$/;

/**
 * The receiving end of a chunked artifact upload, transport-neutral and pure file I/O: the
 * master's handlers feed it chunks. Data is written in order to `<root>/<path>.part` and hashed as
 * it lands; chunks that arrive ahead of a gap wait in memory (bounded). A `.part.meta` sidecar
 * records what is being received, so a reopened receiver (after a reconnect, or a master restart)
 * resumes at the bytes already on disk. `finish` checks size and sha256 and renames into place.
 */
export class ArtifactReceiver {
  readonly root: string;
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  private readonly finalPath: string;
  private readonly partPath: string;
  private readonly metaPath: string;
  private readonly maxChunkBytes: number;
  private readonly maxPendingBytes: number;
  private fh: FileHandle | undefined;
  private hash: Hash;
  private _offset = 0;
  private pending = new Map<number, Buffer>();
  private pendingBytes = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private done = false;

  private constructor(root: string, path: string, size: number, sha256: string, o: Required<ArtifactReceiverOptions>) {
    this.root = root;
    this.path = path;
    this.size = size;
    this.sha256 = sha256;
    this.finalPath = join(root, path);
    this.partPath = `${this.finalPath}.part`;
    this.metaPath = `${this.finalPath}.part.meta`;
    this.maxChunkBytes = o.maxChunkBytes;
    this.maxPendingBytes = o.maxPendingBytes;
    this.hash = createHash('sha256');
  }

  /**
   * Starts receiving `path` (validated with `checkRelativePath`) under `root`, or resumes a
   * `.part` left by an earlier receiver for the same size and sha256.
   */
  static async open(root: string, path: string, expected: { size: number; sha256: string }, options: ArtifactReceiverOptions = {}): Promise<ArtifactReceiver> {
    const o = { ...RECEIVER_DEFAULTS, ...options };
    const rel = checkRelativePath(path);
    if (!Number.isSafeInteger(expected.size) || expected.size < 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'artifact size must be a non-negative integer');
    if (expected.size > o.maxBytes) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `artifact ${rel} is ${expected.size} bytes, over the limit of ${o.maxBytes}`);
    if (typeof expected.sha256 !== 'string' || !SHA256_RE.test(expected.sha256)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'artifact sha256 must be 64 lower-case hex digits');
    const realRoot = await realpath(root);
    const r = new ArtifactReceiver(realRoot, rel, expected.size, expected.sha256, o);
    await r.prepare();
    return r;
  }

  /** Finished, failed for good (checksum, conflict) or aborted: its file handle is closed. */
  get closed(): boolean {
    return this.done;
  }

  /** Bytes received in order so far: where a resumed upload starts. */
  get offset(): number {
    return this._offset;
  }

  private async prepare(): Promise<void> {
    await mkdirInside(this.root, dirname(this.path));
    if (await exists(this.finalPath)) throw new BuilderError('BUILDER_ERR_CONFLICT', `artifact ${this.path} already exists`);
    const meta = JSON.stringify({ path: this.path, size: this.size, sha256: this.sha256 });
    let resume: boolean;
    try {
      resume = (await readFile(this.metaPath, 'utf8')) === meta && (await lstat(this.partPath)).isFile();
    } catch {
      resume = false;
    }
    // Security: O_NOFOLLOW, so a symlink planted at the .part path is refused, not written through.
    const flags = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | (resume ? 0 : constants.O_TRUNC);
    this.fh = await open(this.partPath, flags, 0o644);
    if (resume) {
      const st = await this.fh.stat();
      const have = Math.min(st.size, this.size);
      this._offset = await hashRange(this.fh, this.hash, 0, have);
      await this.fh.truncate(this._offset);
    } else {
      await writeFile(this.metaPath, meta, { mode: 0o644 });
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Accepts `data` at `offset`. Bytes below {@link offset} are ignored (a resend after a
   * reconnect); a chunk past a gap waits in memory up to `maxPendingBytes` and
   * {@link MAX_PARKED_CHUNKS} chunks. An empty chunk is refused.
   */
  write(offset: number, data: Buffer): Promise<void> {
    return this.serial(async () => {
      if (this.done || this.fh === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', `upload of ${this.path} is closed`);
      if (!Number.isSafeInteger(offset) || offset < 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'chunk offset must be a non-negative integer');
      if (data.length > this.maxChunkBytes) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `chunk of ${data.length} bytes over the limit of ${this.maxChunkBytes}`);
      if (offset + data.length > this.size) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `chunk ends at ${offset + data.length}, past the declared size ${this.size}`);
      // An empty chunk carries nothing and would park for free (a sender could park millions).
      if (data.length === 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'empty chunk');
      if (offset + data.length <= this._offset) return;
      if (offset > this._offset) {
        if (this.pending.has(offset)) return;
        if (this.pendingBytes + data.length > this.maxPendingBytes || this.pending.size >= MAX_PARKED_CHUNKS) {
          throw new BuilderError('BUILDER_ERR_TOO_MANY_IN_FLIGHT', `more than ${this.maxPendingBytes} bytes or ${MAX_PARKED_CHUNKS} chunks ahead of a gap`);
        }
        // A copy: the chunk may be a view of a whole frame's buffer, which it would keep alive.
        this.pending.set(offset, Buffer.from(data));
        this.pendingBytes += data.length;
        return;
      }
      await this.append(data.subarray(this._offset - offset));
      for (;;) {
        let progressed = false;
        for (const [off, buf] of this.pending) {
          if (off > this._offset) continue;
          this.pending.delete(off);
          this.pendingBytes -= buf.length;
          if (off + buf.length > this._offset) await this.append(buf.subarray(this._offset - off));
          progressed = true;
        }
        if (!progressed) break;
      }
    });
  }

  private async append(buf: Buffer): Promise<void> {
    if (this.fh === undefined) return;
    let w = 0;
    while (w < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, w, buf.length - w, this._offset + w);
      w += bytesWritten;
    }
    this.hash.update(buf);
    this._offset += buf.length;
  }

  /**
   * Checks that all bytes arrived and their sha256 is the declared one, then moves the file into
   * place (refusing to replace an existing file). A mismatch removes the partial file.
   */
  finish(): Promise<{ path: string; absPath: string; size: number; sha256: string }> {
    return this.serial(async () => {
      if (this.done || this.fh === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', `upload of ${this.path} is closed`);
      if (this._offset !== this.size) {
        throw new BuilderError('BUILDER_ERR_BAD_STATE', `upload of ${this.path} is incomplete: ${this._offset} of ${this.size} bytes`);
      }
      const got = this.hash.digest('hex');
      this.done = true;
      const fh = this.fh;
      this.fh = undefined;
      if (got !== this.sha256) {
        await fh.close();
        await this.removePart();
        throw new BuilderError('BUILDER_ERR_CHECKSUM', `upload of ${this.path}: sha256 ${got} differs from the declared ${this.sha256}`);
      }
      await fh.sync();
      await fh.close();
      if (await exists(this.finalPath)) {
        await this.removePart();
        throw new BuilderError('BUILDER_ERR_CONFLICT', `artifact ${this.path} already exists`);
      }
      await rename(this.partPath, this.finalPath);
      await rm(this.metaPath, { force: true });
      return { path: this.path, absPath: this.finalPath, size: this.size, sha256: got };
    });
  }

  /** Closes without committing; `keepPart` leaves the bytes for a later resume (the default drops them). */
  abort(keepPart = false): Promise<void> {
    return this.serial(async () => {
      this.done = true;
      this.pending.clear();
      this.pendingBytes = 0;
      await this.fh?.close();
      this.fh = undefined;
      if (!keepPart) await this.removePart();
    });
  }

  private async removePart(): Promise<void> {
    await rm(this.partPath, { force: true });
    await rm(this.metaPath, { force: true });
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** mkdir -p of `rel` under `root`, refusing any component that is a symlink or not a directory. */
async function mkdirInside(root: string, rel: string): Promise<void> {
  if (rel === '.' || rel === '') return;
  let cur = root;
  for (const part of rel.split('/')) {
    cur = join(cur, part);
    try {
      await mkdir(cur, { mode: 0o755 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Security: a pre-planted symlink in the destination tree would redirect the write elsewhere.
    const st = await lstat(cur);
    if (!st.isDirectory()) throw new BuilderError('BUILDER_ERR_INVALID_NAME', `artifact directory ${rel} is not a plain directory`);
  }
  const real = await realpath(cur);
  if (!real.startsWith(root + sep)) throw new BuilderError('BUILDER_ERR_INVALID_NAME', `artifact directory ${rel} escapes the store`);
}
