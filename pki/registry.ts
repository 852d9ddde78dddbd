import { createRequire } from 'node:module';
import type sqlite3 from 'sqlite3';
import { randomBytes } from 'node:crypto';
import { BuilderError } from '../protocol/errors.js';
import { sha256Hex } from './certificates.js';
import type { Role } from './roles.js';

/** A certificate the CA issued. */
export interface CertificateRecord {
  serial: string;
  name: string;
  role: Role | 'master';
  notBefore: number;
  notAfter: number;
  issuedAt: number;
  revokedAt: number | null;
  /** The serial this certificate renewed, if it came from a renewal. */
  replaces: string | null;
  /** When it was first presented on a connection (null: never). */
  firstSeenAt: number | null;
}

export type SerialCheck =
  | { ok: true; record: CertificateRecord }
  | { ok: false; reason: 'unknown' | 'revoked' };

const MIGRATIONS: string[] = [
  `CREATE TABLE certificates (
     serial TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     role TEXT NOT NULL,
     not_before INTEGER NOT NULL,
     not_after INTEGER NOT NULL,
     issued_at INTEGER NOT NULL,
     revoked_at INTEGER
   );
   CREATE INDEX certificates_name ON certificates(name);
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     used_at INTEGER,
     used_by TEXT
   );`,
  // 2: renewal. Which certificate a renewed one replaces, and when a certificate was first
  // presented on a connection (its replacement in use: the old one is revoked then).
  `ALTER TABLE certificates ADD COLUMN replaces TEXT;
   ALTER TABLE certificates ADD COLUMN first_seen_at INTEGER;
   CREATE INDEX certificates_replaces ON certificates(replaces)`,
];

interface Row {
  serial: string;
  name: string;
  role: string;
  not_before: number;
  not_after: number;
  issued_at: number;
  revoked_at: number | null;
  replaces: string | null;
  first_seen_at: number | null;
}

function toRecord(r: Row): CertificateRecord {
  return {
    serial: r.serial,
    name: r.name,
    role: r.role as CertificateRecord['role'],
    notBefore: r.not_before,
    notAfter: r.not_after,
    issuedAt: r.issued_at,
    revokedAt: r.revoked_at,
    replaces: r.replaces,
    firstSeenAt: r.first_seen_at,
  };
}

/**
 * The CA's book: every issued serial, revocations, and enrollment tokens (stored as SHA-256
 * hashes only). Lives in its own SQLite file so that `master` CLI commands and a running master
 * share it: a revocation written by the CLI is seen by the master's next handshake check.
 */
export class PkiRegistry {
  private constructor(private readonly db: sqlite3.Database) {}

  static async open(path: string): Promise<PkiRegistry> {
    const db = await new Promise<sqlite3.Database>((resolve, reject) => {
      // Loaded on first use: a slave reaches this module through pki/index.js but never opens a registry.
      const { Database } = createRequire(import.meta.url)('sqlite3') as typeof sqlite3;
      const d = new Database(path, (err) => (err ? reject(err) : resolve(d)));
    });
    const reg = new PkiRegistry(db);
    await reg.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;');
    await reg.migrate();
    return reg;
  }

  private exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  private run(sql: string, params: unknown[] = []): Promise<number> {
    return new Promise((resolve, reject) =>
      this.db.run(sql, params, function (err) {
        if (err) reject(err);
        else resolve(this.changes);
      }),
    );
  }

  private all<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => this.db.all(sql, params, (err, rows) => (err ? reject(err) : resolve(rows as T[]))));
  }

  private async migrate(): Promise<void> {
    const [row] = await this.all<{ user_version: number }>('PRAGMA user_version');
    let version = row?.user_version ?? 0;
    while (version < MIGRATIONS.length) {
      await this.exec(`BEGIN IMMEDIATE; ${MIGRATIONS[version]!}; PRAGMA user_version=${version + 1}; COMMIT;`);
      version++;
    }
  }

  async recordCertificate(c: Omit<CertificateRecord, 'issuedAt' | 'revokedAt' | 'replaces' | 'firstSeenAt'> & { replaces?: string }): Promise<void> {
    await this.run('INSERT INTO certificates(serial,name,role,not_before,not_after,issued_at,replaces) VALUES (?,?,?,?,?,?,?)', [
      c.serial,
      c.name,
      c.role,
      c.notBefore,
      c.notAfter,
      Date.now(),
      c.replaces ?? null,
    ]);
  }

  /** The certificates issued to replace `serial` (renewals of it), oldest first. */
  async replacementsOf(serial: string): Promise<CertificateRecord[]> {
    return (await this.all<Row>('SELECT * FROM certificates WHERE replaces = ? ORDER BY issued_at', [serial.toUpperCase()])).map(toRecord);
  }

  /** Records the first connection made with a certificate; true if this was it. */
  async markSeen(serial: string, at = Date.now()): Promise<boolean> {
    return (await this.run('UPDATE certificates SET first_seen_at = ? WHERE serial = ? AND first_seen_at IS NULL', [at, serial.toUpperCase()])) === 1;
  }

  /** Revokes one certificate; true if it was live. */
  async revokeSerial(serial: string, at = Date.now()): Promise<boolean> {
    return (await this.run('UPDATE certificates SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL', [at, serial.toUpperCase()])) === 1;
  }

  /** Checked on every handshake: the serial must be one we issued and not revoked. */
  async checkSerial(serial: string): Promise<SerialCheck> {
    const rows = await this.all<Row>('SELECT * FROM certificates WHERE serial = ?', [serial.toUpperCase()]);
    const r = rows[0];
    if (!r) return { ok: false, reason: 'unknown' };
    if (r.revoked_at !== null) return { ok: false, reason: 'revoked' };
    return { ok: true, record: toRecord(r) };
  }

  async list(role?: CertificateRecord['role']): Promise<CertificateRecord[]> {
    const rows = role
      ? await this.all<Row>('SELECT * FROM certificates WHERE role = ? ORDER BY name, issued_at', [role])
      : await this.all<Row>('SELECT * FROM certificates ORDER BY name, issued_at');
    return rows.map(toRecord);
  }

  /** Is there a live (unrevoked, unexpired) certificate with this name? */
  async hasLiveCertificate(name: string, now = Date.now()): Promise<boolean> {
    const rows = await this.all<Row>('SELECT * FROM certificates WHERE name = ? AND revoked_at IS NULL AND not_after > ?', [name, now]);
    return rows.length > 0;
  }

  /** Revokes every certificate of `name` (optionally of one role); returns how many. */
  async revoke(name: string, role?: Role): Promise<number> {
    const now = Date.now();
    return role
      ? this.run('UPDATE certificates SET revoked_at = ? WHERE name = ? AND role = ? AND revoked_at IS NULL', [now, name, role])
      : this.run('UPDATE certificates SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL', [now, name]);
  }

  /** Makes a one-time token; only its hash is stored. Returns the token in clear, once. */
  async createToken(ttlMs: number, now = Date.now()): Promise<{ token: string; expiresAt: number }> {
    const token = randomBytes(24).toString('base64url');
    const expiresAt = now + ttlMs;
    await this.run('INSERT INTO tokens(hash, created_at, expires_at) VALUES (?,?,?)', [sha256Hex(token), now, expiresAt]);
    return { token, expiresAt };
  }

  /**
   * Spends a token for `usedBy`. The UPDATE's WHERE clause is the check, so two enrollments
   * racing for one token cannot both win.
   */
  async consumeToken(token: string, usedBy: string, now = Date.now()): Promise<void> {
    const hash = sha256Hex(token);
    const changed = await this.run('UPDATE tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?', [
      now,
      usedBy,
      hash,
      now,
    ]);
    if (changed === 1) return;
    const rows = await this.all<{ used_at: number | null; expires_at: number }>('SELECT used_at, expires_at FROM tokens WHERE hash = ?', [hash]);
    const r = rows[0];
    const hint = 'ask the master operator for a new one: master token create';
    if (!r) throw new BuilderError('BUILDER_ERR_TOKEN', 'enrollment token is not valid', { hint });
    if (r.used_at !== null) throw new BuilderError('BUILDER_ERR_TOKEN', 'enrollment token was already used', { hint });
    throw new BuilderError('BUILDER_ERR_TOKEN', 'enrollment token has expired', { hint });
  }

  /** Gives a token back (used when signing fails after the token was spent). */
  async restoreToken(token: string): Promise<void> {
    await this.run('UPDATE tokens SET used_at = NULL, used_by = NULL WHERE hash = ?', [sha256Hex(token)]);
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}
