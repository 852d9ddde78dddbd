import { ArtifactReceiver, type ArtifactReceiverOptions } from '../../protocol/transfer/index.js';
import { BuilderError } from '../../protocol/errors.js';

/**
 * Receivers of uploads in progress, by key, with a limit on how many are open at once and an
 * idle timeout (an abandoned upload keeps its `.part` on disk for a later resume, not its handle).
 */
export class UploadTable {
  private readonly open = new Map<string, { r: Promise<ArtifactReceiver>; touched: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly what: string,
    private readonly maxOpen: number,
    private readonly idleMs: number,
    private readonly receiverOptions: ArtifactReceiverOptions,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.min(idleMs, 60_000)));
    this.timer.unref();
  }

  /** Opens (or returns the open) receiver for `key`; `root`/`path` as in ArtifactReceiver.open. */
  async begin(key: string, root: string, path: string, expected: { size: number; sha256: string }): Promise<ArtifactReceiver> {
    const cur = this.open.get(key);
    if (cur !== undefined) {
      const r = await cur.r;
      if (r.size === expected.size && r.sha256 === expected.sha256) {
        cur.touched = Date.now();
        return r;
      }
      // A new declaration for the same name: drop the old bytes and start over.
      this.open.delete(key);
      await r.abort(false);
    }
    if (this.open.size >= this.maxOpen) {
      throw new BuilderError('BUILDER_ERR_TOO_MANY_IN_FLIGHT', `more than ${this.maxOpen} ${this.what} uploads in progress; finish some first`);
    }
    const r = ArtifactReceiver.open(root, path, expected, this.receiverOptions);
    this.open.set(key, { r, touched: Date.now() });
    r.catch(() => this.open.delete(key));
    return r;
  }

  /** The open receiver for `key`, or BAD_STATE with `hint`. */
  async get(key: string, missing: string): Promise<ArtifactReceiver> {
    const cur = this.open.get(key);
    if (cur === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', missing);
    cur.touched = Date.now();
    return cur.r;
  }

  /**
   * Finishes the upload `r` open under `key`. It leaves the table once closed (committed, or
   * failed for good: checksum, conflict); an upload found incomplete stays open (and its file
   * handle with it) for the chunks still to come.
   */
  async finish(key: string, r: ArtifactReceiver): ReturnType<ArtifactReceiver['finish']> {
    try {
      return await r.finish();
    } finally {
      // Only its own entry: a begin of other bytes under the same name may have replaced it meanwhile.
      const cur = this.open.get(key);
      if (r.closed && cur !== undefined && (await cur.r.catch(() => undefined)) === r && this.open.get(key) === cur) this.open.delete(key);
    }
  }

  /** Whether an upload is open under `key`. */
  isOpen(key: string): boolean {
    return this.open.has(key);
  }

  /** Aborts every open upload whose key starts with `prefix` (keeping or dropping the bytes). */
  async abortPrefix(prefix: string, keepPart: boolean): Promise<void> {
    for (const [k, v] of [...this.open]) {
      if (!k.startsWith(prefix)) continue;
      this.open.delete(k);
      await v.r.then((r) => r.abort(keepPart)).catch(() => undefined);
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, v] of [...this.open]) {
      if (now - v.touched < this.idleMs) continue;
      this.open.delete(k);
      void v.r.then((r) => r.abort(true)).catch(() => undefined);
    }
  }

  /** Closes every receiver, keeping the bytes received so far for a resume. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.open.values()];
    this.open.clear();
    for (const v of all) await v.r.then((r) => r.abort(true)).catch(() => undefined);
  }
}
