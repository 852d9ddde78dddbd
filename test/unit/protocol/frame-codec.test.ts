import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Packr, pack } from 'msgpackr';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  MAX_DEPTH,
  assertPlainData,
  LARGE_BIN_BYTES,
  decodeBody,
  encodeFrame,
  encodeFrameChunks,
  isBuilderError,
  type BuilderErrorCode,
} from '../../../protocol/index.js';

/** A plain message as a peer may send it: the value tree the wire promises to carry intact. */
type Plain = null | boolean | number | string | Uint8Array | Plain[] | { [k: string]: Plain };

const leaf: fc.Arbitrary<Plain> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  fc.maxSafeInteger(),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.uint8Array({ maxLength: 64 }),
);

// msgpackr renames a `__proto__` key (so it can never set a prototype); keep it out of the round trip.
const key = fc.string({ unit: 'grapheme', maxLength: 12 }).filter((k) => k !== '__proto__');

const { value: plainArb } = fc.letrec<{ value: Plain; array: Plain[]; object: { [k: string]: Plain } }>((tie) => ({
  value: fc.oneof({ maxDepth: 6, depthIdentifier: 'plain' }, leaf, tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 5, depthIdentifier: 'plain' }),
  object: fc.dictionary(key, tie('value'), { maxKeys: 5, noNullPrototype: true, depthIdentifier: 'plain' }),
}));

/** msgpack has no negative integer zero: msgpackr sends -0 as 0. */
function expected(v: Plain): Plain {
  if (typeof v === 'number') return Object.is(v, -0) ? 0 : v;
  if (v instanceof Uint8Array || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(expected);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expected(x)]));
}

/** Node's msgpackr hands binary back as Buffer; compare it as the Uint8Array it is. */
function normalise(v: unknown): unknown {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v)) return v.map(normalise);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}

/** Splits `buf` at the given offsets into copied chunks (copies, so no chunk shares memory with another). */
function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of [...points, buf.length]) {
    out.push(Buffer.from(buf.subarray(from, p)));
    from = p;
  }
  return out;
}

function header(length: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(length, 0);
  return h;
}

function assertCode(fn: () => unknown, code: BuilderErrorCode): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isBuilderError(e), `expected a BuilderError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

/** msgpackr with extensions on: what a hostile or careless peer could send. */
const extPackr = new Packr({ moreTypes: true, useRecords: false });

describe('frame codec', function () {
  describe('when frames are split at arbitrary byte boundaries', function () {
    it('gives back every message deep-equal and in order, for any split', function () {
      fc.assert(
        fc.property(fc.array(plainArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 24 }), (msgs, cuts) => {
          const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
          const decoder = new FrameDecoder();
          const bodies = splitAt(stream, cuts).flatMap((c) => decoder.push(c));
          assert.equal(decoder.pendingBytes, 0);
          // Decode only after every chunk was pushed: a body must not be overwritten by later input.
          assert.deepEqual(
            bodies.map((b) => normalise(decodeBody(b))),
            msgs.map((m) => normalise(expected(m))),
          );
        }),
        { numRuns: 300 },
      );
    });

    it('gives back every message when fed one byte at a time (every split inside every header)', function () {
      fc.assert(
        fc.property(fc.array(plainArb, { minLength: 1, maxLength: 4 }), (msgs) => {
          const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
          const decoder = new FrameDecoder();
          const bodies: Buffer[] = [];
          for (let i = 0; i < stream.length; i++) {
            bodies.push(...decoder.push(stream.subarray(i, i + 1)));
            // Nothing but the incomplete frame is ever held.
            assert.ok(decoder.pendingBytes <= i + 1);
          }
          assert.equal(decoder.pendingBytes, 0);
          assert.deepEqual(
            bodies.map((b) => normalise(decodeBody(b))),
            msgs.map((m) => normalise(expected(m))),
          );
        }),
        { numRuns: 100 },
      );
    });

    it('returns nothing and holds the bytes while a frame is incomplete', function () {
      const frame = encodeFrame({ hello: 'world' });
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(frame.subarray(0, 2)), []);
      assert.deepEqual(decoder.push(frame.subarray(2, frame.length - 1)), []);
      assert.equal(decoder.pendingBytes, frame.length - 1 - FRAME_HEADER_BYTES);
      const [body] = decoder.push(frame.subarray(frame.length - 1));
      assert.deepEqual(decodeBody(body!), { hello: 'world' });
      assert.equal(decoder.pendingBytes, 0);
    });

    it('ignores empty chunks', function () {
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(Buffer.alloc(0)), []);
      assert.equal(decoder.pendingBytes, 0);
    });
  });

  describe('when a declared length is over the limit', function () {
    it('throws BUILDER_ERR_FRAME_TOO_LARGE as soon as the header is complete, before any body arrives', function () {
      const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
      const h = header(1025);
      assert.deepEqual(decoder.push(h.subarray(0, 3)), []);
      assertCode(() => decoder.push(h.subarray(3)), 'BUILDER_ERR_FRAME_TOO_LARGE');
      assert.ok(decoder.pendingBytes <= FRAME_HEADER_BYTES, `pending ${decoder.pendingBytes}`);
    });

    it('refuses a 4 GiB declaration under the default limit without buffering it', function () {
      const decoder = new FrameDecoder();
      assertCode(() => decoder.push(header(0xffffffff)), 'BUILDER_ERR_FRAME_TOO_LARGE');
      assert.ok(decoder.pendingBytes <= FRAME_HEADER_BYTES);
      assertCode(() => new FrameDecoder().push(header(DEFAULT_MAX_FRAME_BYTES + 1)), 'BUILDER_ERR_FRAME_TOO_LARGE');
    });

    it('refuses an oversized header that follows a good frame in the same chunk', function () {
      const decoder = new FrameDecoder({ maxFrameBytes: 64 });
      assertCode(() => decoder.push(Buffer.concat([encodeFrame('ok'), header(65), Buffer.alloc(10)])), 'BUILDER_ERR_FRAME_TOO_LARGE');
    });

    it('refuses to encode an outgoing value over the limit', function () {
      assertCode(() => encodeFrame(new Uint8Array(1022), 1024), 'BUILDER_ERR_FRAME_TOO_LARGE');
    });
  });

  describe('when a frame is exactly at the limit', function () {
    it('encodes and decodes it', function () {
      // bin16: 1 type byte + 2 length bytes + 1021 data bytes = 1024.
      const value = new Uint8Array(1021).fill(7);
      const frame = encodeFrame(value, 1024);
      assert.equal(frame.length, FRAME_HEADER_BYTES + 1024);
      const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
      const bodies = decoder.push(frame);
      assert.equal(bodies.length, 1);
      assert.deepEqual(normalise(decodeBody(bodies[0]!)), value);
      // One byte less of limit refuses the same frame.
      assertCode(() => new FrameDecoder({ maxFrameBytes: 1023 }).push(frame), 'BUILDER_ERR_FRAME_TOO_LARGE');
    });

    it('passes an opaque body of exactly maxFrameBytes through unchanged', function () {
      const body = Buffer.alloc(4096, 0xab);
      const decoder = new FrameDecoder({ maxFrameBytes: 4096 });
      const out = decoder.push(Buffer.concat([header(4096), body]));
      assert.equal(out.length, 1);
      assert.ok(out[0]!.equals(body));
    });
  });

  describe('when a message carries binary values of LARGE_BIN_BYTES or more', function () {
    const big = (n: number, fill: number) => Buffer.alloc(LARGE_BIN_BYTES + n, fill);

    /** Decodes the frame that `encodeFrameChunks` made, whatever its shape. */
    function decodeChunks(chunks: Buffer | Buffer[], maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): unknown {
      const bodies = new FrameDecoder({ maxFrameBytes }).push(Array.isArray(chunks) ? Buffer.concat(chunks) : chunks);
      assert.equal(bodies.length, 1);
      return decodeBody(bodies[0]!);
    }

    it('writes them as pieces that hold the caller’s own bytes, and decodes to the same value as plain msgpack', function () {
      const a = big(1, 1);
      const b = big(7, 2);
      const c = big(0, 3);
      const small = new Uint8Array([9, 9, 9]);
      const msg = {
        jsonrpc: '2.0',
        id: 7,
        method: 'log.append',
        params: { data: a, pair: [b, c], records: [{ kind: 'data', seq: 1, data: big(3, 4) }], small, text: 'after' },
      };
      const chunks = encodeFrameChunks(msg);
      assert.ok(Array.isArray(chunks), 'expected pieces');
      // The bytes are not copied: the caller's buffers are among the pieces.
      for (const x of [a, b, c]) assert.ok(chunks.some((p) => p.buffer === x.buffer && p.byteOffset === x.byteOffset), 'a large value was copied');
      assert.deepEqual(normalise(decodeChunks(chunks)), normalise(msg));
      assert.deepEqual(normalise(decodeChunks(chunks)), normalise(decodeBody(pack(msg))));
      // The message is left as it was.
      assert.equal(msg.params.data, a);
      assert.equal(msg.params.pair[0], b);
      assert.equal(msg.params.pair[1], c);
    });

    it('round-trips random messages with large values at random places, split at random points', function () {
      const bigArb = fc.integer({ min: 0, max: 300 }).map((n) => Buffer.alloc(LARGE_BIN_BYTES + n, n & 0xff));
      fc.assert(
        fc.property(fc.array(fc.oneof(plainArb, bigArb), { minLength: 1, maxLength: 4 }), plainArb, fc.array(fc.nat(), { maxLength: 8 }), (items, other, cuts) => {
          const msg = { jsonrpc: '2.0', id: 1, result: { items, other } };
          const stream = [encodeFrameChunks(msg)].flat();
          const decoder = new FrameDecoder();
          const bodies = splitAt(Buffer.concat(stream), cuts).flatMap((c) => decoder.push(c));
          assert.equal(bodies.length, 1);
          assert.deepEqual(normalise(decodeBody(bodies[0]!)), normalise(expected(msg as unknown as Plain)));
        }),
        { numRuns: 60 },
      );
    });

    it('copies a value held by a frozen object, as plain msgpack would, and still decodes it', function () {
      const data = big(5, 6);
      const params = Object.freeze({ data, seq: 1 });
      const chunks = encodeFrameChunks({ jsonrpc: '2.0', id: 1, method: 'peer.echo', params });
      assert.ok(!Array.isArray(chunks));
      assert.deepEqual(normalise(decodeChunks(chunks)), normalise({ jsonrpc: '2.0', id: 1, method: 'peer.echo', params: { data, seq: 1 } }));
    });

    it('counts the large values against the limit, refusing a frame one byte over and producing nothing', function () {
      const msg = { id: 1, data: big(0, 1) };
      const chunks = encodeFrameChunks(msg);
      const bodyBytes = Buffer.concat([chunks].flat()).length - FRAME_HEADER_BYTES;
      assert.deepEqual(normalise(decodeChunks(chunks, bodyBytes)), normalise(msg));
      assertCode(() => encodeFrameChunks(msg, bodyBytes - 1), 'BUILDER_ERR_FRAME_TOO_LARGE');
      assert.equal(msg.data.length, LARGE_BIN_BYTES);
      assertCode(() => encodeFrameChunks({ a: big(0, 1), b: big(0, 2) }, 2 * LARGE_BIN_BYTES - 1), 'BUILDER_ERR_FRAME_TOO_LARGE');
    });
  });

  describe('when a body is not msgpack', function () {
    for (const [what, bytes] of [
      ['text with trailing bytes', Buffer.from('hello, this is not msgpack')],
      ['an empty body', Buffer.alloc(0)],
      ['a truncated array', Buffer.from([0x92, 0x01])],
      ['an array32 claiming 4 billion items', Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])],
      ['a str32 claiming more bytes than it has', Buffer.from([0xdb, 0x00, 0x01, 0x00, 0x00, 0x61])],
    ] as const) {
      it(`throws BUILDER_ERR_FRAME_DECODE for ${what}`, function () {
        assertCode(() => decodeBody(bytes), 'BUILDER_ERR_FRAME_DECODE');
      });
    }

    it('rejects the reserved byte 0xc1 (msgpackr decodes it to a C1Type object) as not plain data', function () {
      assertCode(() => decodeBody(Buffer.from([0xc1])), 'BUILDER_ERR_NOT_PLAIN_DATA');
    });

    it('never fails with anything but a BuilderError of a decode or plain-data code, whatever the bytes', function () {
      // Bias towards msgpack extension and container type bytes, where decoders keep their surprises.
      const typeByte = fc.constantFrom(0xc1, 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xdc, 0xdd, 0xde, 0xdf, 0x91, 0x81);
      const bytesArb = fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.tuple(typeByte, fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 32 })).map(([t, x, rest]) => Uint8Array.from([t, x, ...rest])),
      );
      fc.assert(
        fc.property(bytesArb, (bytes) => {
          try {
            assertPlainData(decodeBody(Buffer.from(bytes)));
          } catch (e) {
            assert.ok(isBuilderError(e), `not a BuilderError: ${String(e)}`);
            assert.ok(e.code === 'BUILDER_ERR_FRAME_DECODE' || e.code === 'BUILDER_ERR_NOT_PLAIN_DATA', e.code);
          }
        }),
        { numRuns: 2000 },
      );
    });
  });

  describe('when a body decodes to something that is not plain data', function () {
    it('rejects a Date (msgpack timestamp extension -1, decoded even with our settings)', function () {
      assertCode(() => decodeBody(pack(new Date(0))), 'BUILDER_ERR_NOT_PLAIN_DATA');
    });

    it('rejects Set, Error, TypeError and RegExp sent as msgpackr extensions', function () {
      for (const v of [new Set([1]), new Error('x'), new TypeError('t'), /ab+c/g]) {
        const body = extPackr.pack(v);
        assertCode(() => decodeBody(body), 'BUILDER_ERR_NOT_PLAIN_DATA');
      }
    });

    it('rejects typed arrays other than bytes (Float32Array extension)', function () {
      assertCode(() => decodeBody(extPackr.pack(new Float32Array([1, 2]))), 'BUILDER_ERR_NOT_PLAIN_DATA');
    });

    it('accepts what msgpackr’s default pack() makes of Set, Error and RegExp: plain arrays, not live objects', function () {
      // Observed with msgpackr 2.1: the default packer has moreTypes off, so these are not extensions.
      assert.deepEqual(decodeBody(pack(new Set([1]))), [1]);
      const err = decodeBody(pack(new Error('x')));
      assert.ok(Array.isArray(err) && err[0] === 'Error' && err[1] === 'x');
      assert.deepEqual(decodeBody(pack(/ab+c/g)), ['ab+c', 'g']);
    });

    it('accepts nesting MAX_DEPTH deep and rejects one level deeper', function () {
      let ok: unknown = 1;
      for (let i = 0; i < MAX_DEPTH; i++) ok = [ok];
      assert.doesNotThrow(() => decodeBody(pack(ok)));
      assertCode(() => decodeBody(pack([ok])), 'BUILDER_ERR_NOT_PLAIN_DATA');
      let obj: unknown = 1;
      for (let i = 0; i < 200; i++) obj = { a: obj };
      assertCode(() => decodeBody(pack(obj)), 'BUILDER_ERR_NOT_PLAIN_DATA');
    });

    it('rejects a cyclic structure (msgpackr structured clone), ending it by the depth limit', function () {
      const cyclic: Record<string, unknown> = { a: 1 };
      cyclic.self = cyclic;
      const body = new Packr({ structuredClone: true }).pack(cyclic);
      assertCode(() => decodeBody(body), 'BUILDER_ERR_NOT_PLAIN_DATA');
    });

    it('does not let a __proto__ key set a prototype', function () {
      const v = decodeBody(pack(JSON.parse('{"__proto__": {"polluted": true}}'))) as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(v), Object.prototype);
      assert.equal((v as { polluted?: unknown }).polluted, undefined);
      assert.equal(({} as { polluted?: unknown }).polluted, undefined);
    });
  });

  describe('when the plain-data check sees values built in process', function () {
    it('rejects functions, symbols, bigints and class instances', function () {
      for (const v of [() => 1, Symbol('s'), 1n, new Map(), new (class Foo {})()]) {
        assertCode(() => assertPlainData({ v }), 'BUILDER_ERR_NOT_PLAIN_DATA');
      }
    });

    it('accepts null-prototype maps, byte arrays, NaN and Infinity', function () {
      const m = Object.create(null) as Record<string, unknown>;
      m.x = [new Uint8Array(2), NaN, -Infinity, 'a', true, null];
      assert.doesNotThrow(() => assertPlainData(m));
    });
  });
});
