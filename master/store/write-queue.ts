import type { SqliteConn } from './sqlite-conn.js';

/** One write: statements run on the writer connection inside the batch's transaction. */
export type WriteOp<T> = (conn: SqliteConn) => Promise<T>;

/**
 * A write that can be coalesced with others of the same `kind` into one statement (a multi-row
 * INSERT, an UPDATE ... FROM (VALUES ...)). `run` gets the items of the group in order and
 * returns one result per item, in the same order. `jobId` names the row it touches (null: a new
 * row), so that two writes to one job are never merged or reordered.
 */
export interface GroupWrite<I, R> {
  kind: string;
  jobId: number | null;
  item: I;
  /**
   * The write. A result left undefined is an item the write refused (it changed nothing for
   * it): `explain` answers for those. With `oneStatement`, a throw must mean that the statement
   * failed (nothing written): the batch is then run again write by write. So nothing may throw
   * after the statement returned.
   */
  run: (conn: SqliteConn, items: I[]) => Promise<Array<R | undefined>>;
  /**
   * About how large the item is in the statement (its text, in UTF-16 units): a merged call
   * holds at most MAX_GROUP_BYTES of items, so a burst of large writes (1 MiB scripts) is not one
   * parameter of hundreds of MiB. Default: small.
   */
  bytes?: number;
  /** Reads, and only reads, the answers for the items `run` refused, in their order. */
  explain?: (conn: SqliteConn, items: I[]) => Promise<R[]>;
  /**
   * True when `run` makes its change with one statement, whatever the number of items it merges.
   * A batch whose writes all merge into one such call runs it in autocommit mode: SQLite makes
   * one statement atomic and durable on its own, so the batch costs one round trip through the
   * binding's worker instead of three or more (BEGIN, statements, COMMIT). That is most of an
   * idle farm's commit time, and under load, where every round trip waits for the main thread,
   * most of a batch's. There a failed `run` wrote nothing (the batch is retried write by write);
   * a failed `explain` comes after the commit, and fails only the refused items (nothing was
   * written for them either).
   */
  oneStatement?: boolean;
}

interface Entry {
  op?: WriteOp<unknown>;
  /** Runs alone, outside any transaction (a checkpoint). */
  alone?: WriteOp<unknown>;
  group?: GroupWrite<unknown, unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * Most items merged into one statement: a bound on one statement's work and answer (its rows
 * are one parameter now; when each value was bound, SQLite's limit of 32,766 parameters set it).
 */
export const MAX_GROUP_ITEMS = 500;
/** Most bytes of items merged into one statement (as {@link GroupWrite.bytes} counts them), unless one item is larger alone. */
export const MAX_GROUP_BYTES = 8 * 1024 * 1024;

/**
 * Group commit. Writes that arrive while a transaction is being committed wait in `pending`
 * and go together into the next `BEGIN IMMEDIATE ... COMMIT`. A caller's promise settles only
 * after the COMMIT of its batch has returned, so nothing is announced before it is durable, and
 * the cost of one commit (one WAL sync with synchronous=FULL) is shared by the whole batch.
 *
 * Inside a batch, plain ops run one after the other in arrival order (an op that reads then
 * writes sees every earlier write and no later one) and act as barriers. Between two barriers,
 * group writes are merged per kind into one statement each, which saves the binding's round
 * trip per write (about 10x on this machine). Two writes to one job are never merged nor
 * reordered: the second goes into a later statement (see `plan`).
 *
 * Writes must depend on the database state only (no side effects before they resolve): when
 * one write of a batch throws, the batch is rolled back and re-run one write at a time, each in
 * a savepoint, so the failing write is rejected and the others still commit.
 */
export class WriteQueue {
  private pending: Entry[] = [];
  private running = false;
  private idleWaiters: Array<() => void> = [];
  /** Number of COMMITs done; a measure of batching (writes / commits). */
  commits = 0;
  /** Called after each COMMIT (the store's background checkpointer counts them). */
  onCommit: (() => void) | undefined;

  constructor(
    private readonly conn: SqliteConn,
    private readonly maxBatch: number,
  ) {}

  /** Queues a plain write; resolves with its value after the COMMIT of its batch. */
  enqueue<T>(op: WriteOp<T>): Promise<T> {
    return this.push({ op });
  }

  /** Queues a write that may be merged with others of its kind; resolves after COMMIT. */
  enqueueGroup<I, R>(g: GroupWrite<I, R>): Promise<R> {
    return this.push({ group: g as GroupWrite<unknown, unknown> });
  }

  /**
   * Queues a statement that must run outside a transaction (a WAL checkpoint): it runs in a
   * batch of its own, between the writes queued before it and those after it.
   */
  enqueueAlone<T>(op: WriteOp<T>): Promise<T> {
    return this.push({ alone: op });
  }

  private push<T>(e: Pick<Entry, 'op' | 'group' | 'alone'>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ ...e, resolve: resolve as (v: unknown) => void, reject });
      if (!this.running) {
        this.running = true;
        // A microtask lets every write issued in the same tick join the first batch.
        queueMicrotask(() => void this.drain());
      }
    });
  }

  private committed(): void {
    this.commits++;
    try {
      this.onCommit?.();
    } catch {
      // The hook's failure is not the writes': they are committed, and answered so.
    }
  }

  /** Resolves once every write enqueued so far has settled. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const alone = this.pending[0]!.alone;
      if (alone !== undefined) {
        const e = this.pending.shift()!;
        await alone(this.conn).then(e.resolve, e.reject);
        continue;
      }
      let n = 0;
      while (n < this.pending.length && n < this.maxBatch && this.pending[n]!.alone === undefined) n++;
      const batch = this.pending.splice(0, n);
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

  /** Runs one write alone. */
  private async runOne(e: Entry): Promise<unknown> {
    if (e.op) return e.op(this.conn);
    const values: unknown[] = [undefined];
    await this.runCalls([e], [[0]], values);
    return values[0];
  }

  /**
   * How the group writes batch[from..to) (no plain op among them) run. Writes to distinct rows
   * commute, so they are layered: a write goes in the layer after the one holding the previous
   * write to the same job (a new row's, in the first), and the layers run in order, each merged
   * per kind in order of first appearance (in calls of at most MAX_GROUP_ITEMS items and
   * MAX_GROUP_BYTES). Two writes to one job are thus never merged nor reordered, and a batch of
   * starts and the finishes of the same jobs takes two statements.
   */
  private plan(batch: Entry[], from: number, to: number): number[][] {
    const layers: Array<Map<string, number[]>> = [];
    const layerOf = new Map<number, number>();
    for (let i = from; i < to; i++) {
      const g = batch[i]!.group!;
      let n = 0;
      if (g.jobId !== null) {
        n = (layerOf.get(g.jobId) ?? -1) + 1;
        layerOf.set(g.jobId, n);
      }
      const byKind = (layers[n] ??= new Map());
      let l = byKind.get(g.kind);
      if (l === undefined) byKind.set(g.kind, (l = []));
      l.push(i);
    }
    const calls: number[][] = [];
    for (const byKind of layers) {
      for (const idx of byKind.values()) {
        let call: number[] = [];
        let bytes = 0;
        for (const i of idx) {
          const b = batch[i]!.group!.bytes ?? 0;
          if (call.length === MAX_GROUP_ITEMS || (call.length > 0 && bytes + b > MAX_GROUP_BYTES)) {
            calls.push(call);
            call = [];
            bytes = 0;
          }
          call.push(i);
          bytes += b;
        }
        calls.push(call);
      }
    }
    return calls;
  }

  /**
   * Runs the calls of a plan, setting values[i] for each write. With `explainFailed` (autocommit:
   * the writes are committed once a call's `run` returned), what fails after that (an `explain`,
   * a refusal nothing can explain, a wrong number of results) is recorded there for the items
   * concerned instead of failing the batch, which would run them again.
   */
  private async runCalls(batch: Entry[], calls: number[][], values: unknown[], explainFailed?: Map<number, unknown>): Promise<void> {
    for (const part of calls) {
      const g = batch[part[0]!]!.group!;
      const res = await g.run(this.conn, part.map((i) => batch[i]!.group!.item));
      if (res.length !== part.length) {
        const e = new Error(`group ${g.kind} returned ${res.length} results for ${part.length} writes`);
        if (explainFailed === undefined) throw e;
        // Committed (autocommit) but not answerable: each fails, none runs again.
        for (const i of part) explainFailed.set(i, e);
        continue;
      }
      part.forEach((i, n) => (values[i] = res[n]));
      const refused = part.filter((i) => values[i] === undefined);
      if (refused.length === 0) continue;
      try {
        if (g.explain === undefined) throw new Error(`group ${g.kind} refused ${refused.length} writes and cannot say why`);
        const why = await g.explain(this.conn, refused.map((i) => batch[i]!.group!.item));
        if (why.length !== refused.length) throw new Error(`group ${g.kind} explained ${why.length} of ${refused.length} refused writes`);
        refused.forEach((i, n) => (values[i] = why[n]));
      } catch (e) {
        if (explainFailed === undefined) throw e;
        for (const i of refused) explainFailed.set(i, e);
      }
    }
  }

  private async runBatch(batch: Entry[]): Promise<Outcome[]> {
    const onlyGroups = batch.every((e) => e.group !== undefined);
    const calls = onlyGroups ? this.plan(batch, 0, batch.length) : undefined;
    if (calls?.length === 1 && batch[calls[0]![0]!]!.group!.oneStatement === true) {
      // The whole batch is one statement: its own transaction, committed whole or not at all.
      const values: unknown[] = new Array(batch.length);
      const explainFailed = new Map<number, unknown>();
      try {
        await this.runCalls(batch, calls, values, explainFailed);
        this.committed();
        return batch.map((_, i) => (explainFailed.has(i) ? { ok: false, error: explainFailed.get(i) } : { ok: true, value: values[i] }));
      } catch (error) {
        if (batch.length === 1) return [{ ok: false, error }];
        // Nothing of it was written: find the bad write.
        return this.runEach(batch);
      }
    }
    // Fast path: merged groups, no savepoints.
    try {
      await this.conn.run('BEGIN IMMEDIATE');
      const values: unknown[] = new Array(batch.length);
      for (let i = 0; i < batch.length; ) {
        if (batch[i]!.op) {
          values[i] = await batch[i]!.op!(this.conn);
          i++;
          continue;
        }
        let k = i;
        while (k < batch.length && batch[k]!.group) k++;
        // A batch of group writes only was planned whole above.
        await this.runCalls(batch, calls ?? this.plan(batch, i, k), values);
        i = k;
      }
      try {
        await this.conn.run('COMMIT');
      } catch (error) {
        // Not run again: whether a failed COMMIT reached the disk is not always known (an fsync
        // that failed after the WAL frames were written), and a second run could apply the
        // writes twice. Every write of the batch fails.
        await this.rollback();
        return batch.map(() => ({ ok: false, error }));
      }
      this.committed();
      return batch.map((_, i) => ({ ok: true, value: values[i] }));
    } catch (error) {
      await this.rollback();
      if (batch.length === 1) return [{ ok: false, error }];
    }
    return this.runEach(batch);
  }

  /** The slow path: one write at a time, each in a savepoint, so that one bad write fails alone. */
  private async runEach(batch: Entry[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    try {
      await this.conn.run('BEGIN IMMEDIATE');
      for (const e of batch) {
        await this.conn.run('SAVEPOINT op');
        try {
          outcomes.push({ ok: true, value: await this.runOne(e) });
          await this.conn.run('RELEASE op');
        } catch (error) {
          await this.conn.run('ROLLBACK TO op');
          await this.conn.run('RELEASE op');
          outcomes.push({ ok: false, error });
        }
      }
      await this.conn.run('COMMIT');
      this.committed();
      return outcomes;
    } catch (error) {
      await this.rollback();
      return batch.map(() => ({ ok: false, error }));
    }
  }
}
