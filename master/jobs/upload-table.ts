import { ArtifactReceiver, type ArtifactReceiverOptions } from '../../protocol/transfer/index.js';
import { BuilderError } from '../../protocol/errors.js';

/**
 * Receivers of uploads in progress, by key, with a limit on how many are open at once and an
 * idle timeout (an abandoned upload keeps its `.part` on disk for a later resume, not its handle).
 */
export class UploadTable {
  private readonly open = new Map<string, { r: Promise<ArtifactReceiver>; touched: number; owner: string }>();
  /** Open uploads per owner (the peer that began them). */
  private readonly owners = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly what: string,
    private readonly maxOpen: number,
    private readonly maxOpenPerOwner: number,
    private readonly idleMs: number,
    private readonly receiverOptions: ArtifactReceiverOptions,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.min(idleMs, 60_000)));
    this.timer.unref();
  }

  /**
   * Opens (or returns the open) receiver for `key`; `root`/`path` as in ArtifactReceiver.open.
   * `owner` (the peer's name) may hold at most `maxOpenPerOwner` of the `maxOpen`: one peer that
   * begins uploads and never finishes them cannot take every other peer's.
   */
  async begin(key: string, root: string, path: string, expected: { size: number; sha256: string }, owner: string): Promise<ArtifactReceiver> {
    // Looked at again after each wait: another begin of the same key may have replaced or
    // dropped the entry meanwhile (two replacing it at once counted one upload twice).
    for (let cur = this.open.get(key); cur !== undefined; cur = this.open.get(key)) {
      const r = await cur.r.catch(() => undefined);
      if (this.open.get(key) !== cur) continue;
      if (r !== undefined && r.size === expected.size && r.sha256 === expected.sha256) {
        cur.touched = Date.now();
        return r;
      }
      // A new declaration for the same name: drop the old bytes and start over.
      this.drop(key);
      await r?.abort(false);
    }
    if (this.open.size >= this.maxOpen) {
      throw new BuilderError('BUILDER_ERR_TOO_MANY_IN_FLIGHT', `more than ${this.maxOpen} ${this.what} uploads in progress; finish some first`);
    }
    if ((this.owners.get(owner) ?? 0) >= this.maxOpenPerOwner) {
      throw new BuilderError('BUILDER_ERR_TOO_MANY_IN_FLIGHT', `more than ${this.maxOpenPerOwner} ${this.what} uploads in progress from ${owner}; finish some first`);
    }
    const r = ArtifactReceiver.open(root, path, expected, this.receiverOptions);
    const entry = { r, touched: Date.now(), owner };
    this.open.set(key, entry);
    this.owners.set(owner, (this.owners.get(owner) ?? 0) + 1);
    r.catch(() => {
      if (this.open.get(key) === entry) this.drop(key);
    });
    return r;
  }

  /** Takes `key` out of the table (its owner's count with it); the entry it held, if any. */
  private drop(key: string): { r: Promise<ArtifactReceiver>; touched: number; owner: string } | undefined {
    const cur = this.open.get(key);
    if (cur === undefined) return undefined;
    this.open.delete(key);
    const n = (this.owners.get(cur.owner) ?? 1) - 1;
    if (n > 0) this.owners.set(cur.owner, n);
    else this.owners.delete(cur.owner);
    return cur;
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
      if (r.closed && cur !== undefined && (await cur.r.catch(() => undefined)) === r && this.open.get(key) === cur) this.drop(key);
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
      this.drop(k);
      await v.r.then((r) => r.abort(keepPart)).catch(() => undefined);
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, v] of [...this.open]) {
      if (now - v.touched < this.idleMs) continue;
      this.drop(k);
      void v.r.then((r) => r.abort(true)).catch(() => undefined);
    }
  }

  /** Closes every receiver, keeping the bytes received so far for a resume. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.open.values()];
    this.open.clear();
    this.owners.clear();
    for (const v of all) await v.r.then((r) => r.abort(true)).catch(() => undefined);
  }
}
