import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import { replaySlots } from '../../helpers/slot-record.js';
import { SlotPool, type SlotEvent } from '../../../slave/executor/index.js';
import { compileSlaveRuntimeOptions, readSlotRecord, SLOT_RECORD_DEFAULT_MAX_BYTES, SlotRecordFile, type SlotRecordLine } from '../../../slave/index.js';

/** The raw lines of one file. */
async function fileLines(path: string): Promise<SlotRecordLine[]> {
  return (await readFile(path, 'utf8'))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as SlotRecordLine);
}

const startsAndEnds = (rec: readonly SlotRecordLine[]): string[] => rec.flatMap((l) => (l.event === 'start' || l.event === 'end' ? [`${l.event} ${l.key}`] : []));

describe('slave/runtime slot record file (rotation)', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'slot-rot-'));
    path = join(dir, 'slot-record.jsonl');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A pool of `capacity` writing to a record of `maxBytes`; `events` is what the pool reported, in order. */
  function poolWithRecord(capacity: number, maxBytes: number): { pool: SlotPool; rec: SlotRecordFile; events: SlotEvent[] } {
    const rec = new SlotRecordFile(path, capacity, { maxBytes });
    const events: SlotEvent[] = [];
    const pool = new SlotPool(capacity, {
      onEvent: (e) => {
        events.push(e);
        rec.onSlotEvent(e);
      },
    });
    return { pool, rec, events };
  }

  describe('when a line would take the file past the bound', () => {
    it('moves the full file to .1 before that line, and the new file begins with a rotate line telling the slots in use', async () => {
      const { pool, rec } = poolWithRecord(3, 1024);
      const held = pool.tryAcquire('1-1', 2)!;
      let i = 2;
      let sizeBefore = 0;
      let lease: { release(): void } | undefined;
      // One line at a time: a start, then its end.
      while (!existsSync(`${path}.1`)) {
        sizeBefore = (await stat(path)).size;
        assert.ok(sizeBefore <= 1024, `the file grew to ${sizeBefore} bytes`);
        if (lease === undefined) lease = pool.tryAcquire(`${i++}-1`, 1)!;
        else {
          lease.release();
          lease = undefined;
        }
      }
      const old = await readFile(`${path}.1`, 'utf8');
      assert.equal(old.length, sizeBefore, '.1 is the file as it was before the line that did not fit');
      const fresh = await fileLines(path);
      assert.equal(fresh[0]?.event, 'rotate');
      // The line that did not fit is the only one after the rotate line, and with it the old file would have passed the bound.
      assert.equal(fresh.length, 2);
      assert.ok(old.length + JSON.stringify(fresh[1]).length + 1 > 1024);
      // In use then: the 2-slot lease held across the rotation, and the 1-slot one if the line that did not fit is its end.
      assert.equal(fresh[0]?.event === 'rotate' ? fresh[0].used : -1, fresh[1]?.event === 'end' ? 3 : 2);
      lease?.release();
      held.release();
      rec.close();
    });

    it('loses no line across a rotation: both generations together are every event the pool reported, in order', async () => {
      const { pool, rec, events } = poolWithRecord(2, 4096);
      const pair = (i: number): void => {
        const a = pool.tryAcquire(`${i}-1`, 1)!;
        const b = pool.tryAcquire(`${i}-2`, 1)!;
        a.release();
        b.release();
      };
      let i = 1;
      while (!existsSync(`${path}.1`)) pair(i++);
      for (const stop = i + 3; i < stop; i++) pair(i);
      rec.close();
      const all = await readSlotRecord(path);
      assert.equal(all[0]?.event, 'open', 'one rotation only: the first generation is still there');
      assert.deepEqual(startsAndEnds(all), events.map((e) => `${e.event} ${e.key}`));
      assert.deepEqual(all.map((l) => l.event).filter((e) => e !== 'start' && e !== 'end'), ['open', 'rotate', 'close']);
      assert.deepEqual(replaySlots(all), { max: 2, end: 0 });
    });

    it('keeps one previous generation only, each file within the bound, and the capacity check still holds from the rotate line', async () => {
      const { pool, rec, events } = poolWithRecord(3, 1024);
      // A 2-slot attempt runs the whole time while 1-slot attempts come and go beside it.
      const long = pool.tryAcquire('1-1', 2)!;
      for (let i = 2; i < 200; i++) pool.tryAcquire(`${i}-1`, 1)!.release();
      const all = await readSlotRecord(path);
      for (const p of [path, `${path}.1`]) assert.ok((await stat(p)).size <= 1024);
      assert.equal(all[0]?.event, 'rotate', 'the oldest generations are gone');
      // What is left is exactly the tail of what the pool reported.
      const tail = events.slice(-startsAndEnds(all).length).map((e) => `${e.event} ${e.key}`);
      assert.deepEqual(startsAndEnds(all), tail);
      assert.deepEqual(replaySlots(all), { max: 3, end: 2 });
      // Without the rotate line's count, the replay would miss the 2-slot attempt: the line is what makes it right.
      assert.ok(replaySlots(all.slice(1)).max < 3);
      long.release();
      rec.close();
      assert.deepEqual(replaySlots(await readSlotRecord(path)), { max: 3, end: 0 });
    });
  });

  describe('when a slave starts on a record past the bound', () => {
    it('rotates before its open line, which then needs no rotate line', async () => {
      // Written by a slave with a larger bound.
      const first = new SlotRecordFile(path, 1);
      const pool = new SlotPool(1, { onEvent: (e) => first.onSlotEvent(e) });
      while ((await stat(path)).size < 1100) pool.tryAcquire('7-1', 1)!.release();
      first.close();
      const before = await readFile(path, 'utf8');
      new SlotRecordFile(path, 1, { maxBytes: 1024 }).close();
      assert.equal(await readFile(`${path}.1`, 'utf8'), before);
      assert.deepEqual((await fileLines(path)).map((l) => l.event), ['open', 'close']);
    });

    it('ends a line a crashed writer left unfinished, so that the bad line stays its own and is reported', async () => {
      await writeFile(path, '{"event":"open","pid":1,"capacity":1,"at":1}\n{"event":"sta');
      new SlotRecordFile(path, 1).close();
      const text = await readFile(path, 'utf8');
      assert.match(text, /\n\{"event":"sta\n\{"event":"open"/);
      await assert.rejects(readSlotRecord(path), (e) => isBuilderError(e, 'BUILDER_ERR_BAD_STATE') && /line 2 of the slot record .* is not JSON/.test(e.message));
    });
  });

  describe('when the rotation fails', () => {
    it('keeps every line in the current file, and rotates once it can', async () => {
      // A non-empty directory where .1 goes: the rename fails (EISDIR).
      await mkdir(join(`${path}.1`, 'x'), { recursive: true });
      const { pool, rec, events } = poolWithRecord(1, 1024);
      for (let i = 1; i <= 20; i++) pool.tryAcquire(`${i}-1`, 1)!.release();
      assert.ok((await stat(path)).size > 1024);
      assert.deepEqual(startsAndEnds(await fileLines(path)), events.map((e) => `${e.event} ${e.key}`));
      await rm(`${path}.1`, { recursive: true });
      pool.tryAcquire('21-1', 1)!.release();
      rec.close();
      const all = await readSlotRecord(path);
      assert.deepEqual(startsAndEnds(all), events.map((e) => `${e.event} ${e.key}`));
      assert.deepEqual((await fileLines(path)).map((l) => l.event), ['rotate', 'start', 'end', 'close']);
    });
  });

  describe('when the record is read', () => {
    it('gives an empty record when there is no file, and leaves out a last line still being written', async () => {
      assert.deepEqual(await readSlotRecord(path), []);
      await writeFile(path, '{"event":"open","pid":1,"capacity":1,"at":1}\n{"event":"start","ke');
      assert.deepEqual((await readSlotRecord(path)).map((l) => l.event), ['open']);
    });
  });

  describe('when the bound is configured', () => {
    it('defaults to 8 MiB and refuses a bound below 1 KiB or not an integer', () => {
      const ok = { dir: '/tmp/s', master: '127.0.0.1:1', channels: ['main'], arches: ['x86_64'] };
      assert.equal(compileSlaveRuntimeOptions(ok).slotRecordMaxBytes, SLOT_RECORD_DEFAULT_MAX_BYTES);
      assert.equal(SLOT_RECORD_DEFAULT_MAX_BYTES, 8 * 1024 * 1024);
      assert.equal(compileSlaveRuntimeOptions({ ...ok, slotRecordMaxBytes: 1024 }).slotRecordMaxBytes, 1024);
      for (const bad of [1023, 0, 1.5, Number.NaN]) {
        assert.throws(() => compileSlaveRuntimeOptions({ ...ok, slotRecordMaxBytes: bad }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && /slotRecordMaxBytes/.test(e.message));
        assert.throws(() => new SlotRecordFile(path, 1, { maxBytes: bad }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
      }
      assert.equal(existsSync(path), false, 'a refused bound makes no file');
    });
  });
});
