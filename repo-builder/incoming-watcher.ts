import { basename } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import { LISTING_SUFFIX } from './listing.js';
import type { RepoBuilder, RunSummary } from './repo-builder.js';

/** How long to wait before retrying after a publish failed (disk full, gpg missing...). */
const RETRY_MS = 5000;

/**
 * Watches the incoming directory and runs the builder when listings appear. Only a listing
 * (written last, by rename) starts work; listings that arrive close together are published in
 * one run (debounced); runs never overlap (a listing arriving mid-run triggers one more run).
 * What arrived while the builder was down is handled by the first run at start.
 */
export class IncomingWatcher {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(
    private readonly builder: RepoBuilder,
    private readonly log: Logger,
    private readonly onRun: (s: RunSummary) => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    const dir = this.builder.cfg.incomingDir;
    this.watcher = watch(dir, {
      // Security: never follow a symlink someone drops in the incoming directory.
      followSymlinks: false,
      depth: 0,
      ignoreInitial: true,
      ignored: (p: string) => basename(p).startsWith('.') || p.endsWith('.tmp'),
    });
    this.watcher.on('add', (p: string) => {
      if (p.endsWith(LISTING_SUFFIX)) this.schedule(this.builder.cfg.debounceMs);
    });
    this.watcher.on('error', (e: unknown) => this.log.error({ err: e instanceof Error ? e.message : String(e) }, 'watch error'));
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, ms);
  }

  private kick(): void {
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.builder
      .runOnce()
      .then((s) => this.onRun(s))
      .catch((e: unknown) => {
        this.log.error({ err: e instanceof Error ? e.message : String(e) }, `publish failed; retrying in ${RETRY_MS} ms`);
        this.schedule(RETRY_MS);
      })
      .then(async () => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.schedule(this.builder.cfg.debounceMs);
        }
        await this.scheduleGc();
      });
  }

  /** Wakes up when the oldest garbage's grace period ends, so old files do not linger. */
  private async scheduleGc(): Promise<void> {
    if (this.closed) return;
    const due = await this.builder.nextGarbageDueMs().catch(() => undefined);
    if (this.gcTimer !== undefined) clearTimeout(this.gcTimer);
    if (due === undefined) return;
    this.gcTimer = setTimeout(() => this.kick(), Math.min(due + 50, 2 ** 31 - 1));
  }

  /** Stops watching and waits for a run in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.gcTimer !== undefined) clearTimeout(this.gcTimer);
    await this.watcher?.close();
    await this.running;
  }
}
