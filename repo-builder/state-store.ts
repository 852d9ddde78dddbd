import sqlite3 from 'sqlite3';

/** The kinds of entry a channel publishes. */
export type EntryKind = 'deb' | 'rpm' | 'dsc';

/** One published package of a channel. */
export interface PublishedRow {
  channel: string;
  kind: EntryKind;
  name: string;
  arch: string;
  version: string;
  sha256: string;
  size: number;
  /** Path of the package file, relative to the repository root. */
  path: string;
  /** deb: the Packages stanza; rpm: the primary.xml fragment; dsc: JSON of companion paths. */
  entry: string;
  /** rpm: filelists fragment. */
  entry2: string;
  /** rpm: other fragment. */
  entry3: string;
  added: number;
}

/**
 * The repo-builder's state in SQLite (WAL): the metadata read from each package (keyed by its
 * sha256, so a package is read once however often it is republished), the published set per
 * channel, the files each channel's top index references, and files waiting out their grace
 * period before deletion.
 */
export class StateStore {
  private constructor(private readonly db: sqlite3.Database) {}

  static async open(file: string): Promise<StateStore> {
    const db = await new Promise<sqlite3.Database>((resolve, reject) => {
      const d = new sqlite3.Database(file, (err) => (err ? reject(err) : resolve(d)));
    });
    const s = new StateStore(db);
    await s.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      PRAGMA busy_timeout = 5000;
      CREATE TABLE IF NOT EXISTS meta_cache (sha256 TEXT PRIMARY KEY, kind TEXT NOT NULL, info TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS published (
        channel TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, arch TEXT NOT NULL, version TEXT NOT NULL,
        sha256 TEXT NOT NULL, size INTEGER NOT NULL, path TEXT NOT NULL,
        entry TEXT NOT NULL, entry2 TEXT NOT NULL, entry3 TEXT NOT NULL, added INTEGER NOT NULL,
        PRIMARY KEY (channel, kind, name, arch, version));
      CREATE TABLE IF NOT EXISTS tops (channel TEXT NOT NULL, kind TEXT NOT NULL, top_sha256 TEXT NOT NULL, files TEXT NOT NULL,
        PRIMARY KEY (channel, kind));
      CREATE TABLE IF NOT EXISTS garbage (path TEXT PRIMARY KEY, since INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS done_batches (id TEXT PRIMARY KEY, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS chunks (key TEXT NOT NULL, codec TEXT NOT NULL, data BLOB NOT NULL, used INTEGER NOT NULL,
        PRIMARY KEY (key, codec));
    `);
    return s;
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  run(sql: string, params: (string | number | null)[] = []): Promise<void> {
    return new Promise((resolve, reject) => this.db.run(sql, params, (err) => (err ? reject(err) : resolve())));
  }

  all<T>(sql: string, params: (string | number | null)[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => this.db.all(sql, params, (err, rows) => (err ? reject(err) : resolve(rows as T[]))));
  }

  /** Cached metadata for many files at once: sha256 -> kind -> info. */
  async getMetaMany(shas: string[]): Promise<Map<string, Map<string, unknown>>> {
    const out = new Map<string, Map<string, unknown>>();
    for (let i = 0; i < shas.length; i += 500) {
      const part = shas.slice(i, i + 500);
      const rows = await this.all<{ sha256: string; kind: string; info: string }>(`SELECT sha256, kind, info FROM meta_cache WHERE sha256 IN (${part.map(() => '?').join(',')})`, part);
      for (const r of rows) {
        const m = out.get(r.sha256) ?? new Map<string, unknown>();
        m.set(r.kind, JSON.parse(r.info));
        out.set(r.sha256, m);
      }
    }
    return out;
  }

  async putMetaMany(entries: { sha256: string; kind: string; info: unknown }[]): Promise<void> {
    for (let i = 0; i < entries.length; i += 300) {
      const part = entries.slice(i, i + 300);
      await this.run(
        `INSERT OR REPLACE INTO meta_cache (sha256, kind, info) VALUES ${part.map(() => '(?, ?, ?)').join(',')}`,
        part.flatMap((e) => [e.sha256, e.kind, JSON.stringify(e.info)]),
      );
    }
  }

  /** Inserts many rows with few statements. */
  async insertRows(rows: PublishedRow[]): Promise<void> {
    for (let i = 0; i < rows.length; i += 80) {
      const part = rows.slice(i, i + 80);
      await this.run(
        `INSERT OR REPLACE INTO published (channel, kind, name, arch, version, sha256, size, path, entry, entry2, entry3, added) VALUES ${part.map(() => '(?,?,?,?,?,?,?,?,?,?,?,?)').join(',')}`,
        part.flatMap((r) => [r.channel, r.kind, r.name, r.arch, r.version, r.sha256, r.size, r.path, r.entry, r.entry2, r.entry3, r.added]),
      );
    }
  }

  /** Records many paths as garbage since `since`. */
  async addGarbageMany(paths: string[], since: number): Promise<void> {
    for (let i = 0; i < paths.length; i += 400) {
      const part = paths.slice(i, i + 400);
      await this.run(`INSERT OR IGNORE INTO garbage (path, since) VALUES ${part.map(() => '(?, ?)').join(',')}`, part.flatMap((p) => [p, since]));
    }
  }

  async unGarbageMany(paths: string[]): Promise<void> {
    for (let i = 0; i < paths.length; i += 500) {
      const part = paths.slice(i, i + 500);
      await this.run(`DELETE FROM garbage WHERE path IN (${part.map(() => '?').join(',')})`, part);
    }
  }

  /** Published rows (without the rpm filelists/other fragments) of many names of one channel and kind. */
  async versionsOfMany(channel: string, kind: EntryKind, names: string[]): Promise<PublishedRow[]> {
    const out: PublishedRow[] = [];
    for (let i = 0; i < names.length; i += 500) {
      const part = names.slice(i, i + 500);
      out.push(
        ...(await this.all<PublishedRow>(
          `SELECT channel, kind, name, arch, version, sha256, size, path, entry, '' AS entry2, '' AS entry3, added FROM published WHERE channel = ? AND kind = ? AND name IN (${part.map(() => '?').join(',')})`,
          [channel, kind, ...part],
        )),
      );
    }
    return out;
  }

  /** Every published row of a channel and kind, in a stable order (name, arch, version text). */
  rowsOf(channel: string, kind: EntryKind): Promise<PublishedRow[]> {
    return this.all<PublishedRow>('SELECT * FROM published WHERE channel = ? AND kind = ? ORDER BY name, arch, version', [channel, kind]);
  }

  /** Path of every published file (package files and dsc companions). */
  async allPublishedPaths(): Promise<Set<string>> {
    const rows = await this.all<{ path: string; kind: string; entry: string }>('SELECT path, kind, entry FROM published');
    const out = new Set<string>();
    for (const r of rows) {
      out.add(r.path);
      if (r.kind === 'dsc') for (const p of JSON.parse(r.entry) as string[]) out.add(p);
    }
    return out;
  }

  deleteRow(r: Pick<PublishedRow, 'channel' | 'kind' | 'name' | 'arch' | 'version'>): Promise<void> {
    return this.run('DELETE FROM published WHERE channel = ? AND kind = ? AND name = ? AND arch = ? AND version = ?', [
      r.channel,
      r.kind,
      r.name,
      r.arch,
      r.version,
    ]);
  }

  async getTop(channel: string, kind: string): Promise<{ topSha256: string; files: string[] } | undefined> {
    const rows = await this.all<{ top_sha256: string; files: string }>('SELECT top_sha256, files FROM tops WHERE channel = ? AND kind = ?', [channel, kind]);
    const r = rows[0];
    return r === undefined ? undefined : { topSha256: r.top_sha256, files: JSON.parse(r.files) as string[] };
  }

  async allTops(): Promise<{ channel: string; kind: string; topSha256: string; files: string[] }[]> {
    const rows = await this.all<{ channel: string; kind: string; top_sha256: string; files: string }>('SELECT * FROM tops');
    return rows.map((r) => ({ channel: r.channel, kind: r.kind, topSha256: r.top_sha256, files: JSON.parse(r.files) as string[] }));
  }

  setTop(channel: string, kind: string, topSha256: string, files: string[]): Promise<void> {
    return this.run('INSERT OR REPLACE INTO tops (channel, kind, top_sha256, files) VALUES (?, ?, ?, ?)', [channel, kind, topSha256, JSON.stringify(files)]);
  }

  garbageBefore(t: number): Promise<{ path: string }[]> {
    return this.all<{ path: string }>('SELECT path FROM garbage WHERE since <= ?', [t]);
  }

  async allGarbage(): Promise<Set<string>> {
    return new Set((await this.all<{ path: string }>('SELECT path FROM garbage')).map((r) => r.path));
  }

  /** ChunkCache: compressed index chunks by the sha256 of their text; marks them used now. */
  async getChunks(keys: string[], codec: string): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    const now = Date.now();
    for (let i = 0; i < keys.length; i += 500) {
      const part = keys.slice(i, i + 500);
      const marks = part.map(() => '?').join(',');
      const rows = await this.all<{ key: string; data: Buffer }>(`SELECT key, data FROM chunks WHERE codec = ? AND key IN (${marks})`, [codec, ...part]);
      for (const r of rows) out.set(r.key, r.data);
      await this.run(`UPDATE chunks SET used = ? WHERE codec = ? AND key IN (${marks})`, [now, codec, ...part]);
    }
    return out;
  }

  async putChunks(entries: { key: string; data: Buffer }[], codec: string): Promise<void> {
    const now = Date.now();
    for (const e of entries) {
      await new Promise<void>((resolve, reject) =>
        this.db.run('INSERT OR REPLACE INTO chunks (key, codec, data, used) VALUES (?, ?, ?, ?)', [e.key, codec, e.data, now], (err) =>
          err ? reject(err) : resolve(),
        ),
      );
    }
  }

  /** Drops chunks no publish has used since `before`. */
  pruneChunks(before: number): Promise<void> {
    return this.run('DELETE FROM chunks WHERE used < ?', [before]);
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}
