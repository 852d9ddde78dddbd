import type { SqliteConn } from './sqlite-conn.js';

/** One write: statements run on the writer connection inside the batch's transaction. */
export type WriteOp<T> = (conn: SqliteConn) => Promise<T>;

interface Entry {
  op: WriteOp<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * Group commit. Writes that arrive while a transaction is being committed wait in `pending`
 * and go together into the next `BEGIN IMMEDIATE ... COMMIT`. A caller's promise settles only
 * after the COMMIT of its batch has returned, so nothing is announced before it is durable, and
 * the cost of one commit (one WAL sync with synchronous=FULL) is shared by the whole batch.
 *
 * Ops must be functions of the database state only (no side effects before they resolve): when
 * one op of a batch throws, the batch is rolled back and re-run with a savepoint per op, so the
 * failing op is rejected and the others still commit.
 */
export class WriteQueue {
  private pending: Entry[] = [];
  private running = false;
  private idleWaiters: Array<() => void> = [];
  /** Number of COMMITs done; a measure of batching (ops / commits). */
  commits = 0;

  constructor(
    private readonly conn: SqliteConn,
    private readonly maxBatch: number,
  ) {}

  /** Queues a write; resolves with its value after the COMMIT of its batch. */
  enqueue<T>(op: WriteOp<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ op, resolve: resolve as (v: unknown) => void, reject });
      if (!this.running) {
        this.running = true;
        // A microtask lets every write issued in the same tick join the first batch.
        queueMicrotask(() => void this.drain());
      }
    });
  }

  /** Resolves once every write enqueued so far has settled. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.maxBatch);
      const outcomes = await this.runBatch(batch);
      batch.forEach((e, i) => {
        const o = outcomes[i]!;
        if (o.ok) e.resolve(o.value);
        else e.reject(o.error);
      });
    }
    this.running = false;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  private async rollback(): Promise<void> {
    try {
      await this.conn.exec('ROLLBACK');
    } catch {
      // No transaction open (BEGIN failed, or SQLite already rolled back): nothing to undo.
    }
  }

  private async runBatch(batch: Entry[]): Promise<Outcome[]> {
    // Fast path: no savepoints.
    try {
      await this.conn.run('BEGIN IMMEDIATE');
      // Ops run one after the other, so an op that reads then writes sees every earlier op of
      // the batch and no later one. (Pipelining the ops' statements was measured: no faster.)
      const values: unknown[] = [];
      for (const e of batch) values.push(await e.op(this.conn));
      await this.conn.run('COMMIT');
      this.commits++;
      return values.map((value) => ({ ok: true, value }));
    } catch (error) {
      await this.rollback();
      if (batch.length === 1) return [{ ok: false, error }];
    }
    // Slow path: isolate each op in a savepoint so that one bad op fails alone.
    const outcomes: Outcome[] = [];
    try {
      await this.conn.run('BEGIN IMMEDIATE');
      for (const e of batch) {
        await this.conn.run('SAVEPOINT op');
        try {
          outcomes.push({ ok: true, value: await e.op(this.conn) });
          await this.conn.run('RELEASE op');
        } catch (error) {
          await this.conn.run('ROLLBACK TO op');
          await this.conn.run('RELEASE op');
          outcomes.push({ ok: false, error });
        }
      }
      await this.conn.run('COMMIT');
      this.commits++;
      return outcomes;
    } catch (error) {
      await this.rollback();
      return batch.map(() => ({ ok: false, error }));
    }
  }
}
