import assert from 'node:assert/strict';
import type { SqliteConn } from '../../../master/store/sqlite-conn.js';
import { WriteQueue } from '../../../master/store/write-queue.js';

/** A fake connection that logs statements and lets the test hold COMMIT open. */
class FakeConn {
  readonly log: string[] = [];
  private commitGate: (() => void) | undefined;
  holdCommit = false;
  failOn: string | undefined;
  /** Only the next `failOn` statement fails (a transient error). */
  failOnce = false;

  async run(sql: string): Promise<{ changes: number; lastID: number }> {
    this.log.push(sql);
    if (sql === 'COMMIT' && this.holdCommit) await new Promise<void>((r) => (this.commitGate = r));
    if (this.failOn !== undefined && sql === this.failOn) {
      if (this.failOnce) this.failOn = undefined;
      throw new Error(`fail ${sql}`);
    }
    return { changes: 1, lastID: 1 };
  }
  async exec(sql: string): Promise<void> {
    this.log.push(sql);
  }
  releaseCommit(): void {
    this.commitGate?.();
    this.commitGate = undefined;
  }
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('master/store WriteQueue', () => {
  let conn: FakeConn;
  let q: WriteQueue;
  beforeEach(() => {
    conn = new FakeConn();
    q = new WriteQueue(conn as unknown as SqliteConn, 100);
  });

  describe('when writes arrive while a COMMIT is in progress', () => {
    it('settles no write before the COMMIT of its batch returns, and batches the waiting ones together', async () => {
      conn.holdCommit = true;
      const settled: string[] = [];
      const w = (name: string) =>
        q.enqueue(async (c) => {
          await c.run(`write ${name}`);
          return name;
        }).then((v) => settled.push(v));
      const first = [w('a'), w('b')];
      for (let i = 0; i < 5; i++) await tick();
      assert.deepEqual(conn.log, ['BEGIN IMMEDIATE', 'write a', 'write b', 'COMMIT']);
      const second = [w('c'), w('d'), w('e')];
      for (let i = 0; i < 5; i++) await tick();
      assert.deepEqual(settled, [], 'nothing announced while COMMIT is pending');
      conn.releaseCommit();
      await Promise.all(first);
      for (let i = 0; i < 5; i++) await tick();
      assert.deepEqual(settled, ['a', 'b']);
      conn.releaseCommit();
      await Promise.all(second);
      assert.deepEqual(settled, ['a', 'b', 'c', 'd', 'e']);
      assert.equal(q.commits, 2);
      assert.deepEqual(conn.log.slice(4), ['BEGIN IMMEDIATE', 'write c', 'write d', 'write e', 'COMMIT']);
    });
  });

  describe('when group writes meet', () => {
    /** A group write that logs each merged call as kind[items] in `runs`. */
    let runs: string[];
    const g = (kind: string, jobId: number) =>
      q.enqueueGroup({
        kind,
        jobId,
        item: jobId,
        run: async (_c, items: number[]) => {
          runs.push(`${kind}[${items.join(',')}]`);
          return items.map((i) => `${kind}${i}`);
        },
      });
    beforeEach(() => {
      runs = [];
    });

    it('merges each kind between plain writes, and puts a second write to one job in a later statement', async () => {
      const plain = () =>
        q.enqueue(async () => {
          runs.push('plain');
          return 'p';
        });
      const r = await Promise.all<unknown>([g('start', 1), g('finish', 2), g('start', 3), plain(), g('start', 4), g('start', 5)]);
      assert.deepEqual(r, ['start1', 'finish2', 'start3', 'p', 'start4', 'start5']);
      // The plain write was queued after the first three group writes (it is a barrier for them).
      assert.deepEqual(runs, ['start[1,3]', 'finish[2]', 'plain', 'start[4,5]']);
      runs.length = 0;
      const s = await Promise.all([g('start', 7), g('finish', 7), g('start', 8)]);
      assert.deepEqual(s, ['start7', 'finish7', 'start8']);
      assert.deepEqual(runs, ['start[7,8]', 'finish[7]']);
    });

    it('layers writes to the same jobs: each layer merged per kind, in order', async () => {
      const r = await Promise.all([g('start', 1), g('start', 2), g('finish', 1), g('finish', 2), g('start', 3), g('finish', 3), g('start', 4), g('cancel', 1)]);
      assert.deepEqual(r, ['start1', 'start2', 'finish1', 'finish2', 'start3', 'finish3', 'start4', 'cancel1']);
      assert.deepEqual(runs, ['start[1,2,3,4]', 'finish[1,2,3]', 'cancel[1]']);
      assert.equal(q.commits, 1);
    });
  });

  describe('when merged writes are large', () => {
    it('cuts a call before it would pass MAX_GROUP_BYTES, and then wraps the calls in BEGIN/COMMIT', async () => {
      const runs: string[] = [];
      const big = (n: number, mib: number) =>
        q.enqueueGroup<number, number>({
          kind: 'create',
          jobId: null,
          item: n,
          bytes: mib * 1024 * 1024,
          oneStatement: true,
          run: async (c, items) => {
            runs.push(`create[${items.join(',')}]`);
            await c.run(`create ${items.join(',')}`);
            return items;
          },
        });
      assert.deepEqual(await Promise.all([big(1, 3), big(2, 3), big(3, 3), big(4, 1), big(5, 20)]), [1, 2, 3, 4, 5]);
      assert.deepEqual(runs, ['create[1,2]', 'create[3,4]', 'create[5]'], 'an item larger than the budget goes alone');
      assert.deepEqual(conn.log, ['BEGIN IMMEDIATE', 'create 1,2', 'create 3,4', 'create 5', 'COMMIT']);
      assert.equal(q.commits, 1);
    });
  });

  describe('when a batch holds one single-statement write', () => {
    const lone = (kind: string, jobId: number, fail = false) =>
      q.enqueueGroup({
        kind,
        jobId,
        item: jobId,
        oneStatement: true,
        run: async (c, items) => {
          if (fail) throw new Error('constraint');
          await c.run(`${kind} ${items.join(',')}`);
          return items;
        },
      });

    it('runs it in autocommit mode (no BEGIN/COMMIT round trips) and counts the commit', async () => {
      assert.equal(await lone('start', 7), 7);
      assert.deepEqual(conn.log, ['start 7']);
      assert.equal(q.commits, 1);
    });

    it('rejects only that write when it fails, and issues no ROLLBACK', async () => {
      await assert.rejects(lone('start', 7, true), /constraint/);
      assert.deepEqual(conn.log, []);
      assert.equal(await lone('start', 8), 8);
      assert.deepEqual(conn.log, ['start 8']);
    });

    it('runs a batch of them that merges into one call in autocommit mode too', async () => {
      assert.deepEqual(await Promise.all([lone('start', 1), lone('start', 2), lone('start', 3)]), [1, 2, 3]);
      assert.deepEqual(conn.log, ['start 1,2,3']);
      assert.equal(q.commits, 1);
    });

    it('when such a merged statement fails, finds the bad write alone and commits the others', async () => {
      const w = (jobId: number, bad = false) =>
        q.enqueueGroup({
          kind: 'start',
          jobId,
          item: jobId,
          oneStatement: true,
          run: async (c, items: number[]) => {
            if (bad || items.includes(2)) throw new Error('constraint');
            await c.run(`start ${items.join(',')}`);
            return items;
          },
        });
      const r = await Promise.allSettled([w(1), w(2), w(3)]);
      assert.deepEqual(r.map((x) => x.status), ['fulfilled', 'rejected', 'fulfilled']);
      assert.deepEqual(conn.log, ['BEGIN IMMEDIATE', 'SAVEPOINT op', 'start 1', 'RELEASE op', 'SAVEPOINT op', 'ROLLBACK TO op', 'RELEASE op', 'SAVEPOINT op', 'start 3', 'RELEASE op', 'COMMIT']);
      assert.equal(q.commits, 1);
    });

    it('after an autocommitted statement, fails only what it cannot answer (a refusal with no explain, a wrong count of results), and runs nothing again', async () => {
      const w = (kind: string, jobId: number, out: (items: number[]) => Array<number | undefined>) =>
        q.enqueueGroup<number, number>({
          kind,
          jobId,
          item: jobId,
          oneStatement: true,
          run: async (c, items) => {
            await c.run(`${kind} ${items.join(',')}`);
            return out(items);
          },
        });
      const refusing = (items: number[]) => items.map((i) => (i === 2 ? undefined : i));
      const r1 = await Promise.allSettled([w('a', 1, refusing), w('a', 2, refusing), w('a', 3, refusing)]);
      assert.deepEqual(r1.map((x) => (x.status === 'fulfilled' ? x.value : (x.reason as Error).message)), [1, 'group a refused 1 writes and cannot say why', 3]);
      const r2 = await Promise.allSettled([w('b', 1, () => [1]), w('b', 2, () => [1])]);
      assert.deepEqual(r2.map((x) => x.status), ['rejected', 'rejected']);
      assert.deepEqual(conn.log, ['a 1,2,3', 'b 1,2'], 'each statement ran once');
    });

    it('asks `explain` only for the writes `run` refused; a failed explanation after the commit fails only those, and nothing runs twice', async () => {
      let explainFails = true;
      const w = (jobId: number) =>
        q.enqueueGroup<number, string>({
          kind: 'start',
          jobId,
          item: jobId,
          oneStatement: true,
          run: async (c, items) => {
            await c.run(`start ${items.join(',')}`);
            return items.map((i) => (i % 2 === 0 ? undefined : `started ${i}`));
          },
          explain: async (c, items) => {
            await c.exec(`explain ${items.join(',')}`);
            if (explainFails) throw new Error('disk I/O error');
            return items.map((i) => `refused ${i}`);
          },
        });
      const r = await Promise.allSettled([w(1), w(2), w(3), w(4)]);
      assert.deepEqual(r.map((x) => (x.status === 'fulfilled' ? x.value : (x.reason as Error).message)), ['started 1', 'disk I/O error', 'started 3', 'disk I/O error']);
      assert.deepEqual(conn.log, ['start 1,2,3,4', 'explain 2,4'], 'the committed statement is not run again');
      assert.equal(q.commits, 1);
      conn.log.length = 0;
      explainFails = false;
      assert.deepEqual(await Promise.all([w(5), w(6)]), ['started 5', 'refused 6']);
      assert.deepEqual(conn.log, ['start 5,6', 'explain 6']);
    });

    it('still wraps two of them, or one beside a plain write, in BEGIN/COMMIT', async () => {
      await Promise.all([lone('start', 1), lone('finish', 2)]);
      assert.deepEqual(conn.log, ['BEGIN IMMEDIATE', 'start 1', 'finish 2', 'COMMIT']);
      conn.log.length = 0;
      await Promise.all([lone('start', 3), q.enqueue(async (c) => c.run('write x'))]);
      assert.deepEqual(conn.log, ['BEGIN IMMEDIATE', 'start 3', 'write x', 'COMMIT']);
    });
  });

  describe('when one write of a batch fails', () => {
    it('rolls the batch back and re-runs it with a savepoint per write, failing only that one', async () => {
      const ok1 = q.enqueue(async (c) => c.run('write ok1'));
      const bad = q.enqueue(async () => {
        throw new Error('constraint');
      });
      const ok2 = q.enqueue(async (c) => c.run('write ok2'));
      const r = await Promise.allSettled([ok1, bad, ok2]);
      assert.deepEqual(r.map((x) => x.status), ['fulfilled', 'rejected', 'fulfilled']);
      assert.deepEqual(conn.log, [
        'BEGIN IMMEDIATE', 'write ok1', 'ROLLBACK',
        'BEGIN IMMEDIATE', 'SAVEPOINT op', 'write ok1', 'RELEASE op', 'SAVEPOINT op', 'ROLLBACK TO op', 'RELEASE op', 'SAVEPOINT op', 'write ok2', 'RELEASE op', 'COMMIT',
      ]);
    });

    it('rejects every write of the batch when COMMIT fails', async () => {
      conn.failOn = 'COMMIT';
      const r = await Promise.allSettled([q.enqueue(async () => 1), q.enqueue(async () => 2)]);
      assert.deepEqual(r.map((x) => x.status), ['rejected', 'rejected']);
      assert.equal(q.commits, 0);
    });

    it('does not run the batch again when COMMIT failed once (it may have reached the disk)', async () => {
      conn.failOn = 'COMMIT';
      conn.failOnce = true;
      const ran: number[] = [];
      const op = (n: number) => q.enqueue(async () => void ran.push(n));
      const r = await Promise.allSettled([op(1), op(2)]);
      assert.deepEqual(r.map((x) => x.status), ['rejected', 'rejected']);
      assert.deepEqual(ran, [1, 2]);
      assert.deepEqual(conn.log, ['BEGIN IMMEDIATE', 'COMMIT', 'ROLLBACK']);
      assert.equal(await q.enqueue(async () => 3), 3);
    });

    it('answers committed writes as committed when the commit hook throws, and runs nothing twice', async () => {
      q.onCommit = () => {
        throw new Error('hook');
      };
      const ran: number[] = [];
      assert.deepEqual(await Promise.all([q.enqueue(async () => ran.push(1)), q.enqueue(async () => ran.push(2))]), [1, 2]);
      const lone = await q.enqueueGroup({ kind: 'k', jobId: 1, item: 1, oneStatement: true, run: async (c, items: number[]) => (await c.run('k'), items) });
      assert.equal(lone, 1);
      assert.deepEqual(ran, [1, 2]);
      assert.equal(q.commits, 2);
    });
  });
});
