import { crc32 } from 'node:zlib';
import { constants } from 'node:fs';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';

/** One log record as the wire carries it (see `attempt.log` in protocol/catalogue.ts). */
export type LogRecord =
  | { kind: 'data'; seq: number; stream: 'stdout' | 'stderr'; data: Uint8Array }
  | { kind: 'dropped'; seq: number; fromSeq: number; toSeq: number; droppedBytes: number }
  | { kind: 'end'; seq: number };

/** Options of the {@link AttemptLogStore}; all optional but `dir`. */
export interface LogStoreOptions {
  /** Root of the logs: `<dir>/<jobId div 1000>/<jobId>-<attempt>.log`. */
  dir: string;
  /** Attempt logs kept open at once (least recently used ones are closed). Default 256. */
  maxOpen?: number;
  /** Remembered read positions (seq -> byte offset) for followers. Default 4,096. */
  maxCursors?: number;
  /** fsync each appended batch before it is acknowledged. Default true. */
  fsync?: boolean;
  /**
   * Largest log file of one attempt. Past it, output records are stored as `dropped` markers
   * (seq and byte count kept, bytes not), so a job that floods its output cannot fill the
   * master's disk. Default 1 GiB.
   */
  maxBytes?: number;
}

/*
 * File format, one file per attempt, records back to back:
 *   magic u8 (0xB1) | kind u8 (1 stdout, 2 stderr, 3 dropped, 4 end) | seq u48 BE | length u32 BE | crc32(payload) u32 BE | payload
 * The payload of `dropped` is fromSeq u64, toSeq u64, droppedBytes u64 (BE). A record with a torn
 * header, a short payload or a wrong crc ends the file: it is cut off when the file is opened
 * (a crash mid-append; the slave still holds everything above the acknowledged seq).
 */
const MAGIC = 0xb1;
const HEADER = 16;
/**
 * What a record costs in a log.read page besides its payload (its header on disk, its fields on
 * the wire), counted against the page's `maxBytes`; and the most records in one page. A log of
 * 500,000 one-byte records (a job alternating stdout and stderr) made one 1 MiB page of all of
 * them: 35 s of reads, 116 MB held, and a frame over the 16 MiB limit.
 */
const RECORD_OVERHEAD = 48;
const MAX_PAGE_RECORDS = 10_000;
const KIND_CODE = { stdout: 1, stderr: 2, dropped: 3, end: 4 } as const;

interface OpenLog {
  fh: FileHandle;
  /** Bytes of complete records. */
  size: number;
  lastSeq: number;
  ended: boolean;
  /** The seq of the record that came after a gap the last time one was refused (see append). */
  gapAt?: number;
  chain: Promise<unknown>;
  /** Appends and reads holding the handle (from the lookup that handed it out until they end). */
  users: number;
  /** Being closed (evicted, removed, or the store closes): handed out no more. */
  closing: boolean;
}

interface Header {
  kind: number;
  seq: number;
  length: number;
  crc: number;
}

/** A record as its header and payload (written with writev: the payload is not copied). */
function encode(r: LogRecord): [Buffer, Buffer] {
  let payload: Buffer;
  let kind: number;
  if (r.kind === 'data') {
    payload = Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength);
    kind = KIND_CODE[r.stream];
  } else if (r.kind === 'dropped') {
    payload = Buffer.alloc(24);
    payload.writeBigUInt64BE(BigInt(r.fromSeq), 0);
    payload.writeBigUInt64BE(BigInt(r.toSeq), 8);
    payload.writeBigUInt64BE(BigInt(r.droppedBytes), 16);
    kind = KIND_CODE.dropped;
  } else {
    payload = Buffer.alloc(0);
    kind = KIND_CODE.end;
  }
  const h = Buffer.alloc(HEADER);
  h.writeUInt8(MAGIC, 0);
  h.writeUInt8(kind, 1);
  h.writeUIntBE(r.seq, 2, 6);
  h.writeUInt32BE(payload.length, 8);
  h.writeUInt32BE(crc32(payload), 12);
  return [h, payload];
}

function decode(h: Header, payload: Buffer): LogRecord {
  switch (h.kind) {
    case 1:
    case 2:
      return { kind: 'data', seq: h.seq, stream: h.kind === 1 ? 'stdout' : 'stderr', data: payload };
    case 3:
      return {
        kind: 'dropped',
        seq: h.seq,
        fromSeq: Number(payload.readBigUInt64BE(0)),
        toSeq: Number(payload.readBigUInt64BE(8)),
        droppedBytes: Number(payload.readBigUInt64BE(16)),
      };
    default:
      return { kind: 'end', seq: h.seq };
  }
}

/** The header at `b[i]` (HEADER bytes there), or undefined when it is not one (a torn or foreign tail). */
function parseHeader(b: Buffer, i: number): Header | undefined {
  if (b.readUInt8(i) !== MAGIC) return undefined;
  const kind = b.readUInt8(i + 1);
  if (kind < 1 || kind > 4) return undefined;
  return { kind, seq: b.readUIntBE(i + 2, 6), length: b.readUInt32BE(i + 8), crc: b.readUInt32BE(i + 12) };
}

/** Bytes read from a log file at once while scanning it. */
const SCAN_BLOCK = 1024 * 1024;

/** Up to `length` bytes of `fh` at `offset` (fewer at the end of the file). */
async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(b, got, length - got, offset + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? b : b.subarray(0, got);
}

/**
 * Walks the records of `fh` from `from` up to `limit`, reading SCAN_BLOCK bytes at a time (one
 * read per record header and one per payload took 7.1 s to open a log of 100,000 records, and
 * 3.5 s for a read resuming near its end). `visit` gets each complete record (its payload a view
 * of the block: copy it to keep it past the next block) and returns false to stop before it.
 * Returns the offset where the walk stopped: `limit`, a torn or foreign record, or a stop.
 */
async function scanRecords(fh: FileHandle, from: number, limit: number, visit: (h: Header, off: number, payload: Buffer) => boolean): Promise<number> {
  let buf: Buffer = Buffer.alloc(0);
  let at = from; // file offset of buf[0]
  let off = from;
  const have = async (n: number): Promise<boolean> => {
    if (off + n <= at + buf.length) return true;
    if (off + n > limit) return false;
    at = off;
    buf = await readAt(fh, off, Math.min(Math.max(SCAN_BLOCK, n), limit - off));
    return buf.length >= n;
  };
  for (;;) {
    if (!(await have(HEADER))) return off;
    const h = parseHeader(buf, off - at);
    if (h === undefined || !(await have(HEADER + h.length))) return off;
    const start = off - at + HEADER;
    if (!visit(h, off, buf.subarray(start, start + h.length))) return off;
    off += HEADER + h.length;
  }
}

const NO_FILE: Promise<undefined> = Promise.resolve(undefined);
/** Attempts remembered as having no file (about 100 bytes each); past it, the oldest are asked of the disk again. */
const MAX_NO_FILE = 8192;

/** A reader's registration for the wakes of one job ({@link AttemptLogStore.watch}). */
export interface LogWatch {
  /** Resolves at the first wake since the watch began (at once if there was one), or after `ms`. */
  wait(ms: number): Promise<void>;
  /** Stops listening. */
  cancel(): void;
}

const WOKEN: LogWatch = { wait: () => Promise.resolve(), cancel: () => undefined };

/** What {@link AttemptLogStore.read} returns. */
export interface LogPage {
  records: LogRecord[];
  nextSeq: number;
  /** The `end` record is stored. */
  ended: boolean;
}

/**
 * The master's copy of every attempt's log, on disk only: appends are fsynced before they are
 * acknowledged, a seq already stored is skipped (the slave resends after a reconnect), and reads
 * stream from the file. Memory holds, per open log, a handle and three numbers, and a bounded
 * map of read positions so that a follower's next read does not rescan the file.
 *
 * An attempt's file is made by its first append: an attempt that printed nothing has none (its
 * end is the attempt's own end, committed by attempt.finish), and reading or asking about a log
 * that has no file finds it empty without making one. A file costs a new inode and its durable
 * first write: most of the master's kernel time per quiet job (docs/benchmarks.md).
 */
export class AttemptLogStore {
  private readonly dir: string;
  private readonly maxOpen: number;
  private readonly maxCursors: number;
  private readonly fsync: boolean;
  private readonly maxBytes: number;
  /** Open logs (LRU order); a lookup that found no file is not kept. */
  private readonly open = new Map<string, Promise<OpenLog | undefined>>();
  /**
   * Logs taken out of `open` and being closed: the next handle of the same log is loaded only
   * after that close, so that it reads the file with the old handle's appends complete.
   */
  private readonly retiring = new Map<string, Promise<void>>();
  /**
   * Attempts known to have no file: started by this process and nothing appended yet (see
   * {@link fresh}). Asking about them costs no system call. Oldest first; bounded.
   */
  private readonly noFile = new Set<string>();
  private readonly cursors = new Map<string, number>();
  private readonly waiters = new Map<number, Set<() => void>>();
  private closed = false;

  constructor(o: LogStoreOptions) {
    this.dir = o.dir;
    this.maxOpen = o.maxOpen ?? 256;
    this.maxCursors = o.maxCursors ?? 4096;
    this.fsync = o.fsync ?? true;
    this.maxBytes = o.maxBytes ?? 1024 ** 3;
    if (!Number.isSafeInteger(this.maxOpen) || this.maxOpen < 1) throw new BuilderError('BUILDER_ERR_CONFIG', 'log store maxOpen must be a positive integer');
  }

  /**
   * Where an attempt's log lives: `<dir>/<jobId div 1000>/<jobId>-<attempt>.log`. A thousand
   * jobs share one directory, so a new attempt costs one new inode (its file), not two: on ext4,
   * allocating inodes while many are being freed is the farm's largest kernel cost under load.
   */
  pathOf(jobId: number, attempt: number): string {
    return join(this.shardOf(jobId), `${jobId}-${attempt}.log`);
  }

  private shardOf(jobId: number): string {
    return join(this.dir, String(Math.floor(jobId / 1000)));
  }

  private key(jobId: number, attempt: number): string {
    return `${jobId}:${attempt}`;
  }

  /**
   * The attempt's open log, making its file when there is none. The caller holds it (`users`)
   * and lets it go when done: a handle is closed only once no one holds it.
   */
  private async get(jobId: number, attempt: number): Promise<OpenLog> {
    return (await this.hold(jobId, attempt, true))!;
  }

  /** As {@link get}, or undefined when the attempt has no file (none is made). */
  private find(jobId: number, attempt: number): Promise<OpenLog | undefined> {
    return this.hold(jobId, attempt, false);
  }

  private async hold(jobId: number, attempt: number, create: boolean): Promise<OpenLog | undefined> {
    for (;;) {
      // A log being closed (evicted meanwhile) is opened again. When creating, a lookup without
      // creating may have been in progress: when it found no file, look again (and make it).
      const l = await this.lookup(jobId, attempt, create);
      if (l === undefined && !create) return undefined;
      if (l !== undefined && !l.closing) {
        l.users++;
        return l;
      }
    }
  }

  /** Closes the log of entry `k`, just taken out of `open`; never rejects. */
  private retireEntry(k: string, p: Promise<OpenLog | undefined>): Promise<void> {
    const r: Promise<void> = p
      .then((l) => (l === undefined ? undefined : this.retire(l)))
      .catch(() => undefined)
      .finally(() => {
        if (this.retiring.get(k) === r) this.retiring.delete(k);
      });
    this.retiring.set(k, r);
    return r;
  }

  /** Closes a log no longer in the map once the appends and reads holding it are done. */
  private async retire(l: OpenLog): Promise<void> {
    l.closing = true;
    while (l.users > 0) await new Promise((r) => setTimeout(r, 5));
    await l.chain;
    await l.fh.close();
  }

  private lookup(jobId: number, attempt: number, create: boolean): Promise<OpenLog | undefined> {
    if (this.closed) return Promise.reject(new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the log store is closed'));
    const k = this.key(jobId, attempt);
    let p = this.open.get(k);
    if (p !== undefined) {
      // LRU: re-insert at the end.
      this.open.delete(k);
      this.open.set(k, p);
      return p;
    }
    if (create) this.noFile.delete(k);
    else if (this.noFile.has(k)) return NO_FILE;
    const before = this.retiring.get(k);
    p = before === undefined ? this.load(jobId, attempt, create) : before.then(() => this.load(jobId, attempt, create));
    this.open.set(k, p);
    const forget = () => {
      if (this.open.get(k) === p) this.open.delete(k);
    };
    void p.then((l) => l === undefined && forget(), forget);
    // A lookup that may find no file makes room only once it found one (else it would close a
    // live log for nothing).
    if (create) this.evict();
    else void p.then((l) => l !== undefined && this.evict(), () => undefined);
    return p;
  }

  private evict(): void {
    for (const [k, p] of this.open) {
      if (this.open.size <= this.maxOpen) break;
      this.open.delete(k);
      void this.retireEntry(k, p);
    }
  }

  /**
   * Opens the file (making it when `create`; undefined when it does not exist and not `create`)
   * and finds the last complete record; a torn tail is cut off.
   */
  private async load(jobId: number, attempt: number, create: boolean): Promise<OpenLog | undefined> {
    // With fsync on, O_DSYNC makes each write durable when it returns: one system call per
    // append instead of a write and a datasync (two trips through the thread pool).
    const flags = constants.O_RDWR | (create ? constants.O_CREAT : 0) | constants.O_NOFOLLOW | (this.fsync ? constants.O_DSYNC : 0);
    let fh: FileHandle;
    try {
      fh = await open(this.pathOf(jobId, attempt), flags, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!create) return undefined;
      // The shard's directory is made with its first log (one call fewer per attempt after that).
      await mkdir(this.shardOf(jobId), { recursive: true });
      fh = await open(this.pathOf(jobId, attempt), flags, 0o644);
    }
    try {
      const st = await fh.stat();
      let lastSeq = 0;
      let ended = false;
      const off = await scanRecords(fh, 0, st.size, (h, _at, payload) => {
        if (crc32(payload) !== h.crc) return false;
        lastSeq = h.seq;
        if (h.kind === 4) ended = true;
        return true;
      });
      if (off < st.size) await fh.truncate(off);
      return { fh, size: off, lastSeq, ended, chain: Promise.resolve(), users: 0, closing: false };
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /**
   * Says that an attempt was just started for the first time (its attempt number is new): it has
   * no file, so the questions about it before its first append (storedThrough, read) are answered
   * without a system call.
   */
  fresh(jobId: number, attempt: number): void {
    const k = this.key(jobId, attempt);
    this.noFile.add(k);
    if (this.noFile.size > MAX_NO_FILE) this.noFile.delete(this.noFile.values().next().value!);
  }

  /** Highest seq stored for an attempt (0 when none): the slave resends from this + 1. */
  async storedThrough(jobId: number, attempt: number): Promise<number> {
    const l = await this.find(jobId, attempt);
    if (l === undefined) return 0;
    l.users--;
    return l.lastSeq;
  }

  /**
   * Appends the records whose seq is above the highest stored one (and above the previous record
   * of the batch); nothing after an `end`. An output record must come right after the previous
   * one (seq + 1): at a gap the append stops, and the answer's `storedThrough` tells the slave
   * where to resend from (an earlier batch failed here while a later one got through). A
   * `dropped` marker may jump (it declares the loss); so may the same gap presented twice, or an
   * end, each then behind a marker the master writes. Resolves after the bytes are fsynced.
   */
  async append(jobId: number, attempt: number, records: readonly LogRecord[]): Promise<{ storedThrough: number; ended: boolean; appended: number }> {
    const l = await this.get(jobId, attempt);
    const run = l.chain.then(async () => {
      const parts: Buffer[] = [];
      let bytes = 0;
      let count = 0;
      let last = l.lastSeq;
      let ended = l.ended;
      let excess: { kind: 'dropped'; seq: number; fromSeq: number; toSeq: number; droppedBytes: number } | undefined;
      const push = (rec: LogRecord): void => {
        const [h, payload] = encode(rec);
        bytes += h.length + payload.length;
        parts.push(h, payload);
      };
      const flushExcess = (): void => {
        if (excess !== undefined) push(excess);
        excess = undefined;
      };
      for (const r of records) {
        if (ended || r.seq <= last) continue;
        if (r.kind !== 'dropped' && r.seq !== last + 1) {
          // A gap. Usually an earlier batch failed here while this one got through: refused, the
          // slave resends from storedThrough + 1. The same gap again, or an end (sent only once
          // the slave saw all its output acknowledged), means records the slave no longer has
          // are missing here (a log lost with the master's disk): declared lost, and on.
          if (r.kind === 'data' && l.gapAt !== r.seq) {
            l.gapAt = r.seq;
            break;
          }
          flushExcess();
          push({ kind: 'dropped', seq: r.seq - 1, fromSeq: last + 1, toSeq: r.seq - 1, droppedBytes: 0 });
        }
        l.gapAt = undefined;
        if (r.kind === 'dropped' && (r.fromSeq > r.toSeq || r.toSeq > r.seq)) {
          throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log record ${r.seq}: a dropped range must have fromSeq <= toSeq <= seq`);
        }
        if (r.seq > 2 ** 48 - 1) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log seq ${r.seq} is too large`);
        count++;
        last = r.seq;
        if (r.kind === 'data' && l.size + bytes + HEADER + r.data.byteLength > this.maxBytes) {
          // Over the cap: the batch's output from here on is one marker (its seqs and byte count),
          // so a flood of tiny records does not grow the file by a marker each.
          if (excess === undefined) excess = { kind: 'dropped', seq: r.seq, fromSeq: r.seq, toSeq: r.seq, droppedBytes: 0 };
          excess.seq = excess.toSeq = r.seq;
          excess.droppedBytes += r.data.byteLength;
          continue;
        }
        flushExcess();
        push(r);
        if (r.kind === 'end') ended = true;
      }
      flushExcess();
      if (parts.length > 0) {
        const w = (await l.fh.writev(parts, l.size)).bytesWritten;
        if (w < bytes) {
          // A short vectored write (rare on a regular file): finish the rest plainly.
          const rest = Buffer.concat(parts).subarray(w);
          for (let o = 0; o < rest.length; ) o += (await l.fh.write(rest, o, rest.length - o, l.size + w + o)).bytesWritten;
        }
        // Durable already: the file is open with O_DSYNC when fsync is on.
        l.size += bytes;
        l.lastSeq = last;
        l.ended = ended;
        this.wake(jobId);
      }
      return { storedThrough: l.lastSeq, ended: l.ended, appended: count };
    });
    l.chain = run.catch(() => undefined);
    try {
      return await run;
    } finally {
      l.users--;
    }
  }

  /**
   * Reads records with seq >= `fromSeq`, up to about `maxBytes` (payload and each record's
   * RECORD_OVERHEAD) and MAX_PAGE_RECORDS records (at least one record).
   * Streams from disk; a follower's next position is remembered so it does not rescan.
   */
  async read(jobId: number, attempt: number, fromSeq: number, maxBytes: number): Promise<LogPage> {
    const l = await this.find(jobId, attempt);
    if (l === undefined) return { records: [], nextSeq: fromSeq, ended: false };
    try {
      const limit = l.size;
      const ck = `${jobId}:${attempt}:${fromSeq}`;
      let off = this.cursors.get(ck) ?? 0;
      if (off > limit) off = 0;
      const records: LogRecord[] = [];
      let bytes = 0;
      let nextSeq = fromSeq;
      off = await scanRecords(l.fh, off, limit, (h, _at, payload) => {
        if (h.seq < fromSeq) return true;
        const cost = RECORD_OVERHEAD + h.length;
        if (records.length > 0 && (bytes + cost > maxBytes || records.length >= MAX_PAGE_RECORDS)) return false;
        // A copy: the payload is a view of the scan's block.
        records.push(decode(h, Buffer.from(payload)));
        bytes += cost;
        nextSeq = h.seq + 1;
        return true;
      });
      if (records.length > 0) {
        this.cursors.delete(`${jobId}:${attempt}:${nextSeq}`);
        this.cursors.set(`${jobId}:${attempt}:${nextSeq}`, off);
        while (this.cursors.size > this.maxCursors) this.cursors.delete(this.cursors.keys().next().value!);
      }
      if (records.length === 0 && fromSeq <= l.lastSeq) nextSeq = l.lastSeq + 1;
      return { records, nextSeq, ended: l.ended && nextSeq > l.lastSeq };
    } finally {
      l.users--;
    }
  }

  /**
   * Starts listening for {@link wake} of `jobId`. Made before a reader reads the job and its log,
   * so that a wake between those reads and its wait is not lost (the reader would sleep through
   * its whole long poll). `cancel` when not waiting after all.
   */
  watch(jobId: number): LogWatch {
    // Closed: nothing will wake a reader any more; it reads once more and answers.
    if (this.closed) return WOKEN;
    let set = this.waiters.get(jobId);
    if (set === undefined) this.waiters.set(jobId, (set = new Set()));
    const s = set;
    let woken = false;
    let timer: NodeJS.Timeout | undefined;
    let settle: (() => void) | undefined;
    const stop = (): void => {
      clearTimeout(timer);
      s.delete(onWake);
      if (s.size === 0 && this.waiters.get(jobId) === s) this.waiters.delete(jobId);
    };
    const onWake = (): void => {
      woken = true;
      stop();
      settle?.();
    };
    s.add(onWake);
    return {
      wait: (ms) =>
        woken
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
              settle = resolve;
              timer = setTimeout(() => {
                stop();
                resolve();
              }, ms);
            }),
      cancel: stop,
    };
  }

  /** True once {@link close} was called. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Wakes every reader waiting on `jobId` (new records, a state change). */
  wake(jobId: number): void {
    const set = this.waiters.get(jobId);
    if (set === undefined) return;
    for (const f of [...set]) f();
  }

  /**
   * Removes an attempt's log (the log retention): closes it once the appends and reads in
   * progress are done, then deletes the file. The caller records the removal first, so that
   * `log.read` stops opening it.
   */
  async remove(jobId: number, attempt: number): Promise<void> {
    const k = this.key(jobId, attempt);
    const p = this.open.get(k);
    if (p !== undefined) {
      this.open.delete(k);
      await this.retireEntry(k, p);
    }
    await this.retiring.get(k);
    await rm(this.pathOf(jobId, attempt), { force: true });
  }

  /** Wakes every waiter and closes every file. */
  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.waiters.keys()]) this.wake(id);
    const all = [...this.open.entries()];
    this.open.clear();
    await Promise.all([...all.map(([k, p]) => this.retireEntry(k, p)), ...this.retiring.values()]);
  }
}
