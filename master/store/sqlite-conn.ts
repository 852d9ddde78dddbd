import sqlite3 from 'sqlite3';

/** What may be bound to a statement parameter. Objects are refused: sqlite3 would store "[object Object]". */
export type SqlValue = string | number | bigint | null | Buffer;

/**
 * One promisified sqlite3 connection with a cache of prepared statements. The binding runs each
 * call on its worker thread; callers await one statement at a time, so statements on a
 * connection run in the order they are issued.
 */
export class SqliteConn {
  private readonly stmts = new Map<string, sqlite3.Statement>();

  private constructor(private readonly db: sqlite3.Database) {}

  static open(file: string, mode: number): Promise<SqliteConn> {
    return new Promise((resolve, reject) => {
      const db = new sqlite3.Database(file, mode, (err) => {
        if (err) return reject(err);
        // Serialized mode: statements run strictly in issue order (a transaction's BEGIN, ops, COMMIT).
        db.serialize();
        resolve(new SqliteConn(db));
      });
    });
  }

  /** Runs several statements without parameters. */
  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  private stmt(sql: string): sqlite3.Statement {
    let s = this.stmts.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  /** Runs one statement; resolves with the number of changed rows and the last inserted rowid. */
  run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number; lastID: number }> {
    return new Promise((resolve, reject) => {
      this.stmt(sql).run(params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve({ changes: this.changes, lastID: this.lastID });
      });
    });
  }

  /**
   * The first row. Implemented with `all` on purpose: sqlite3's `Statement#get` leaves a cached
   * statement mid-cursor, which keeps a read transaction (and a stale snapshot) open.
   */
  async get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    const rows = await this.all<T>(sql, params);
    return rows[0];
  }

  /**
   * All rows. `cache: false` for SQL whose text varies with its data (a merged write of n rows,
   * an IN list): it is prepared for this call only, so the statement cache stays bounded.
   */
  all<T>(sql: string, params: readonly SqlValue[] = [], cache = true): Promise<T[]> {
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, rows: unknown[]) => (err ? reject(err) : resolve(rows as T[]));
      if (cache) this.stmt(sql).all(params, done);
      else this.db.all(sql, params, done);
    });
  }

  async close(): Promise<void> {
    for (const s of this.stmts.values()) {
      await new Promise<void>((resolve) => s.finalize(() => resolve()));
    }
    this.stmts.clear();
    await new Promise<void>((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}
