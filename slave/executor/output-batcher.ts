import type { LogChunk, LogStream } from '../spool/index.js';

/**
 * Where an attempt's output goes: a {@link LogSpool} fits as is. `append` resolves when the batch
 * is stored; while it is pending, the executor stops reading the job's pipes (backpressure)
 * instead of buffering without bound.
 */
export interface LogSink {
  append(chunks: readonly LogChunk[]): Promise<void>;
}

interface OpenChunk {
  seq: number;
  stream: LogStream;
  parts: Buffer[];
  bytes: number;
}

export interface OutputBatcherOptions {
  readonly batchBytes: number;
  readonly flushIntervalMs: number;
  readonly maxChunkBytes: number;
}

/**
 * Turns the two pipes' data events into ordered, batched chunks. Every chunk gets the next seq
 * (one counter for both streams, so the interleaving the slave observed is kept); consecutive
 * data of one stream is merged into one chunk up to `maxChunkBytes`. A batch is written when it
 * reaches `batchBytes` or `flushIntervalMs` after its first byte. At most one write is pending:
 * when the next batch fills up meanwhile, `pause` is called and `resume` once there is room, so
 * memory holds at most two batches.
 */
export class OutputBatcher {
  private readonly sink: LogSink;
  private readonly o: OutputBatcherOptions;
  private readonly pause: () => void;
  private readonly resume: () => void;
  private nextSeq: number;
  private batch: OpenChunk[] = [];
  private batchBytes = 0;
  private writing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private due = false;
  private paused = false;
  private _error: unknown;
  /** Bytes received per stream. */
  readonly bytes = { stdout: 0, stderr: 0 };
  /** Bytes not stored because the sink failed. */
  lostBytes = 0;

  constructor(sink: LogSink, o: OutputBatcherOptions, firstSeq: number, pause: () => void, resume: () => void) {
    this.sink = sink;
    this.o = o;
    this.nextSeq = firstSeq;
    this.pause = pause;
    this.resume = resume;
  }

  /** True while the pipes are paused because the sink is behind. */
  get isPaused(): boolean {
    return this.paused;
  }

  /** The last seq handed out (firstSeq - 1 when none). */
  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  /** The first error of the sink, if any (output after it is counted in `lostBytes`, not stored). */
  get error(): unknown {
    return this._error;
  }

  push(stream: LogStream, data: Buffer): void {
    if (data.length === 0) return;
    this.bytes[stream] += data.length;
    let off = 0;
    while (off < data.length) {
      const last = this.batch[this.batch.length - 1];
      if (last !== undefined && last.stream === stream && last.bytes < this.o.maxChunkBytes) {
        const take = Math.min(this.o.maxChunkBytes - last.bytes, data.length - off);
        last.parts.push(data.subarray(off, off + take));
        last.bytes += take;
        off += take;
        this.batchBytes += take;
      } else {
        const take = Math.min(this.o.maxChunkBytes, data.length - off);
        this.batch.push({ seq: this.nextSeq++, stream, parts: [data.subarray(off, off + take)], bytes: take });
        off += take;
        this.batchBytes += take;
      }
    }
    if (this.timer === undefined && !this.due) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.due = true;
        this.kick();
      }, this.o.flushIntervalMs);
    }
    if (this.batchBytes >= this.o.batchBytes) this.due = true;
    this.kick();
  }

  private kick(): void {
    if (this.writing !== undefined) {
      if (this.batchBytes >= this.o.batchBytes && !this.paused) {
        this.paused = true;
        this.pause();
      }
      return;
    }
    if (!this.due || this.batch.length === 0) return;
    this.startWrite();
  }

  private startWrite(): void {
    const chunks: LogChunk[] = this.batch.map((c) => ({ seq: c.seq, stream: c.stream, data: c.parts.length === 1 && c.parts[0] !== undefined ? c.parts[0] : Buffer.concat(c.parts, c.bytes) }));
    const bytes = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    this.due = false;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    // After the first sink error, output is drained from the pipes and counted, not stored.
    const write = this._error === undefined ? this.sink.append(chunks) : Promise.reject(new Error('log sink failed earlier'));
    this.writing = write.then(
      () => undefined,
      (e: unknown) => {
        this._error ??= e;
        this.lostBytes += bytes;
      },
    ).then(() => {
      this.writing = undefined;
      if (this.batchBytes >= this.o.batchBytes) this.due = true;
      if (this.batch.length > 0 && this.due) this.startWrite();
      else if (this.batch.length > 0 && this.timer === undefined) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.due = true;
          this.kick();
        }, this.o.flushIntervalMs);
      }
      if (this.paused && this.batchBytes < this.o.batchBytes) {
        this.paused = false;
        this.resume();
      }
    });
  }

  /** Writes what is left and resolves when every write has settled (the pipes are closed by now). */
  async flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    for (;;) {
      if (this.writing !== undefined) {
        await this.writing;
        continue;
      }
      if (this.batch.length === 0) return;
      this.due = true;
      this.startWrite();
    }
  }
}
