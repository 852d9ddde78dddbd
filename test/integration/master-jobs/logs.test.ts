import assert from 'node:assert/strict';
import { appendFile, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AttemptLogStore, type LogRecord } from '../../../master/jobs/index.js';
import type { RpcPeer } from '../../../protocol/index.js';
import { tempDir, type TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, rejectsWith, text, waitJob } from './helpers.js';

const data = (seq: number, s: string, stream: 'stdout' | 'stderr' = 'stdout') => ({ kind: 'data' as const, seq, stream, data: Buffer.from(s) });

describe('master jobs: attempt logs', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let s: TestSlave;
  let id: number;

  beforeEach(async function () {
    ({ farm, client } = await jobFarm());
    s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe();
    id = (await client.call('job.submit', { job: job() })).job.id;
    await s.nextAssign(id);
    await waitJob(client, id, (x) => x.state === 'running', 'running');
  });
  afterEach(async function () {
    await farm.close();
  });

  describe('when a slave sends records, some of them twice', function () {
    it('stores each seq once, in order, with its stream, and answers how far it stored', async function () {
      assert.deepEqual(await s.log(id, 1, [data(1, 'a'), data(2, 'b', 'stderr'), data(3, 'c')]), { storedThrough: 3 });
      assert.deepEqual(await s.log(id, 1, [data(2, 'B'), data(3, 'C'), data(4, 'd', 'stderr'), { kind: 'dropped', seq: 7, fromSeq: 5, toSeq: 7, droppedBytes: 99 }]), { storedThrough: 7 });
      assert.deepEqual(await s.log(id, 1, [data(1, 'A')]), { storedThrough: 7 });
      const r = await client.call('log.read', { jobId: id });
      assert.deepEqual(
        r.records.map((x) => (x.kind === 'data' ? [x.seq, x.stream, Buffer.from(x.data).toString()] : [x.seq, x.kind])),
        [[1, 'stdout', 'a'], [2, 'stderr', 'b'], [3, 'stdout', 'c'], [4, 'stderr', 'd'], [7, 'dropped']],
      );
      assert.equal(r.nextSeq, 8);
      assert.equal(r.ended, false);
      assert.equal(r.attempt, 1);
      assert.equal(r.state, 'running');
      // From a seq on, and in pages.
      const p = await client.call('log.read', { jobId: id, fromSeq: 3, maxBytes: 1 });
      assert.deepEqual(p.records.map((x) => x.seq), [3]);
      assert.equal(p.nextSeq, 4);
      const q = await client.call('log.read', { jobId: id, fromSeq: p.nextSeq, maxBytes: 1 });
      assert.deepEqual(q.records.map((x) => x.seq), [4]);
    });

    it('keeps every record when batches are sent without waiting for each other', async function () {
      const sends = [];
      for (let b = 0; b < 20; b++) sends.push(s.log(id, 1, [data(b * 2 + 1, `${b}a `), data(b * 2 + 2, `${b}b `, 'stderr')]));
      const replies = await Promise.all(sends);
      assert.deepEqual(replies.map((r) => r.storedThrough), replies.map((_r, b) => b * 2 + 2));
      const r = await client.call('log.read', { jobId: id });
      assert.deepEqual(r.records.map((x) => x.seq), Array.from({ length: 40 }, (_x, i) => i + 1));
    });

    it('stops at a gap (an earlier batch failed while a later one got through) and answers where to resend from', async function () {
      assert.deepEqual(await s.log(id, 1, [data(1, 'a')]), { storedThrough: 1 });
      // Batch 2-3 failed on the master; 4-5 arrives: nothing of it is stored, or 2-3 would be lost for good.
      assert.deepEqual(await s.log(id, 1, [data(4, 'd'), data(5, 'e')]), { storedThrough: 1 });
      // The slave resends from 2: all of it is stored, in order.
      assert.deepEqual(await s.log(id, 1, [data(2, 'b'), data(3, 'c'), data(4, 'd'), data(5, 'e')]), { storedThrough: 5 });
      // A gap inside a batch: what comes before it is stored. A dropped marker may jump (it declares the loss).
      assert.deepEqual(await s.log(id, 1, [data(6, 'f'), data(8, 'h')]), { storedThrough: 6 });
      assert.deepEqual(await s.log(id, 1, [{ kind: 'dropped', seq: 9, fromSeq: 7, toSeq: 9, droppedBytes: 2 }, data(10, 'j')]), { storedThrough: 10 });
      // The same gap twice: records the slave no longer has (acknowledged, then lost here) are
      // declared lost, or the slave would resend forever.
      assert.deepEqual(await s.log(id, 1, [data(13, 'm')]), { storedThrough: 10 });
      assert.deepEqual(await s.log(id, 1, [data(13, 'm'), data(14, 'n')]), { storedThrough: 14 });
      // An end at a gap at once: the slave sends it only once it saw all its output acknowledged.
      assert.deepEqual(await s.log(id, 1, [{ kind: 'end', seq: 17 }]), { storedThrough: 17 });
      const r = await client.call('log.read', { jobId: id });
      assert.deepEqual(
        r.records.map((x) => (x.kind === 'data' ? Buffer.from(x.data).toString() : x.kind === 'dropped' ? `dropped ${x.fromSeq}-${x.toSeq}` : x.kind)),
        ['a', 'b', 'c', 'd', 'e', 'f', 'dropped 7-9', 'j', 'dropped 11-12', 'm', 'n', 'dropped 15-16', 'end'],
      );
      assert.equal(r.ended, true);
    });

    it('refuses a dropped marker that does not make sense, storing nothing of that batch', async function () {
      await rejectsWith(s.log(id, 1, [data(1, 'x'), { kind: 'dropped', seq: 2, fromSeq: 5, toSeq: 3, droppedBytes: 1 }]), 'BUILDER_ERR_INVALID_INPUT', /dropped range/);
      assert.deepEqual((await client.call('log.read', { jobId: id })).records, []);
      assert.deepEqual(await s.log(id, 1, [data(1, 'x')]), { storedThrough: 1 });
    });
  });

  describe('when attempt.finish carries the log end (logEnd)', function () {
    it('refuses an end that is not right after the last stored record, leaving the log open and the job running', async function () {
      await s.log(id, 1, [data(1, 'a'), data(2, 'b'), data(3, 'c')]);
      // Records stored at or above the end: the end record would be skipped, and the log never end.
      await rejectsWith(s.finish(id, 1, { logEnd: 3 }), 'BUILDER_ERR_INVALID_INPUT', /stored through seq 3: it cannot end at 3/);
      await rejectsWith(s.finish(id, 1, { logEnd: 2 }), 'BUILDER_ERR_INVALID_INPUT', /stored through seq 3: it cannot end at 2/);
      // Records missing before the end.
      await rejectsWith(s.finish(id, 1, { logEnd: 6 }), 'BUILDER_ERR_INVALID_INPUT', /stored through seq 3 only, below its end 6/);
      const open = await client.call('log.read', { jobId: id });
      assert.equal(open.ended, false);
      assert.equal(open.nextSeq, 4);
      assert.equal(open.state, 'running');
    });

    it('refuses an end at another seq than the one already stored', async function () {
      await s.log(id, 1, [data(1, 'a'), { kind: 'end', seq: 2 }]);
      await rejectsWith(s.finish(id, 1, { logEnd: 3 }), 'BUILDER_ERR_INVALID_INPUT', /stored through seq 2 and ended there: it cannot end at 3/);
      await s.finish(id, 1, { logEnd: 2 });
      await waitJob(client, id, (x) => x.state === 'succeeded', 'succeeded');
    });

    it('stores the end right after the last record and finishes, and takes the same finish again', async function () {
      await s.log(id, 1, [data(1, 'a'), data(2, 'b')]);
      await s.finish(id, 1, { logEnd: 3 });
      await s.finish(id, 1, { logEnd: 3 });
      const r = await client.call('log.read', { jobId: id });
      assert.deepEqual(r.records.map((x) => [x.seq, x.kind]), [[1, 'data'], [2, 'data'], [3, 'end']]);
      assert.equal(r.ended, true);
      await waitJob(client, id, (x) => x.state === 'succeeded', 'succeeded');
    });
  });

  describe('when an attempt printed nothing (its end is seq 1)', function () {
    /** A follower from seq 1, as `builder observe`: resolves with the last page and the time it took. */
    const follow = async () => {
      const t0 = Date.now();
      for (let from = 1; ; ) {
        const r = await client.call('log.read', { jobId: id, fromSeq: from, waitMs: 10_000 });
        from = r.nextSeq;
        if (r.ended) return { r, ms: Date.now() - t0 };
      }
    };
    const logFile = () => join(farm.dir, 'logs', '0', `${id}-1.log`);

    it('makes no log file, and log.read says the empty log ended with the attempt', async function () {
      const f = follow();
      await new Promise((res) => setTimeout(res, 100));
      await s.finish(id, 1, { logEnd: 1 });
      const { r, ms } = await f;
      assert.deepEqual(r.records, []);
      assert.equal(r.state, 'succeeded');
      assert.ok(ms < 1_000, `the follower was woken by the finish (${ms} ms)`);
      await assert.rejects(stat(logFile()), { code: 'ENOENT' });
      // A repeat of the same finish (its reply was lost) is taken; the log still reads as ended, empty.
      await s.finish(id, 1, { logEnd: 1 });
      const again = await client.call('log.read', { jobId: id });
      assert.deepEqual([again.records.filter((x) => x.kind === 'data'), again.ended], [[], true]);
    });

    it('stores the end when the job was cancelled meanwhile, so a follower ends without waiting out the grace', async function () {
      const f = follow();
      await client.call('job.cancel', { id });
      await s.until(() => s.cancels.length > 0, 'attempt.cancel');
      await s.finish(id, 1, { logEnd: 1, state: 'cancelled', exitCode: null, signal: 'SIGTERM' });
      const { r, ms } = await f;
      assert.equal(r.state, 'cancelled');
      // jobFarm: slaveGraceMs 1.5 s + cancelTimeoutMs 2 s.
      assert.ok(ms < 1_500, `ended after ${ms} ms`);
      assert.ok((await stat(logFile())).size > 0);
    });

    for (const kind of ['stopped by the slave', 'a setup failure'] as const) {
      it(`stores the end when a cancel commits while the slave's report of ${kind} is requeueing the job`, async function () {
        const store = farm.master.jobs.store as unknown as { requeueJob: (...a: unknown[]) => Promise<unknown> };
        const requeue = store.requeueJob.bind(store);
        // A user's cancel that commits after attempt.finish read the job, before its requeue.
        store.requeueJob = async (...a: unknown[]) => {
          await client.call('job.cancel', { id });
          return requeue(...a);
        };
        await s.finish(id, 1, kind === 'a setup failure' ? { logEnd: 1, state: 'failed', exitCode: null, setupFailure: true } : { logEnd: 1, state: 'cancelled', exitCode: null, signal: 'SIGTERM' });
        const { r, ms } = await follow();
        assert.equal(r.state, 'cancelled');
        // jobFarm: slaveGraceMs 1.5 s + cancelTimeoutMs 2 s.
        assert.ok(ms < 1_500, `ended after ${ms} ms`);
      });
    }

    it('stores the end of an attempt the slave timed out, so a follower ends without waiting out the grace', async function () {
      const f = follow();
      await new Promise((res) => setTimeout(res, 100));
      await s.finish(id, 1, { logEnd: 1, state: 'timed_out', exitCode: null, signal: 'SIGKILL' });
      const { ms } = await f;
      assert.ok(ms < 1_500, `ended after ${ms} ms`);
      await waitJob(client, id, (x) => x.state === 'timed_out', 'timed_out');
      assert.ok((await stat(logFile())).size > 0);
    });
  });

  describe('when clients follow a running job', function () {
    it('replays, then wakes every waiting follower on new records, and says ended after the end record', async function () {
      await s.log(id, 1, [data(1, 'first\n')]);
      const followers = await Promise.all([0, 1, 2].map(async () => farm.connect(await farm.identity(`f${Math.random().toString(36).slice(2, 8)}`, 'client'))));
      const seen = followers.map(() => '');
      const follow = followers.map(async (f, i) => {
        let from = 1;
        for (;;) {
          const r = await f.call('log.read', { jobId: id, fromSeq: from, waitMs: 5_000 });
          seen[i] += text(r.records);
          from = r.nextSeq;
          if (r.ended) return r;
        }
      });
      await new Promise((res) => setTimeout(res, 150));
      const t0 = Date.now();
      await s.log(id, 1, [data(2, 'second\n', 'stderr')]);
      await new Promise((res) => setTimeout(res, 150));
      await s.log(id, 1, [data(3, 'third\n'), { kind: 'end', seq: 4 }]);
      const ends = await Promise.all(follow);
      assert.ok(Date.now() - t0 < 4_000, 'followers were woken, not left to their waitMs');
      for (const x of seen) assert.equal(x, 'first\nsecond\nthird\n');
      for (const e of ends) assert.equal(e.ended, true);
      // Records after the end are ignored.
      assert.deepEqual(await s.log(id, 1, [data(5, 'late')]), { storedThrough: 4 });
      await s.finish(id, 1);
      const after = await client.call('log.read', { jobId: id });
      assert.equal(after.state, 'succeeded');
      assert.equal(text(after.records), 'first\nsecond\nthird\n');
    });

    it('never answers ended without the records stored before the attempt ended', async function () {
      const store = farm.master.jobs.store as unknown as { getJob: (id: number) => Promise<unknown> };
      const getJob = store.getJob.bind(store);
      let calls = 0;
      // The whole log and the finish land between two reads of one log.read: after its first
      // read of the job, the second time it reads it.
      store.getJob = async (x: number) => {
        if (++calls === 2) {
          await s.log(id, 1, [data(1, 'hello\n')]);
          await s.finish(id, 1, { logEnd: 2 });
        }
        return getJob(x);
      };
      const r = await client.call('log.read', { jobId: id, fromSeq: 1, waitMs: 500 });
      store.getJob = getJob;
      assert.ok(calls >= 2);
      assert.deepEqual([text(r.records), r.ended], ['hello\n', true]);
    });

    it('does not sleep through an end that comes between its reads and its wait', async function () {
      const logs = farm.master.jobs.logs as unknown as { read: (...a: unknown[]) => Promise<unknown> };
      const read = logs.read.bind(logs);
      let once = true;
      // The job is read (running), then, while its page is read, the attempt ends (nothing printed).
      logs.read = async (...a: unknown[]) => {
        if (once) {
          once = false;
          await s.finish(id, 1, { logEnd: 1 });
        }
        return read(...a);
      };
      const t0 = Date.now();
      const r = await client.call('log.read', { jobId: id, fromSeq: 1, waitMs: 5_000 });
      logs.read = read;
      assert.equal(r.ended, true);
      assert.ok(Date.now() - t0 < 1_500, `answered after ${Date.now() - t0} ms`);
    });

    it('ends every long poll when the master stops, a follower of a job never dispatched too', async function () {
      const queued = (await client.call('job.submit', { job: job({ channel: 'nobody' }) })).job.id;
      const logs = farm.master.jobs.logs as unknown as { waiters: Map<number, Set<unknown>> };
      const polls = [queued, id].map((jobId) => client.call('log.read', { jobId, waitMs: 20_000 }).then(() => 'answered', (e: Error) => e.message));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(logs.waiters.size, 2);
      const t0 = Date.now();
      await farm.master.stop();
      const ends = await Promise.all(polls);
      assert.ok(Date.now() - t0 < 5_000, `the polls ended ${Date.now() - t0} ms after the stop`);
      assert.equal(logs.waiters.size, 0, `waiters left: ${ends.join(', ')}`);
    });

    it('returns an empty page after waitMs when nothing arrives, and NOT_FOUND for an unknown job or attempt', async function () {
      const t0 = Date.now();
      const r = await client.call('log.read', { jobId: id, waitMs: 300 });
      assert.ok(Date.now() - t0 >= 250);
      assert.deepEqual(r.records, []);
      assert.equal(r.ended, false);
      await rejectsWith(client.call('log.read', { jobId: 777 }), 'BUILDER_ERR_NOT_FOUND');
      await rejectsWith(client.call('log.read', { jobId: id, attempt: 2 }), 'BUILDER_ERR_NOT_FOUND', /no attempt 2/);
    });

    it('after a cancel, waits for the tail and the end record the slave still sends', async function () {
      await s.log(id, 1, [data(1, 'x')]);
      const p = (async () => {
        let from = 1;
        let out = '';
        for (;;) {
          const r = await client.call('log.read', { jobId: id, fromSeq: from, waitMs: 5_000 });
          out += text(r.records);
          from = r.nextSeq;
          if (r.ended) return { out, r };
        }
      })();
      await new Promise((res) => setTimeout(res, 100));
      await client.call('job.cancel', { id });
      await s.until(() => s.cancels.length > 0, 'attempt.cancel');
      await new Promise((res) => setTimeout(res, 200));
      await s.log(id, 1, [data(2, 'tail'), { kind: 'end', seq: 3 }]);
      const { out, r } = await p;
      assert.equal(out, 'xtail');
      assert.equal(r.state, 'cancelled');
    });

    it('ends a follower of a cancelled attempt whose slave never delivers, after grace + cancel timeout', async function () {
      await s.log(id, 1, [data(1, 'x')]);
      s.peer.destroy();
      await client.call('job.cancel', { id });
      const t0 = Date.now();
      const first = await client.call('log.read', { jobId: id, fromSeq: 2, waitMs: 500 });
      assert.equal(first.ended, false, 'the slave may still deliver');
      let r = first;
      while (!r.ended) r = await client.call('log.read', { jobId: id, fromSeq: 2, waitMs: 1_000 });
      // jobFarm: slaveGraceMs 1.5 s + cancelTimeoutMs 2 s.
      assert.ok(Date.now() - t0 >= 3_000 && Date.now() - t0 < 8_000, `ended after ${Date.now() - t0} ms`);
    });
  });
});

describe('the attempt log file', function () {
  describe('when the master died in the middle of an append', function () {
    it('cuts the torn record off on reopen and resumes from the last complete seq', async function () {
      const dir = await tempDir();
      try {
        const a = new AttemptLogStore({ dir });
        await a.append(1, 1, [data(1, 'hello'), data(2, 'world', 'stderr')]);
        await a.close();
        const file = a.pathOf(1, 1);
        // 1,000 jobs per directory: one new inode per attempt.
        assert.equal(file, join(dir, '0', '1-1.log'));
        assert.equal(a.pathOf(12345, 2), join(dir, '12', '12345-2.log'));
        const good = (await stat(file)).size;
        // A header that promises 100 bytes, followed by 3.
        const torn = Buffer.alloc(19);
        torn.writeUInt8(0xb1, 0);
        torn.writeUInt8(1, 1);
        torn.writeUIntBE(3, 2, 6);
        torn.writeUInt32BE(100, 8);
        await appendFile(file, torn);
        const b = new AttemptLogStore({ dir });
        assert.equal(await b.storedThrough(1, 1), 2);
        assert.equal((await stat(file)).size, good);
        assert.deepEqual(await b.append(1, 1, [data(3, '!')]), { storedThrough: 3, ended: false, appended: 1 });
        const page = await b.read(1, 1, 1, 1 << 20);
        assert.equal(text(page.records), 'helloworld!');
        await b.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('when a log of many small records is opened again (a master restart)', function () {
    it('finds its end and resumes a read near it in block reads, not a read per record, and reads every record back', async function () {
      const dir = await tempDir();
      const readCalls = async (): Promise<number> => Number(/syscr: (\d+)/.exec(await readFile('/proc/self/io', 'utf8'))![1]);
      try {
        const n = 100_000;
        const a = new AttemptLogStore({ dir, fsync: false });
        const data = Buffer.alloc(80, 'x');
        for (let seq = 0; seq < n; ) {
          const recs: LogRecord[] = [];
          for (let i = 0; i < 5000 && seq < n; i++) recs.push({ kind: 'data', seq: ++seq, stream: seq % 2 ? 'stdout' : 'stderr', data });
          await a.append(1, 1, recs);
        }
        await a.append(1, 1, [{ kind: 'end', seq: n + 1 }]);
        await a.close();
        const b = new AttemptLogStore({ dir, fsync: false });
        const before = await readCalls();
        assert.equal(await b.storedThrough(1, 1), n + 1);
        const page = await b.read(1, 1, n - 5, 1 << 20);
        // 9.2 MiB: about ten 1 MiB blocks each; a read per header and payload made 200,000 each.
        const calls = (await readCalls()) - before;
        assert.ok(calls < 1_000, `${calls} read calls for the reopen and one resumed read`);
        assert.deepEqual(page.records.map((r) => r.seq), [n - 5, n - 4, n - 3, n - 2, n - 1, n, n + 1]);
        assert.equal(page.ended, true);
        // Paging from the start gives every record once, in order, with its bytes.
        let expect = 1;
        for (;;) {
          const p = await b.read(1, 1, expect, 1 << 20);
          for (const r of p.records) {
            assert.equal(r.seq, expect++);
            if (r.kind === 'data') {
              assert.equal(r.stream, r.seq % 2 ? 'stdout' : 'stderr');
              assert.deepEqual(Buffer.from(r.data), data);
            } else assert.equal(r.seq, n + 1);
          }
          if (p.records.length === 0 || p.ended) break;
          assert.equal(p.nextSeq, expect);
        }
        assert.equal(expect, n + 2);
        await b.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('when more logs are open than maxOpen', function () {
    it('closes an evicted handle only after the appends that hold it, at whatever point the eviction comes', async function () {
      const dir = await tempDir();
      try {
        for (let turns = 0; turns < 30; turns++) {
          const a = new AttemptLogStore({ dir: join(dir, String(turns)), maxOpen: 1 });
          await a.append(1, 1, [data(1, 'a')]);
          const second = a.append(1, 1, [data(2, 'b')]);
          for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
          // Another attempt's log evicts the first one's handle, somewhere in that append.
          await a.append(2, 1, [data(1, 'x')]);
          assert.deepEqual(await second, { storedThrough: 2, ended: false, appended: 1 }, `eviction after ${turns} turns`);
          assert.deepEqual(await a.append(1, 1, [data(3, 'c')]), { storedThrough: 3, ended: false, appended: 1 });
          assert.equal(text((await a.read(1, 1, 1, 1 << 20)).records), 'abc');
          await a.close();
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('when a log is evicted while a large append to it is still being written', function () {
    it('loads it again only after that append, so no acknowledged record is overwritten', async function () {
      const dir = await tempDir();
      try {
        const a = new AttemptLogStore({ dir, maxOpen: 1 });
        const big = (seq: number) => ({ kind: 'data' as const, seq, stream: 'stdout' as const, data: Buffer.alloc(32 << 20, 97) });
        await a.append(1, 1, [data(1, 'a')]);
        const second = a.append(1, 1, [big(2)]);
        await new Promise((r) => setImmediate(r));
        // Another attempt's log evicts the handle; a follower then reads the first log again.
        await a.append(2, 1, [data(1, 'x')]);
        const page = await a.read(1, 1, 1, 1 << 30);
        assert.deepEqual(await second, { storedThrough: 2, ended: false, appended: 1 });
        assert.deepEqual(page.records.map((r) => r.seq), [1, 2]);
        assert.equal(await a.storedThrough(1, 1), 2);
        assert.deepEqual(await a.append(1, 1, [data(3, 'c')]), { storedThrough: 3, ended: false, appended: 1 });
        await a.close();
        const b = new AttemptLogStore({ dir });
        assert.deepEqual((await b.read(1, 1, 1, 1 << 30)).records.map((r) => r.seq), [1, 2, 3]);
        await b.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('when a log holds many tiny records', function () {
    it('pages them by their cost on the wire, not their payload alone, and at most 10,000 to a page', async function () {
      const dir = await tempDir();
      try {
        const a = new AttemptLogStore({ dir, fsync: false });
        const n = 25_000;
        for (let seq = 1; seq <= n; seq += 5_000) {
          await a.append(3, 1, Array.from({ length: 5_000 }, (_x, i) => data(seq + i, 'x', i % 2 === 0 ? 'stdout' : 'stderr')));
        }
        const small = await a.read(3, 1, 1, 4_800);
        assert.ok(small.records.length > 10 && small.records.length <= 100, `${small.records.length} one-byte records in a page of 4,800 bytes`);
        let from = 1;
        let pages = 0;
        while (from <= n) {
          const p = await a.read(3, 1, from, 1 << 20);
          assert.ok(p.records.length <= 10_000);
          assert.equal(p.records[0]!.seq, from);
          from = p.nextSeq;
          pages++;
        }
        assert.equal(pages, 3);
        await a.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('when an attempt writes more than maxBytes', function () {
    it('keeps the seqs and byte counts of the excess as dropped markers, not the bytes: one marker per batch', async function () {
      const dir = await tempDir();
      try {
        const a = new AttemptLogStore({ dir, maxBytes: 64 });
        await a.append(2, 1, [data(1, 'x'.repeat(30)), data(2, 'y'.repeat(30)), data(3, 'z'.repeat(1000)), { kind: 'end', seq: 4 }]);
        assert.ok((await stat(a.pathOf(2, 1))).size < 200);
        const page = await a.read(2, 1, 1, 1 << 20);
        assert.deepEqual(
          page.records.map((r) => (r.kind === 'dropped' ? ['dropped', r.fromSeq, r.toSeq, r.droppedBytes] : [r.kind, r.seq])),
          [['data', 1], ['dropped', 2, 3, 1030], ['end', 4]],
        );
        // A flood of one-byte records past the cap: a marker per batch, not per record (40 bytes each).
        const b = new AttemptLogStore({ dir, maxBytes: 4096, fsync: false });
        for (let seq = 1; seq <= 200_000; seq += 10_000) await b.append(5, 1, Array.from({ length: 10_000 }, (_x, i) => data(seq + i, 'x')));
        assert.ok((await stat(b.pathOf(5, 1))).size < 4096 + 20 * 48, `${(await stat(b.pathOf(5, 1))).size} bytes on disk`);
        assert.equal(await b.storedThrough(5, 1), 200_000);
        await b.close();
        assert.equal(page.ended, true);
        await a.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
