import { crc32 } from 'node:zlib';

/**
 * On-disk record format of the log spool. One record:
 *
 * ```
 * offset size
 *  0     4   payload length (u32 LE)
 *  4     1   type: 1 stdout, 2 stderr, 3 dropped marker, 4 end of log
 *  5     1   reserved, 0
 *  6     6   seq (u48 LE)
 * 12     4   crc32 of bytes 0..11 and the payload
 * 16     n   payload
 * ```
 *
 * The crc lets a reopened spool find a torn last record (the slave died mid-write) and cut it off
 * instead of replaying garbage.
 */
export const RECORD_HEADER_BYTES = 16;
/** Largest seq the format stores (2^48 - 1). */
export const MAX_SEQ = 2 ** 48 - 1;

export const RecordType = { stdout: 1, stderr: 2, dropped: 3, end: 4 } as const;
export type RecordTypeCode = (typeof RecordType)[keyof typeof RecordType];

export interface RawRecord {
  readonly type: RecordTypeCode;
  readonly seq: number;
  readonly payload: Buffer;
  /** Offset of the record's first byte in the buffer it was decoded from. */
  readonly offset: number;
  /** Header plus payload. */
  readonly length: number;
}

export function encodeRecord(type: RecordTypeCode, seq: number, payload: Buffer): Buffer {
  const buf = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  buf.writeUInt32LE(payload.length, 0);
  buf.writeUInt8(type, 4);
  buf.writeUInt8(0, 5);
  buf.writeUIntLE(seq, 6, 6);
  payload.copy(buf, RECORD_HEADER_BYTES);
  buf.writeUInt32LE(checksum(buf.subarray(0, 12), payload), 12);
  return buf;
}

function checksum(head: Buffer, payload: Buffer): number {
  return crc32(payload, crc32(head));
}

function isType(t: number): t is RecordTypeCode {
  return t >= 1 && t <= 4;
}

/**
 * Decodes the record at `offset`. Returns `'incomplete'` when `buf` ends before the record does,
 * `'corrupt'` when the header or crc is wrong.
 */
export function decodeRecord(buf: Buffer, offset: number): RawRecord | 'incomplete' | 'corrupt' {
  if (buf.length - offset < RECORD_HEADER_BYTES) return 'incomplete';
  const len = buf.readUInt32LE(offset);
  const type = buf.readUInt8(offset + 4);
  if (!isType(type) || buf.readUInt8(offset + 5) !== 0) return 'corrupt';
  if (buf.length - offset - RECORD_HEADER_BYTES < len) return 'incomplete';
  const seq = buf.readUIntLE(offset + 6, 6);
  const payload = buf.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + len);
  if (checksum(buf.subarray(offset, offset + 12), payload) !== buf.readUInt32LE(offset + 12)) return 'corrupt';
  return { type, seq, payload, offset, length: RECORD_HEADER_BYTES + len };
}
