import { BuilderError } from '../../protocol/errors.js';
import { DEFAULT_READ_BYTES, type LogSpool, type SpoolRecord } from './log-spool.js';

/**
 * Sends one batch of records to the master. Resolves when the master has stored them (its
 * acknowledgement); rejects when the connection failed. Batches arrive in seq order, several may
 * be in flight at once (`window`), and a batch may repeat records the master already has after a
 * reconnect: the master keeps the first copy of each seq.
 */
export type SendLogRecords = (records: readonly SpoolRecord[]) => Promise<void>;

/** Options of a {@link SpoolSender}. */
export interface SpoolSenderOptions {
  /** Output bytes per batch (about: one record may go over). Default 256 KiB. */
  maxBatchBytes?: number;
  /** Batches sent and not yet acknowledged at once. Default 4. */
  window?: number;
  /** Called when a send fails; the sender has stopped and waits for {@link SpoolSender.start}. */
  onError?: (err: unknown) => void;
  /**
   * Never send the log's `end` record: `done` then resolves once the log has ended and every
   * record before its end is acknowledged, and the caller delivers the end itself (the slave
   * puts it in attempt.finish) and acknowledges it with `spool.ack`. Default false.
   */
  holdEnd?: boolean;
}

/**
 * The transport-neutral pump from a {@link LogSpool} to the master: reads from a seq onward,
 * keeps up to `window` batches in flight, acknowledges into the spool in order (which trims it),
 * and stops on the first failed send. After a reconnect, call `start(seq)` with the first seq the
 * master lacks; the spool still has everything after the last acknowledgement.
 */
export class SpoolSender {
  private readonly spool: LogSpool;
  private readonly send: SendLogRecords;
  private readonly maxBatchBytes: number;
  private readonly window: number;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly holdEnd: boolean;
  private generation = 0;
  private _running = false;
  private resolveDone!: () => void;
  private rejectDone!: (e: unknown) => void;
  /**
   * Resolves once the spool's `end` record is acknowledged (with `holdEnd`, every record before
   * it); rejects if the spool closes while the sender runs. Settled only by a running sender: after
   * {@link stop} (or a failed send) it stays pending until the next {@link start}.
   */
  readonly done: Promise<void>;

  constructor(spool: LogSpool, send: SendLogRecords, options: SpoolSenderOptions = {}) {
    this.spool = spool;
    this.send = send;
    this.maxBatchBytes = options.maxBatchBytes ?? DEFAULT_READ_BYTES;
    this.window = options.window ?? 4;
    if (!Number.isSafeInteger(this.maxBatchBytes) || this.maxBatchBytes <= 0 || !Number.isSafeInteger(this.window) || this.window <= 0) {
      throw new BuilderError('BUILDER_ERR_CONFIG', 'spool sender: maxBatchBytes and window must be positive integers');
    }
    this.onError = options.onError;
    this.holdEnd = options.holdEnd ?? false;
    this.done = new Promise<void>((res, rej) => {
      this.resolveDone = res;
      this.rejectDone = rej;
    });
    // A caller that never awaits `done` must not get an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /**
   * True when what the sender delivers is all acknowledged: the whole log, or with `holdEnd`
   * everything before its end record.
   */
  private get finished(): boolean {
    const spool = this.spool;
    return spool.complete || (this.holdEnd && spool.ended && spool.ackedSeq >= spool.lastSeq - 1);
  }

  /** True between start() and stop() (or a failed send, or the end). */
  get running(): boolean {
    return this._running;
  }

  /**
   * (Re)starts sending at `fromSeq` (default: the first unacknowledged seq). A `fromSeq` above
   * that acknowledges everything below it first (the master reported it has them).
   */
  start(fromSeq?: number): void {
    this.stop();
    const gen = ++this.generation;
    this._running = true;
    void this.loop(gen, fromSeq).catch((e: unknown) => this.fail(gen, e));
  }

  /** Stops sending (on disconnect). Results of batches still in flight are ignored. */
  stop(): void {
    this.generation++;
    this._running = false;
  }

  private fail(gen: number, e: unknown): void {
    if (gen !== this.generation) return;
    this.stop();
    if (this.spool.isClosed) {
      this.rejectDone(e);
      return;
    }
    this.onError?.(e);
  }

  private async loop(gen: number, fromSeq: number | undefined): Promise<void> {
    const spool = this.spool;
    if (fromSeq !== undefined && fromSeq - 1 > spool.ackedSeq) await spool.ack(Math.min(fromSeq - 1, spool.lastSeq));
    let next = Math.max(fromSeq ?? 0, spool.ackedSeq + 1);
    const inflight: Array<Promise<void>> = [];
    let tail: Promise<void> = Promise.resolve();
    while (gen === this.generation) {
      if (this.finished) {
        this._running = false;
        this.resolveDone();
        return;
      }
      if (spool.isClosed) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'log spool closed before the log was acknowledged');
      if (inflight.length >= this.window) {
        await inflight.shift();
        continue;
      }
      const recs = await spool.read(next, this.maxBatchBytes);
      if (gen !== this.generation) return;
      // The end record is the last one of a log: held back, it is left to the caller.
      if (this.holdEnd && recs[recs.length - 1]?.kind === 'end') recs.pop();
      const last = recs[recs.length - 1];
      if (last === undefined) {
        if (inflight.length > 0) await inflight.shift();
        else if (!spool.ended) await spool.waitFor(next - 1);
        else if (!this.finished) throw new BuilderError('BUILDER_ERR_INTERNAL', 'log spool: nothing left to read but not acknowledged');
        continue;
      }
      next = last.seq + 1;
      const sent = this.send(recs);
      const prev = tail;
      // Acknowledge in order: a batch's ack waits for every earlier batch's ack.
      const acked = Promise.all([sent, prev]).then(async () => {
        if (gen === this.generation) await spool.ack(last.seq);
      });
      tail = acked;
      inflight.push(
        acked.catch((e: unknown) => {
          this.fail(gen, e);
        }),
      );
    }
  }
}
