import { lstat, mkdir, readdir, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { readChunk } from '../../protocol/transfer/index.js';
import { UploadTable } from './upload-table.js';

const SHA256_RE = /^[0-9a-f]{64}$/;

/**
 * Job input files, content-addressed: `<root>/<sha256>`. Clients upload them (resumable, sha256
 * checked) before submitting a job that names them; slaves read them by range.
 */
export class InputStore {
  private readonly uploads: UploadTable;

  constructor(
    readonly root: string,
    o: { maxInputBytes: number; maxOpenUploads: number; maxOpenUploadsPerPeer: number; uploadIdleMs: number },
  ) {
    this.uploads = new UploadTable('input', o.maxOpenUploads, o.maxOpenUploadsPerPeer, o.uploadIdleMs, { maxBytes: o.maxInputBytes });
  }

  private path(sha256: string): string {
    // Security: the name is a sha256 (64 hex digits), never a path the client chose.
    if (!SHA256_RE.test(sha256)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'sha256 must be 64 lower-case hex digits');
    return join(this.root, sha256);
  }

  /** Size of a stored input, or undefined when the master does not have it. */
  async sizeOf(sha256: string): Promise<number | undefined> {
    try {
      const st = await lstat(this.path(sha256));
      return st.isFile() ? st.size : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Starts or resumes an upload for `owner` (the client); a file the master already has answers its full size. */
  async begin(sha256: string, size: number, owner: string): Promise<number> {
    const have = await this.sizeOf(sha256);
    if (have !== undefined) {
      if (have !== size) throw new BuilderError('BUILDER_ERR_CONFLICT', `the master holds ${have} bytes for sha256 ${sha256}, not ${size}`);
      return size;
    }
    await mkdir(this.root, { recursive: true });
    const r = await this.uploads.begin(sha256, this.root, sha256, { size, sha256 }, owner);
    return r.offset;
  }

  async chunk(sha256: string, offset: number, data: Buffer): Promise<void> {
    const r = await this.uploads.get(sha256, `no upload of input ${sha256} in progress: call input.begin first`);
    await r.write(offset, data);
  }

  async finish(sha256: string): Promise<{ size: number; sha256: string }> {
    let r;
    try {
      r = await this.uploads.get(sha256, `no upload of input ${sha256} in progress: call input.begin first`);
    } catch (e) {
      const have = await this.sizeOf(sha256);
      if (have !== undefined) return { size: have, sha256 };
      throw e;
    }
    const done = await this.uploads.finish(sha256, r);
    return { size: done.size, sha256: done.sha256 };
  }

  /** Marks a stored input as used now (its mtime): the input retention counts from the last use. */
  async touch(sha256: string): Promise<void> {
    const now = new Date();
    await utimes(this.path(sha256), now, now);
  }

  /** The stored inputs (uploads in progress and other files left out) last used before `before` (ms). */
  unusedSince(before: number): Promise<string[]> {
    return this.filesOlderThan(before, (n) => (SHA256_RE.test(n) ? n : undefined));
  }

  /** Inputs whose partial upload (`<sha256>.part`) was last written before `before` (ms). */
  partsUntouchedSince(before: number): Promise<string[]> {
    return this.filesOlderThan(before, (n) => {
      const sha = n.endsWith('.part') ? n.slice(0, -'.part'.length) : undefined;
      return sha !== undefined && SHA256_RE.test(sha) ? sha : undefined;
    });
  }

  /** The sha256 (`shaOf` a file name) of each regular file in the root last modified before `before` (ms). */
  private async filesOlderThan(before: number, shaOf: (name: string) => string | undefined): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: string[] = [];
    for (const n of names) {
      const sha = shaOf(n);
      if (sha === undefined) continue;
      const st = await lstat(join(this.root, n)).catch(() => undefined);
      if (st?.isFile() === true && st.mtimeMs < before) out.push(sha);
    }
    return out;
  }

  /**
   * Removes the partial upload of `sha256` (its `.part` and `.part.meta`) when it is not open and
   * was last written before `before` (ms): an upload its client gave up on. Whether it did.
   */
  async removePartIfUntouchedSince(sha256: string, before: number): Promise<boolean> {
    const part = `${this.path(sha256)}.part`;
    if (this.uploads.isOpen(sha256)) return false;
    const st = await lstat(part).catch(() => undefined);
    if (st?.isFile() !== true || st.mtimeMs >= before) return false;
    await unlink(part);
    await unlink(`${part}.meta`).catch(() => undefined);
    return true;
  }

  /** Removes a stored input last used before `before` (ms); whether it did. */
  async removeIfUnusedSince(sha256: string, before: number): Promise<boolean> {
    let st;
    try {
      st = await lstat(this.path(sha256));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    if (!st.isFile() || st.mtimeMs >= before) return false;
    await unlink(this.path(sha256));
    return true;
  }

  /** A range of a stored input. */
  async read(sha256: string, offset: number, length: number): Promise<Buffer> {
    if ((await this.sizeOf(sha256)) === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no input file with sha256 ${sha256}`);
    return readChunk(this.path(sha256), offset, length);
  }

  close(): Promise<void> {
    return this.uploads.close();
  }
}
