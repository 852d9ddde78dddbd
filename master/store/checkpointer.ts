/** When the {@link Checkpointer} runs; see StoreOptions for the meaning and defaults. */
export interface CheckpointPolicy {
  everyCommits: number;
  maxDelayMs: number;
  idleMs: number;
  maxWalFrames: number;
}

/** Runs `PRAGMA wal_checkpoint(PASSIVE)` somewhere and returns its row. */
export type CheckpointRun = () => Promise<{ busy: number; log: number; checkpointed: number } | undefined>;

/**
 * Copies the WAL back into the database off the commit path.
 *
 * With SQLite's automatic checkpoint, the COMMIT that makes the WAL cross 1,000 pages runs the
 * checkpoint before it returns: that commit waits for the pages to be copied and the database
 * file to be fsynced, a few ms, on whatever write happens to cross the line (on an idle farm, a
 * job's dispatch). Here the writer has `wal_autocheckpoint = 0`, and this runs
 * `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own (so on another thread of the
 * binding's pool, never queued behind or ahead of a write): once `everyCommits` commits were
 * made, when no commit came for `idleMs` (the next write is less likely to arrive while it
 * runs); at the latest after twice that many commits or twice `maxDelayMs` after the first
 * commit it has not copied. PASSIVE never blocks the writer or the readers.
 *
 * The writer rewinds the WAL to its start only when a write begins with the WAL wholly copied.
 * Under writes back to back, a checkpoint from another connection always ends a commit or two
 * behind, so the WAL would grow without end: when a checkpoint finds more than `maxWalFrames`
 * frames, the next one runs on the writer's queue, between two write batches, where it copies
 * everything and the next write rewinds the WAL. An idle farm never gets there.
 */
export class Checkpointer {
  private pending = 0;
  private firstAt = 0;
  private lastAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  /** Checkpoints run so far. */
  runs = 0;
  /** Frames in the WAL at the last checkpoint, and how many of them it copied (for tests and diagnosis). */
  last: { log: number; checkpointed: number } | undefined;

  /** The last checkpoint left the WAL over `maxWalFrames`: the next one runs on the writer. */
  private onWriter = false;
  /** Checkpoints that ran on the writer (between two write batches) to bound the WAL. */
  writerRuns = 0;

  constructor(
    private readonly background: CheckpointRun,
    private readonly betweenWrites: CheckpointRun,
    private readonly policy: CheckpointPolicy,
    private readonly onError: (e: unknown) => void,
  ) {}

  /** Called after each COMMIT of the writer. */
  committed(): void {
    if (this.closed) return;
    const now = Date.now();
    if (this.pending++ === 0) this.firstAt = now;
    this.lastAt = now;
    this.schedule(now);
  }

  /**
   * Due after `everyCommits` commits or `maxDelayMs` after the first one not checkpointed; then
   * run once no commit came for `idleMs`, but no later than after twice as many commits or twice
   * `maxDelayMs` after that first one.
   */
  private schedule(now: number): void {
    if (this.pending === 0 || this.closed) return;
    const { everyCommits, maxDelayMs, idleMs } = this.policy;
    const dueAt = this.pending >= everyCommits ? now : this.firstAt + maxDelayMs;
    // Overdue (twice the commits, or twice the delay): at once, idle or not.
    const runAt = this.pending >= 2 * everyCommits ? now : Math.min(Math.max(dueAt, this.lastAt + idleMs), this.firstAt + 2 * maxDelayMs);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run();
    }, Math.max(0, runAt - now));
    this.timer.unref();
  }

  private run(): void {
    if (this.closed || this.pending === 0) return;
    if (this.running !== undefined) return; // it reschedules when it ends
    this.pending = 0;
    this.running = (async () => {
      const onWriter = this.onWriter;
      try {
        const r = await (onWriter ? this.betweenWrites() : this.background());
        this.runs++;
        if (onWriter) this.writerRuns++;
        if (r !== undefined) {
          this.last = { log: r.log, checkpointed: r.checkpointed };
          // After a run on the writer the WAL is copied and the next write rewinds it; `log`
          // still counts the frames before that rewind.
          this.onWriter = !onWriter && r.log > this.policy.maxWalFrames;
        }
      } catch (e) {
        this.onError(e);
        // Retried without waiting for another commit (an idle farm makes none), alternating
        // between its own connection and the writer's queue: a failure that keeps one of them
        // from checkpointing (a lock another process holds, say) must not let the WAL grow.
        this.onWriter = !onWriter;
        if (this.pending === 0) {
          this.pending = 1;
          this.firstAt = Date.now();
        }
      } finally {
        this.running = undefined;
        // Commits made meanwhile are counted for the next one.
        this.schedule(Date.now());
      }
    })();
  }

  /** Stops the timer and waits for a checkpoint in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
