import { closeSync, constants, fstatSync, fsync, ftruncateSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { compileLogSpoolOptions, type CompiledLogSpoolOptions, type LogSpoolOptions } from './log-spool-options.js';
import { decodeRecord, encodeRecord, MAX_SEQ, RECORD_HEADER_BYTES, RecordType, type RawRecord } from './record-codec.js';

/** The two output streams of a job. */
export type LogStream = 'stdout' | 'stderr';

/** A piece of one stream's output with its per-attempt sequence number (shared by both streams). */
export interface LogChunk {
  readonly seq: number;
  readonly stream: LogStream;
  readonly data: Buffer;
}

/** What {@link LogSpool.read} returns: output, a marker for dropped output, or the end of the log. */
export type SpoolRecord =
  | { readonly kind: 'data'; readonly seq: number; readonly stream: LogStream; readonly data: Buffer }
  | {
      readonly kind: 'dropped';
      /** The marker's own seq: the last seq it stands for. */
      readonly seq: number;
      /** First seq that may be missing (records before it were delivered or are kept). */
      readonly fromSeq: number;
      readonly toSeq: number;
      /** Output bytes dropped. */
      readonly droppedBytes: number;
    }
  | { readonly kind: 'end'; readonly seq: number };

interface Segment {
  readonly index: number;
  readonly path: string;
  /** 0 when the segment holds no record yet. */
  firstSeq: number;
  lastSeq: number;
  /** Bytes on disk. */
  size: number;
  /** Output payload bytes (not headers, not markers). */
  dataBytes: number;
  marker: { fromSeq: number; toSeq: number; droppedBytes: number } | undefined;
}

/** Records written to the active segment in one go, and what they add to its summary. */
interface Piece {
  bufs: Buffer[];
  bytes: number;
  firstSeq: number;
  lastSeq: number;
  dataBytes: number;
}

/** The active segment's summary (and how many segments there were) before an append. */
interface Savepoint {
  readonly segments: number;
  readonly seg: Segment;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly size: number;
  readonly dataBytes: number;
}

const SEGMENT_RE = /^seg-(\d{10})\.log$/;
/**
 * Every segment file starts with a 16-byte header: 8 bytes of magic, then the spool's
 * acknowledged seq (u48 LE) as it was when the header was last written, a flags byte (1: the log
 * had ended and was acknowledged through its end) and a zero byte. The header
 * of the active segment is rewritten in place on each ack, so the acknowledgement needs no file
 * of its own (a file per attempt is an inode allocated and freed per attempt, which is what a
 * busy slave's file system spends its time on). A reopened spool takes the highest ack of its
 * segments.
 */
const SEGMENT_MAGIC = Buffer.from('BSPOOL1\n', 'latin1');
export const SEGMENT_HEADER_BYTES = 16;
/** Byte 14 of the segment header: the log had ended and was acknowledged through its end. */
const HEADER_FLAG_ENDED = 1;
/** Default `maxBytes` of one {@link LogSpool.read}. */
export const DEFAULT_READ_BYTES = 256 * 1024;

function segmentName(index: number): string {
  return `seg-${String(index).padStart(10, '0')}.log`;
}

/** The first segment's file name (a new spool's only file, in the usual case). */
export const FIRST_SEGMENT_NAME = segmentName(1);

const fsyncFd = promisify(fsync);

/**
 * A durable, bounded, per-attempt log spool: the single source of an attempt's log on the slave.
 *
 * The executor appends batches of chunks (seq strictly increasing across stdout and stderr); the
 * sender reads from any seq onward and sends; the master's acknowledgement trims what it holds.
 * Data lives in segment files (`seg-NNNNNNNNNN.log`, each with a small header that also holds the
 * acknowledged seq), so a restarted slave reopens the spool, drops a torn last record and
 * continues after the last seq. The spool may share its directory with other files (it only
 * touches `seg-*` names), and {@link destroy} removes the directory.
 *
 * Limit: `maxBytes` of unacknowledged data on disk. Past it, the segments between the oldest
 * unacknowledged one and the one being written are replaced by one `dropped` marker (the start of
 * the log and its newest output are what a reader of a failed build needs).
 *
 * The file operations of appends, reads and acknowledgements are synchronous calls on open
 * descriptors (the API stays asynchronous and ordered): each is one system call on the page cache,
 * at most `maxRecordBytes`-sized batches or one read of `maxBytes`, while a round trip through
 * libuv's thread pool cost about ten times the CPU of a small call (a no-op attempt made about
 * ten). `fsync` (when set) and the recovery of a spool on open stay asynchronous.
 */
export class LogSpool {
  readonly dir: string;
  readonly options: CompiledLogSpoolOptions;
  private segments: Segment[] = [];
  /** Descriptor of the active (last) segment, open read-write. */
  private active: number | undefined;
  private _lastSeq = 0;
  private _ackedSeq = 0;
  private _ended = false;
  private closed = false;
  /** The first {@link close}'s promise, returned to every later caller. */
  private closing: Promise<void> | undefined;
  private _droppedBytes = 0;
  /** Highest seq handed out by read() since open: a marker never claims records below it. */
  private readThrough = 0;
  private hint: { segment: number; offset: number; nextSeq: number } | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private waiters: Array<() => void> = [];
  /**
   * The log's last records (its end, and a marker of output lost before it) when {@link end}
   * could not write them (a full disk): read from here, and gone with the process.
   */
  private unwritten: SpoolRecord[] = [];

  private constructor(dir: string, options: CompiledLogSpoolOptions) {
    this.dir = dir;
    this.options = options;
  }

  /** Opens the spool in `dir`, creating it, or reopening what a previous process left there. */
  static async open(dir: string, options: LogSpoolOptions = {}): Promise<LogSpool> {
    const spool = new LogSpool(dir, compileLogSpoolOptions(options));
    try {
      await spool.load();
    } catch (e) {
      spool.dropActive();
      throw e;
    }
    return spool;
  }

  /**
   * A new, empty spool in `dir`, which must exist and hold no spool of a log to keep: its first
   * segment is created, or truncated if there is one (a recycled attempt dir keeps that file, so
   * that a new attempt allocates no inode). Other `seg-*` files in `dir` would be read as part of
   * this log by a later {@link open}: the caller makes sure there are none.
   */
  static async create(dir: string, options: LogSpoolOptions = {}): Promise<LogSpool> {
    const spool = new LogSpool(dir, compileLogSpoolOptions(options));
    try {
      spool.startSegment(1);
    } catch (e) {
      spool.dropActive();
      throw e;
    }
    return spool;
  }

  /**
   * Closes the active descriptor of a spool that failed to open (a raw fd is not closed by the
   * garbage collector): the caller never gets the spool, so nothing else could close it.
   */
  private dropActive(): void {
    const fd = this.active;
    this.active = undefined;
    this.closed = true;
    if (fd === undefined) return;
    try {
      closeSync(fd);
    } catch {
      // the error that made the open fail is the one to report
    }
  }

  /** Highest seq appended so far (0 when none). After a reopen, appending continues above it. */
  get lastSeq(): number {
    return this._lastSeq;
  }

  /** Highest seq the receiver acknowledged. */
  get ackedSeq(): number {
    return this._ackedSeq;
  }

  /** True once {@link end} was called (also in an earlier process). */
  get ended(): boolean {
    return this._ended;
  }

  /** True when the log has ended and everything in it was acknowledged: the spool can be destroyed. */
  get complete(): boolean {
    return this._ended && this._ackedSeq >= this._lastSeq;
  }

  /**
   * True when {@link end} could not write its records (a full disk): the end is kept in memory
   * and read and acknowledged as usual, but a restart finds the log not ended.
   */
  get endInMemory(): boolean {
    return this.unwritten.length > 0;
  }

  /** True after {@link close} or {@link destroy}. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes on disk now (unacknowledged data, markers and headers). */
  get bytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  /** Output bytes dropped because of `maxBytes` (as far as the markers on disk remember). */
  get droppedBytes(): number {
    return this._droppedBytes;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(() => {
      if (this.closed) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'log spool is closed');
      return fn();
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const all = await readdir(this.dir);
    const names = all.flatMap((n) => {
      const m = SEGMENT_RE.exec(n);
      return m?.[1] === undefined ? [] : [{ name: n, index: Number(m[1]) }];
    });
    names.sort((a, b) => a.index - b.index);
    // A marker being written when the previous process died: the segment it was to replace is intact.
    for (const n of all) if (n.endsWith('.log.tmp')) await rm(join(this.dir, n), { force: true });
    const scanned: Segment[] = [];
    for (const { name, index } of names) {
      const { seg, ack } = await this.scanSegment(join(this.dir, name), index);
      if (ack > this._ackedSeq) this._ackedSeq = ack;
      scanned.push(seg);
    }
    this._lastSeq = this._ackedSeq;
    for (const seg of scanned) if (seg.lastSeq > this._lastSeq) this._lastSeq = seg.lastSeq;
    const last = scanned[scanned.length - 1];
    for (const seg of scanned) {
      // The newest segment stays as the active one (also when it is fully acknowledged: its
      // header is then what remembers the ack and thereby the last seq).
      if (seg !== last && (seg.firstSeq === 0 || seg.lastSeq <= this._ackedSeq)) {
        if (seg.marker !== undefined) this._droppedBytes -= seg.marker.droppedBytes;
        unlinkSync(seg.path);
        continue;
      }
      this.segments.push(seg);
    }
    if (last === undefined || last.marker !== undefined) {
      // A marker segment is never appended to (it is rewritten whole when merged).
      this.startSegment((last?.index ?? 0) + 1);
      return;
    }
    this.active = openSync(last.path, constants.O_RDWR | constants.O_NOFOLLOW);
    if (last.firstSeq !== 0 && last.lastSeq <= this._ackedSeq) this.resetActive();
    else this.writeHeader();
  }

  /** Reads a segment, cuts a torn or corrupt tail, and returns its summary and the ack its header holds. */
  private async scanSegment(path: string, index: number): Promise<{ seg: Segment; ack: number }> {
    const buf = await readFile(path);
    const seg: Segment = { index, path, firstSeq: 0, lastSeq: 0, size: 0, dataBytes: 0, marker: undefined };
    let ack = 0;
    let off = SEGMENT_HEADER_BYTES;
    let records = 0;
    let marker: Segment['marker'];
    if (buf.length < SEGMENT_HEADER_BYTES || !buf.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) {
      // Not a segment of this format (or a header torn at creation): nothing in it can be trusted.
      off = 0;
    } else {
      ack = buf.readUIntLE(8, 6);
      if ((buf.readUInt8(14) & HEADER_FLAG_ENDED) !== 0) this._ended = true;
      for (;;) {
        const r = decodeRecord(buf, off);
        if (typeof r === 'string') break;
        if (seg.firstSeq === 0) seg.firstSeq = r.seq;
        seg.lastSeq = r.seq;
        if (r.type === RecordType.stdout || r.type === RecordType.stderr) seg.dataBytes += r.payload.length;
        else if (r.type === RecordType.end) this._ended = true;
        else if (records === 0) marker = parseMarker(r);
        records++;
        off += r.length;
      }
    }
    // A marker segment holds its marker alone (written whole by dropOneMiddleSegment); a marker
    // among other records is the output lost before the end ({@link end}), in a data segment.
    if (records === 1) seg.marker = marker;
    if (seg.marker !== undefined) this._droppedBytes += seg.marker.droppedBytes;
    if (off < buf.length || off === 0) {
      // The previous process died mid-write (or the disk lied): keep the valid prefix only.
      const fh = await open(path, 'r+');
      try {
        if (off === 0) {
          await fh.write(this.headerBytes(0, false), 0, SEGMENT_HEADER_BYTES, 0);
          off = SEGMENT_HEADER_BYTES;
        }
        await fh.truncate(off);
      } finally {
        await fh.close();
      }
    }
    seg.size = off - SEGMENT_HEADER_BYTES;
    return { seg, ack };
  }

  private headerBytes(ack: number, ended = this._ended && ack >= this._lastSeq): Buffer {
    const b = Buffer.alloc(SEGMENT_HEADER_BYTES);
    SEGMENT_MAGIC.copy(b, 0);
    b.writeUIntLE(ack, 8, 6);
    // The end of the log, once acknowledged, may be gone from the records: the header keeps it.
    b.writeUInt8(ended ? HEADER_FLAG_ENDED : 0, 14);
    return b;
  }

  /** Rewrites the active segment's header with the current ack (16 bytes at offset 0: one page, never torn in practice). */
  private writeHeader(ack = this._ackedSeq, fd = this.active): void {
    if (fd !== undefined) writeAll(fd, this.headerBytes(ack), 0);
  }

  /**
   * Empties the active segment in place (everything in it is acknowledged), keeping its file:
   * a spool whose log is delivered as it goes uses one segment file for its whole life.
   */
  private resetActive(ack = this._ackedSeq): void {
    const seg = this.activeSegment();
    this.writeHeader(ack);
    if (this.active !== undefined) ftruncateSync(this.active, SEGMENT_HEADER_BYTES);
    seg.firstSeq = 0;
    seg.lastSeq = 0;
    seg.size = 0;
    seg.dataBytes = 0;
    if (this.hint?.segment === seg.index) this.hint = undefined;
  }

  /** Makes segment `index` the active one; throws (the spool unchanged, the file removed) if it cannot be made. */
  private startSegment(index: number): void {
    const path = join(this.dir, segmentName(index));
    // Read-write: the sender reads the active segment through the same descriptor.
    const fd = openEmpty(path, constants.O_RDWR);
    try {
      this.writeHeader(this._ackedSeq, fd);
    } catch (e) {
      closeSync(fd);
      rmSync(path, { force: true });
      throw e;
    }
    this.active = fd;
    this.segments.push({ index, path, firstSeq: 0, lastSeq: 0, size: 0, dataBytes: 0, marker: undefined });
  }

  private activeSegment(): Segment {
    const s = this.segments[this.segments.length - 1];
    if (s === undefined) throw new BuilderError('BUILDER_ERR_INTERNAL', 'log spool has no active segment');
    return s;
  }

  private rotate(): void {
    const cur = this.activeSegment();
    const old = this.active;
    // The new segment first: one that cannot be made (a full disk) leaves the current one active.
    this.startSegment(cur.index + 1);
    if (old !== undefined) closeSync(old);
  }

  /**
   * Appends chunks in order. Each seq must be above every seq appended before; each chunk's data
   * at most `maxRecordBytes`. Resolves when the bytes are written (to the page cache, or to disk
   * with `fsync`). An append that fails (a full disk) stores none of its chunks: the segments
   * are cut back to what they held, and `lastSeq` stays where it was.
   */
  append(chunks: readonly LogChunk[]): Promise<void> {
    return this.exclusive(async () => {
      if (this._ended) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'log spool: append after end');
      let prev = this._lastSeq;
      for (const c of chunks) {
        if (!Number.isSafeInteger(c.seq) || c.seq <= prev || c.seq > MAX_SEQ) {
          throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log spool: seq ${c.seq} is not above ${prev}`);
        }
        if (c.stream !== 'stdout' && c.stream !== 'stderr') {
          throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log spool: unknown stream ${String(c.stream)}`);
        }
        if (c.data.length > this.options.maxRecordBytes) {
          throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log spool: chunk of ${c.data.length} bytes exceeds maxRecordBytes ${this.options.maxRecordBytes}`);
        }
        prev = c.seq;
      }
      const undo = this.savepoint();
      try {
        // A segment's summary moves on only once its bytes are written.
        let piece: Piece = { bufs: [], bytes: 0, firstSeq: 0, lastSeq: 0, dataBytes: 0 };
        for (const c of chunks) {
          if (this.activeSegment().size + piece.bytes >= this.options.segmentBytes) {
            await this.writeActive(piece);
            piece = { bufs: [], bytes: 0, firstSeq: 0, lastSeq: 0, dataBytes: 0 };
            this.rotate();
          }
          const rec = encodeRecord(c.stream === 'stdout' ? RecordType.stdout : RecordType.stderr, c.seq, c.data);
          piece.bufs.push(rec);
          piece.bytes += rec.length;
          if (piece.firstSeq === 0) piece.firstSeq = c.seq;
          piece.lastSeq = c.seq;
          piece.dataBytes += c.data.length;
        }
        await this.writeActive(piece);
      } catch (e) {
        this.rollback(undo);
        throw e;
      }
      this._lastSeq = prev;
      try {
        await this.enforceLimit();
      } catch {
        // The chunks are stored; a marker that could not be written (a full disk) leaves the
        // segments it was to replace as they are, and the next append tries again.
      }
      this.wake();
    });
  }

  /** What {@link rollback} needs to undo an append. */
  private savepoint(): Savepoint {
    const seg = this.activeSegment();
    return { segments: this.segments.length, seg, firstSeq: seg.firstSeq, lastSeq: seg.lastSeq, size: seg.size, dataBytes: seg.dataBytes };
  }

  /**
   * Undoes a failed append: removes the segments it started and cuts the segment that was active
   * back to its size before (a failed write may have left part of its bytes there).
   */
  private rollback(s: Savepoint): void {
    while (this.segments.length > s.segments) {
      const seg = this.segments.pop() as Segment;
      const fd = this.active;
      this.active = undefined;
      if (fd !== undefined) closeSync(fd);
      rmSync(seg.path, { force: true });
      if (this.hint?.segment === seg.index) this.hint = undefined;
    }
    this.active ??= openSync(s.seg.path, constants.O_RDWR | constants.O_NOFOLLOW);
    s.seg.firstSeq = s.firstSeq;
    s.seg.lastSeq = s.lastSeq;
    s.seg.size = s.size;
    s.seg.dataBytes = s.dataBytes;
    ftruncateSync(this.active, SEGMENT_HEADER_BYTES + s.size);
  }

  /** Writes a piece at the end of the active segment, then counts it in the segment's summary. */
  private async writeActive(p: Piece): Promise<void> {
    if (p.bytes === 0) return;
    if (this.active === undefined) throw new BuilderError('BUILDER_ERR_BAD_STATE', 'log spool has no open segment');
    const seg = this.activeSegment();
    const buf = p.bufs.length === 1 && p.bufs[0] !== undefined ? p.bufs[0] : Buffer.concat(p.bufs, p.bytes);
    writeAll(this.active, buf, SEGMENT_HEADER_BYTES + seg.size);
    if (this.options.fsync) await fsyncFd(this.active);
    seg.size += buf.length;
    if (seg.firstSeq === 0) seg.firstSeq = p.firstSeq;
    seg.lastSeq = p.lastSeq;
    seg.dataBytes += p.dataBytes;
  }

  /**
   * Marks the end of the log with one `end` record and returns its seq (lastSeq + 1). `lost`
   * names output that never reached the spool (appends that failed, up to seq `toSeq`): a
   * `dropped` marker for `lastSeq + 1 .. toSeq` (its seq `toSeq`, `droppedBytes` as given) goes
   * before the end, which then has seq `toSeq + 1`, so that the reader of the log sees the loss.
   * Synced with `fsync`. When the records cannot be written (a full disk), the segment is cut
   * back and they are kept in memory ({@link endInMemory}): the log still ends and is read to its
   * end, and only a restart before it is acknowledged forgets them.
   */
  end(lost?: { toSeq: number; droppedBytes: number }): Promise<number> {
    return this.exclusive(async () => {
      if (this._ended) return this._lastSeq;
      const recs: SpoolRecord[] = [];
      if (lost !== undefined && lost.toSeq > this._lastSeq) {
        if (!Number.isSafeInteger(lost.toSeq) || lost.toSeq >= MAX_SEQ) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log spool: lost output up to seq ${lost.toSeq}`);
        recs.push({ kind: 'dropped', seq: lost.toSeq, fromSeq: this._lastSeq + 1, toSeq: lost.toSeq, droppedBytes: Number.isSafeInteger(lost.droppedBytes) && lost.droppedBytes > 0 ? lost.droppedBytes : 0 });
      }
      const seq = (recs[0]?.seq ?? this._lastSeq) + 1;
      recs.push({ kind: 'end', seq });
      const bufs = recs.map(encodeSpoolRecord);
      const piece: Piece = { bufs, bytes: bufs.reduce((n, b) => n + b.length, 0), firstSeq: recs[0]?.seq ?? seq, lastSeq: seq, dataBytes: 0 };
      const undo = this.savepoint();
      try {
        // writeActive syncs with `fsync`; without it the end is as durable as the rest of the log
        // (page cache: it survives a crash of the slave, not of the machine).
        await this.writeActive(piece);
      } catch {
        this.rollback(undo);
        this.unwritten = recs;
      }
      this._lastSeq = seq;
      this._ended = true;
      this.wake();
      return seq;
    });
  }

  /** Drops the middle until the spool fits in `maxBytes` (or nothing more can go). */
  private async enforceLimit(): Promise<void> {
    while (this.bytes > this.options.maxBytes) {
      if (!(await this.dropOneMiddleSegment())) return;
    }
  }

  private async dropOneMiddleSegment(): Promise<boolean> {
    // Keep segments[0] (the oldest unacknowledged output) and the active (last) segment.
    const c = this.segments[1];
    const n = this.segments[2];
    if (c === undefined || n === undefined) return false;
    let marker: { fromSeq: number; toSeq: number; droppedBytes: number };
    let merged: Segment | undefined;
    if (c.marker === undefined) {
      marker = { fromSeq: Math.max(c.firstSeq, this.readThrough + 1), toSeq: c.lastSeq, droppedBytes: c.dataBytes };
    } else if (n !== this.activeSegment()) {
      merged = n;
      const more = n.marker?.droppedBytes ?? n.dataBytes;
      marker = { fromSeq: c.marker.fromSeq, toSeq: n.lastSeq, droppedBytes: c.marker.droppedBytes + more };
      if (n.marker !== undefined) this._droppedBytes -= n.marker.droppedBytes;
      this._droppedBytes -= c.marker.droppedBytes;
    } else {
      return false;
    }
    marker.fromSeq = Math.min(marker.fromSeq, marker.toSeq);
    const rec = encodeRecord(RecordType.dropped, marker.toSeq, Buffer.from(JSON.stringify(marker)));
    const tmp = `${c.path}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      const whole = Buffer.concat([this.headerBytes(this._ackedSeq), rec]);
      await fh.write(whole, 0, whole.length, 0);
    } catch (e) {
      // A full disk: the segment stays as it is.
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw e;
    }
    await fh.close();
    // The marker replaces the segment atomically: a crash leaves either the data or the marker.
    await rename(tmp, c.path);
    if (merged !== undefined) {
      unlinkSync(merged.path);
      this.segments.splice(2, 1);
    }
    c.firstSeq = marker.toSeq;
    c.lastSeq = marker.toSeq;
    c.size = rec.length;
    c.dataBytes = 0;
    c.marker = marker;
    this._droppedBytes += marker.droppedBytes;
    if (this.hint !== undefined && (this.hint.segment === c.index || this.hint.segment === merged?.index)) this.hint = undefined;
    return true;
  }

  /**
   * Returns records with seq >= `fromSeq`, in order, about `maxBytes` of output at most (at least
   * one record when there is one). An empty array means nothing at or after `fromSeq` yet.
   */
  read(fromSeq: number, maxBytes: number = DEFAULT_READ_BYTES): Promise<SpoolRecord[]> {
    return this.exclusive(async () => {
      const out: SpoolRecord[] = [];
      let bytes = 0;
      for (const seg of this.segments) {
        if (seg.firstSeq === 0 || seg.lastSeq < fromSeq) continue;
        let offset = 0;
        const h = this.hint;
        if (h !== undefined && h.segment === seg.index && h.nextSeq <= fromSeq) offset = h.offset;
        // The active segment is read through its own descriptor; an older one is opened for the read.
        const own = seg === this.segments[this.segments.length - 1] && this.active !== undefined;
        const fd = own ? (this.active as number) : openSync(seg.path, constants.O_RDONLY | constants.O_NOFOLLOW);
        try {
          while (offset < seg.size && bytes < maxBytes) {
            // Read about what is asked for; a first record larger than that is read whole in a second go.
            let want = Math.min(seg.size - offset, Math.max(maxBytes - bytes, 0) + RECORD_HEADER_BYTES);
            let buf = Buffer.allocUnsafe(want);
            let bytesRead = readSync(fd, buf, 0, want, SEGMENT_HEADER_BYTES + offset);
            if (bytesRead >= RECORD_HEADER_BYTES && decodeRecord(buf.subarray(0, bytesRead), 0) === 'incomplete') {
              want = Math.min(seg.size - offset, buf.readUInt32LE(0) + RECORD_HEADER_BYTES);
              buf = Buffer.allocUnsafe(want);
              bytesRead = readSync(fd, buf, 0, want, SEGMENT_HEADER_BYTES + offset);
            }
            let off = 0;
            const view = buf.subarray(0, bytesRead);
            for (;;) {
              const r = decodeRecord(view, off);
              if (r === 'incomplete') break;
              if (r === 'corrupt') throw new BuilderError('BUILDER_ERR_INTERNAL', `log spool: corrupt record in ${seg.path}`);
              off += r.length;
              if (r.seq < fromSeq) continue;
              const rec = toSpoolRecord(r);
              out.push(rec);
              if (rec.kind === 'data') bytes += rec.data.length;
              this.hint = { segment: seg.index, offset: offset + off, nextSeq: r.seq + 1 };
              if (r.seq > this.readThrough) this.readThrough = r.seq;
              if (bytes >= maxBytes) break;
            }
            if (off === 0) throw new BuilderError('BUILDER_ERR_INTERNAL', `log spool: unreadable record in ${seg.path}`);
            offset += off;
          }
        } finally {
          if (!own) closeSync(fd);
        }
        if (bytes >= maxBytes) break;
      }
      if (bytes < maxBytes) {
        for (const r of this.unwritten) {
          if (r.seq < fromSeq) continue;
          out.push(r);
          if (r.seq > this.readThrough) this.readThrough = r.seq;
        }
      }
      return out;
    });
  }

  /**
   * Acknowledges every record up to `seq`: they are removed from disk and never read again.
   * Acknowledging at or below the current acknowledgement is a no-op; above `lastSeq` is an error.
   */
  ack(seq: number): Promise<void> {
    return this.exclusive(async () => {
      if (!Number.isSafeInteger(seq) || seq > this._lastSeq) {
        throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `log spool: ack ${seq} is above the last seq ${this._lastSeq}`);
      }
      if (seq <= this._ackedSeq) return;
      const active = this.activeSegment();
      const keep: Segment[] = [];
      for (const s of this.segments) {
        if (s !== active && s.firstSeq !== 0 && s.lastSeq <= seq) {
          if (s.marker !== undefined) this._droppedBytes -= s.marker.droppedBytes;
          unlinkSync(s.path);
        } else {
          keep.push(s);
        }
      }
      this.segments = keep;
      // The ack goes to disk in the active segment's header; a segment acknowledged whole is
      // emptied in place rather than replaced by a new file.
      if (active.firstSeq !== 0 && active.lastSeq <= seq) this.resetActive(seq);
      else this.writeHeader(seq);
      if (this.hint !== undefined && !this.segments.some((s) => s.index === this.hint?.segment)) this.hint = undefined;
      if (this.unwritten.length > 0) this.unwritten = this.unwritten.filter((r) => r.seq > seq);
      // Last, so that `complete` never reports a spool whose acknowledged data is still there.
      this._ackedSeq = seq;
    });
  }

  /** Resolves when a record above `afterSeq` exists, or the spool is closed. */
  waitFor(afterSeq: number): Promise<void> {
    if (this._lastSeq > afterSeq || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this._lastSeq > afterSeq || this.closed) resolve();
        else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Closes the files; the data stays on disk for a later {@link LogSpool.open}. */
  close(): Promise<void> {
    // Every caller gets the first close's promise: a second close while the first one waits for
    // the queue is not a use of a closed spool.
    this.closing ??= this.exclusive(async () => {
      const fd = this.active;
      this.active = undefined;
      try {
        if (fd !== undefined) closeSync(fd);
      } finally {
        this.closed = true;
        this.wake();
      }
    });
    return this.closing;
  }

  /** Closes the spool and removes its directory (once the master has the whole log). */
  async destroy(): Promise<void> {
    await this.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * Opens `path` (created 0600 if missing) empty, without following a symlink. Not O_TRUNC:
 * truncating a file to size 0 makes ext4 (auto_da_alloc) write its data back when it is next
 * closed, and the truncation of a reused file then waits for that write-back; a recycled file is
 * already empty, so it is truncated only when it is not.
 */
export function openEmpty(path: string, flags: number): number {
  const fd = openSync(path, flags | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    if (fstatSync(fd).size > 0) ftruncateSync(fd, 0);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

/** Writes all of `buf` at `position` (a short write continues where it stopped). */
function writeAll(fd: number, buf: Buffer, position: number): void {
  let written = 0;
  while (written < buf.length) written += writeSync(fd, buf, written, buf.length - written, position + written);
}

function parseMarker(r: RawRecord): { fromSeq: number; toSeq: number; droppedBytes: number } {
  try {
    const v = JSON.parse(r.payload.toString('utf8')) as { fromSeq?: unknown; toSeq?: unknown; droppedBytes?: unknown };
    if (typeof v.fromSeq === 'number' && typeof v.toSeq === 'number' && typeof v.droppedBytes === 'number') {
      return { fromSeq: v.fromSeq, toSeq: v.toSeq, droppedBytes: v.droppedBytes };
    }
  } catch {
    // fall through: a marker we cannot read still marks a gap ending at its seq
  }
  return { fromSeq: r.seq, toSeq: r.seq, droppedBytes: 0 };
}

function encodeSpoolRecord(r: SpoolRecord): Buffer {
  switch (r.kind) {
    case 'data':
      return encodeRecord(r.stream === 'stdout' ? RecordType.stdout : RecordType.stderr, r.seq, r.data);
    case 'dropped':
      return encodeRecord(RecordType.dropped, r.seq, Buffer.from(JSON.stringify({ fromSeq: r.fromSeq, toSeq: r.toSeq, droppedBytes: r.droppedBytes })));
    case 'end':
      return encodeRecord(RecordType.end, r.seq, Buffer.alloc(0));
  }
}

function toSpoolRecord(r: RawRecord): SpoolRecord {
  switch (r.type) {
    case RecordType.stdout:
      return { kind: 'data', seq: r.seq, stream: 'stdout', data: r.payload };
    case RecordType.stderr:
      return { kind: 'data', seq: r.seq, stream: 'stderr', data: r.payload };
    case RecordType.end:
      return { kind: 'end', seq: r.seq };
    case RecordType.dropped: {
      const m = parseMarker(r);
      return { kind: 'dropped', seq: r.seq, fromSeq: m.fromSeq, toSeq: m.toSeq, droppedBytes: m.droppedBytes };
    }
  }
}
