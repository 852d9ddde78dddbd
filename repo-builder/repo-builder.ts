import { constants, unlinkSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Logger } from 'pino';
import { BuilderError } from '../protocol/errors.js';
import { publishApt, aptDistsDir, type PublishResult } from './apt-publisher.js';
import { BatchRejected, moveToRejected, removeBatch, verifyBatch, type VerifiedBatch, type VerifiedFile } from './batch.js';
import { renderDeb822, type Deb822Field } from './deb822.js';
import { hashFile, placeFile, TMP_PREFIX } from './fs-util.js';
import { mapLimit } from './map-limit.js';
import { batchIdOf, isValidBatchId, LISTING_SUFFIX } from './listing.js';
import { compileRepoBuilderOptions, type RepoBuilderConfig, type RepoBuilderOptions } from './repo-builder-options.js';
import { rpmFragments } from './rpm-metadata.js';
import { publishRpm, rpmChannelDir } from './rpm-publisher.js';
import { Signer } from './signer.js';
import { StateStore, type EntryKind, type PublishedRow } from './state-store.js';
import { compareDebVersions, compareRpmEvr, formatRpmEvr, parseRpmEvr } from './version.js';

/** What one run did. */
export interface RunSummary {
  published: string[];
  rejected: { batch: string; reason: string }[];
  added: number;
  removed: number;
  skipped: number;
  /** Channels whose indexes were written, as `deb:<channel>` / `rpm:<channel>`. */
  indexes: string[];
  ms: number;
  /** Where the time went, in ms: verify (hash + read packages), place (pool), index (write indexes), gc. */
  phases: { verify: number; place: number; index: number; gc: number };
}

type IndexKind = 'deb' | 'rpm';

interface Planned {
  row: PublishedRow;
  file: VerifiedFile;
  companions: VerifiedFile[];
  placed: boolean;
}

const CHUNK_TTL_MS = 24 * 3600 * 1000;

/**
 * Crash points for the kill -9 tests: with REPO_BUILDER_FAILPOINT=<name> in its environment the
 * process SIGKILLs itself at that point of a publish (a real kill -9, at a known moment).
 */
function failpoint(name: 'after-place' | 'after-top' | 'after-commit' | 'mid-remove'): void {
  if (process.env.REPO_BUILDER_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}

function compareVersions(kind: EntryKind, a: string, b: string): number {
  return kind === 'rpm' ? compareRpmEvr(parseRpmEvr(a), parseRpmEvr(b)) : compareDebVersions(a, b);
}

/** The pool directory prefix Debian uses: `lib` names get four letters. */
function poolPrefix(name: string): string {
  return name.startsWith('lib') && name.length > 3 ? name.slice(0, 4) : name.slice(0, 1);
}

/** A Packages stanza: Package first, computed fields next, Description last (as apt-ftparchive). */
function debStanza(control: Deb822Field[], filename: string, size: number, sha256: string): string {
  const pkg = control.filter((f) => f.name.toLowerCase() === 'package');
  const desc = control.filter((f) => f.name.toLowerCase() === 'description');
  const rest = control.filter((f) => f.name.toLowerCase() !== 'package' && f.name.toLowerCase() !== 'description');
  const computed: Deb822Field[] = [
    { name: 'Filename', value: filename },
    { name: 'Size', value: String(size) },
    { name: 'SHA256', value: sha256 },
  ];
  return renderDeb822([...pkg, ...rest, ...computed, ...desc]);
}

/**
 * The repository builder: takes complete batches from the incoming directory, keeps the newest
 * version per (channel, name, arch), and publishes APT and RPM indexes atomically. One instance
 * per repository (a lock file in the state directory enforces it).
 */
export class RepoBuilder {
  private readonly log: Logger;
  private readonly signer: Signer | undefined;
  /** Indexes to rewrite on the next run even without new batches (found stale at startup). */
  private readonly dirty = new Set<string>();

  private constructor(
    readonly cfg: RepoBuilderConfig,
    private readonly store: StateStore,
    private readonly lockPath: string,
  ) {
    this.log = cfg.logger;
    this.signer = cfg.gpgKey === undefined ? undefined : new Signer({ keyId: cfg.gpgKey, homedir: cfg.gpgHome });
  }

  static async open(options: RepoBuilderOptions): Promise<RepoBuilder> {
    const cfg = compileRepoBuilderOptions(options);
    await mkdir(cfg.incomingDir, { recursive: true });
    await mkdir(cfg.repoDir, { recursive: true });
    await mkdir(cfg.stateDir, { recursive: true });
    const lockPath = join(cfg.stateDir, 'lock');
    const crashed = await RepoBuilder.takeLock(lockPath);
    let store: StateStore;
    try {
      store = await StateStore.open(join(cfg.stateDir, 'state.sqlite'));
    } catch (e) {
      await rm(lockPath, { force: true });
      throw e;
    }
    const rb = new RepoBuilder(cfg, store, lockPath);
    await rb.recover(crashed);
    return rb;
  }

  /**
   * A pid lock: a second repo-builder on the same repository would interleave publishes. Returns
   * true when it found a stale lock, i.e. the previous run did not end cleanly.
   */
  private static async takeLock(path: string): Promise<boolean> {
    let stale = false;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        return stale;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
        let alive = false;
        if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
          try {
            process.kill(pid, 0);
            alive = true;
          } catch (err) {
            alive = (err as NodeJS.ErrnoException).code === 'EPERM';
          }
        }
        if (alive) throw new BuilderError('BUILDER_ERR_CONFLICT', `another repo-builder (pid ${pid}) holds ${path}`);
        await rm(path, { force: true }); // stale: its process is gone (killed or crashed)
        stale = true;
      }
    }
    throw new BuilderError('BUILDER_ERR_CONFLICT', `cannot take the lock ${path}`);
  }

  /**
   * At start: finishes removing batches published before a crash, marks every index whose top
   * file on disk is not the one the state recorded (the next run rewrites it from the state),
   * and after a crash (`full`) also removes temporary files and records unreferenced files as
   * garbage (deleted after the grace period). The full sweep walks the tree, so a clean start
   * skips it.
   */
  private async recover(full: boolean): Promise<void> {
    const repo = this.cfg.repoDir;
    for (const { id } of await this.store.all<{ id: string }>('SELECT id FROM done_batches')) {
      // Published before the crash: finish taking it out of incoming (listing first).
      if (isValidBatchId(id)) {
        await rm(join(this.cfg.incomingDir, `${id}${LISTING_SUFFIX}`), { force: true });
        await rm(join(this.cfg.incomingDir, id), { recursive: true, force: true });
        this.log.info({ batch: id }, 'finished removing a batch published before a restart');
      }
      await this.store.run('DELETE FROM done_batches WHERE id = ?', [id]);
    }
    const tops = await this.store.allTops();
    if (full) await this.sweep(tops);
    for (const t of tops) {
      const top = t.kind === 'deb' ? join(repo, aptDistsDir(t.channel), this.signer ? 'InRelease' : 'Release') : join(repo, rpmChannelDir(t.channel), 'repodata', 'repomd.xml');
      const h = await hashFile(top).catch(() => undefined);
      if (h?.sha256 !== t.topSha256) this.dirty.add(`${t.kind}\0${t.channel}`);
    }
    const chans = await this.store.all<{ channel: string; kind: string }>("SELECT DISTINCT channel, kind FROM published WHERE kind IN ('deb', 'rpm')");
    for (const c of chans) if (!tops.some((t) => t.channel === c.channel && t.kind === c.kind)) this.dirty.add(`${c.kind}\0${c.channel}`);
    if (this.dirty.size > 0) this.log.warn({ indexes: [...this.dirty].map((d) => d.replace('\0', ':')) }, 'indexes out of date after an interrupted publish; rewriting');
  }

  /** After a crash: temporary files go now, unreferenced files after the grace period. */
  private async sweep(tops: { files: string[] }[]): Promise<void> {
    const repo = this.cfg.repoDir;
    const referenced = await this.store.allPublishedPaths();
    for (const t of tops) for (const f of t.files) referenced.add(f);
    const garbage = await this.store.allGarbage();
    const now = this.cfg.now();
    const orphans: string[] = [];
    const walk = async (dir: string, collect: (rel: string) => boolean): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.name.startsWith(TMP_PREFIX)) {
          await rm(p, { force: true, recursive: true });
          continue;
        }
        if (p === this.cfg.stateDir) continue;
        if (e.isDirectory()) await walk(p, collect);
        else {
          const rel = relative(repo, p);
          if (collect(rel) && !referenced.has(rel) && !garbage.has(rel)) orphans.push(rel);
        }
      }
    };
    await walk(repo, (rel) => /^deb\/pool\//.test(rel) || /^deb\/dists\/[^/]+\/main\/binary-[^/]+\/by-hash\//.test(rel) || /^rpm\/[^/]+\/(Packages\/|repodata\/[0-9a-f]{64}-)/.test(rel));
    await this.store.addGarbageMany(orphans, now);
    if (orphans.length > 0) this.log.info({ files: orphans.length }, 'unreferenced files found; removed after the grace period');
  }

  /** Listing files present now, oldest first. */
  private async pendingListings(): Promise<string[]> {
    const names = (await readdir(this.cfg.incomingDir)).filter((n) => n.endsWith(LISTING_SUFFIX) && !n.startsWith('.'));
    const withTime = await Promise.all(names.map(async (n) => ({ n, t: (await stat(join(this.cfg.incomingDir, n)).catch(() => undefined))?.mtimeMs ?? 0 })));
    return withTime.sort((a, b) => a.t - b.t || (a.n < b.n ? -1 : a.n > b.n ? 1 : 0)).map((x) => x.n);
  }

  /** Handles every complete batch in incoming (and any stale index) in one publish. */
  async runOnce(): Promise<RunSummary> {
    const t0 = performance.now();
    const summary: RunSummary = { published: [], rejected: [], added: 0, removed: 0, skipped: 0, indexes: [], ms: 0, phases: { verify: 0, place: 0, index: 0, gc: 0 } };
    const verified: VerifiedBatch[] = [];
    const listings: { listingFile: string; id: string }[] = [];
    for (const listingFile of await this.pendingListings()) {
      const id = batchIdOf(listingFile)!;
      if (!isValidBatchId(id)) {
        const reason = `invalid batch id ${JSON.stringify(id).slice(0, 80)} (use letters, digits, ".", "_", "+", "-")`;
        const where = await moveToRejected(this.cfg, `invalid-${this.cfg.now()}`, listingFile, reason);
        this.log.warn({ batch: id, reason, where }, 'batch rejected');
        summary.rejected.push({ batch: id, reason });
        continue;
      }
      listings.push({ listingFile, id });
    }
    // Batches are checked side by side; their order (arrival) is kept for the decisions.
    const checked = await mapLimit(listings, this.cfg.concurrency, async ({ listingFile, id }) => {
      try {
        return await verifyBatch(id, this.cfg, this.store);
      } catch (e) {
        if (!(e instanceof BatchRejected)) throw e;
        const where = await moveToRejected(this.cfg, id, listingFile, e.reason);
        this.log.warn({ batch: id, reason: e.reason, where: relative(this.cfg.incomingDir, where) }, 'batch rejected');
        summary.rejected.push({ batch: id, reason: e.reason });
        return undefined;
      }
    });
    for (const b of checked) if (b !== undefined) verified.push(b);
    summary.phases.verify = Math.round(performance.now() - t0);
    if (verified.length > 0 || this.dirty.size > 0) await this.publish(verified, summary);
    await mapLimit(verified, this.cfg.concurrency, async (b) => {
      await removeBatch(b, () => failpoint('mid-remove'));
      await this.store.run('DELETE FROM done_batches WHERE id = ?', [b.id]);
    });
    summary.published.push(...verified.map((b) => b.id));
    const tGc = performance.now();
    await this.collectGarbage();
    summary.phases.gc = Math.round(performance.now() - tGc);
    summary.ms = Math.round(performance.now() - t0);
    if (verified.length > 0 || summary.rejected.length > 0 || summary.indexes.length > 0) {
      this.log.info(
        { batches: summary.published, rejected: summary.rejected.length, added: summary.added, removed: summary.removed, skipped: summary.skipped, indexes: summary.indexes, ms: summary.ms, phases: summary.phases },
        'publish done',
      );
    }
    return summary;
  }

  /** Decides what each verified package does to the published set, then writes it. */
  private async publish(batches: VerifiedBatch[], summary: RunSummary): Promise<void> {
    const state = new Map<string, (PublishedRow & { planned?: Planned })[]>();
    const adds: Planned[] = [];
    const removes: PublishedRow[] = [];
    const dirty = new Set(this.dirty);
    const now = this.cfg.now();
    const identity = (f: VerifiedFile): [EntryKind, string, string, string] | undefined => {
      if (f.deb) return ['deb', f.deb.name, f.deb.arch, f.deb.version];
      if (f.rpm) return ['rpm', f.rpm.name, f.rpm.arch, formatRpmEvr({ epoch: f.rpm.epoch, version: f.rpm.version, release: f.rpm.release })];
      if (f.dsc) return ['dsc', f.dsc.source, 'source', f.dsc.version];
      return undefined; // source tarballs travel with their .dsc
    };
    // What is published now for every name these batches touch, in one query per channel and kind.
    const wanted = new Map<string, Set<string>>();
    for (const b of batches) {
      for (const f of b.files) {
        const id = identity(f);
        if (id === undefined) continue;
        const k = `${b.listing.channel}\0${id[0]}`;
        wanted.set(k, (wanted.get(k) ?? new Set()).add(id[1]));
      }
    }
    for (const [k, names] of wanted) {
      const [channel, kind] = k.split('\0') as [string, EntryKind];
      for (const r of await this.store.versionsOfMany(channel, kind, [...names])) {
        const key = `${channel}\0${kind}\0${r.name}\0${r.arch}`;
        state.set(key, [...(state.get(key) ?? []), r]);
      }
    }
    for (const rows of state.values()) rows.sort((x, y) => compareVersions(x.kind, x.version, y.version));
    for (const b of batches) {
      const channel = b.listing.channel;
      const older: string[] = [];
      for (const f of b.files) {
        const id = identity(f);
        if (id === undefined) continue;
        const [kind, name, arch, version] = id;
        const key = `${channel}\0${kind}\0${name}\0${arch}`;
        let rows = state.get(key);
        if (rows === undefined) {
          rows = [];
          state.set(key, rows);
        }
        const newest = rows[rows.length - 1];
        const ctx = { batch: b.id, job: b.listing.job, channel, package: name, arch, version };
        if (newest !== undefined) {
          const c = compareVersions(kind, version, newest.version);
          if (c === 0 && newest.sha256 === f.sha256) {
            this.log.info(ctx, 'already published');
            summary.skipped++;
            continue;
          }
          if (c === 0) {
            this.log.warn({ ...ctx, published: newest.sha256, offered: f.sha256 }, 'same version with different content is not published (the published one stays)');
            summary.skipped++;
            continue;
          }
          if (c < 0) {
            older.push(`${name}=${version} (${arch}, published ${newest.version})`);
            summary.skipped++;
            continue;
          }
        }
        const row: PublishedRow = { channel, kind, name, arch, version, sha256: f.sha256, size: f.size, path: '', entry: '', entry2: '', entry3: '', added: now };
        const companions = f.dsc ? f.dsc.files.map((c) => b.files.find((x) => x.name === c.name)!) : [];
        const planned: Planned = { row, file: f, companions, placed: false };
        rows.push({ ...row, planned });
        adds.push(planned);
        while (rows.length > this.cfg.keep) {
          const old = rows.shift()!;
          if (old.planned !== undefined) adds.splice(adds.indexOf(old.planned), 1);
          else removes.push(old);
        }
        if (kind !== 'dsc') dirty.add(`${kind}\0${channel}`);
      }
      // One line per batch, not per package: a full republish can skip thousands.
      if (older.length > 0) {
        this.log.info({ batch: b.id, job: b.listing.job, channel, count: older.length, packages: older.slice(0, 20) }, 'older than the published version; not published');
      }
    }
    const tPlace = performance.now();
    const dirs = new Set<string>();
    await mapLimit(adds, this.cfg.concurrency * 2, (p) => this.place(p, dirs));
    failpoint('after-place');
    const tIndex = performance.now();
    summary.phases.place = Math.round(tIndex - tPlace);
    for (const r of removes) if (r.kind !== 'dsc') dirty.add(`${r.kind}\0${r.channel}`);

    await this.store.exec('BEGIN IMMEDIATE');
    try {
      const removedPaths: string[] = [];
      for (const r of removes) {
        await this.store.deleteRow(r);
        removedPaths.push(r.path);
        if (r.kind === 'dsc') removedPaths.push(...(JSON.parse(r.entry) as string[]));
        this.log.info({ channel: r.channel, package: r.name, arch: r.arch, version: r.version }, 'older version leaves the repository');
      }
      await this.store.addGarbageMany(removedPaths, now);
      await this.store.insertRows(adds.map((p) => p.row));
      await this.store.unGarbageMany(adds.flatMap((p) => [p.row.path, ...(p.row.kind === 'dsc' ? (JSON.parse(p.row.entry) as string[]) : [])]));
      for (const d of [...dirty].sort()) {
        const [kind, channel] = d.split('\0') as [IndexKind, string];
        const rows = await this.store.rowsOf(channel, kind);
        const result: PublishResult = kind === 'deb' ? await publishApt(this.cfg, channel, rows, this.store, this.signer) : await publishRpm(this.cfg, channel, rows, this.store, this.signer);
        const old = await this.store.getTop(channel, kind);
        const live = new Set(result.files);
        await this.store.addGarbageMany((old?.files ?? []).filter((f) => !live.has(f)), now);
        await this.store.unGarbageMany(result.files);
        await this.store.setTop(channel, kind, result.topSha256, result.files);
        summary.indexes.push(`${kind}:${channel}`);
        failpoint('after-top');
      }
      // Published batches are recorded with the publish, so a crash before they leave incoming
      // cannot leave a batch directory behind (recover() finishes the removal).
      for (const b of batches) await this.store.run('INSERT OR REPLACE INTO done_batches (id, at) VALUES (?, ?)', [b.id, now]);
      await this.store.exec('COMMIT');
      failpoint('after-commit');
    } catch (e) {
      await this.store.exec('ROLLBACK').catch(() => undefined);
      throw e;
    }
    summary.phases.index = Math.round(performance.now() - tIndex);
    this.dirty.clear();
    summary.added += adds.length;
    summary.removed += removes.length;
  }

  /** Puts a new package (and a .dsc's companions) in the pool and renders its index entry. */
  private async place(p: Planned, dirs: Set<string>): Promise<void> {
    const { row, file } = p;
    const target = async (dir: string, fileName: string, f: VerifiedFile): Promise<string> => {
      const rel = `${dir}/${fileName}`;
      if (await placeFile(f.path, join(this.cfg.repoDir, rel), dirs)) return rel;
      const h = await hashFile(join(this.cfg.repoDir, rel)).catch(() => undefined);
      if (h?.sha256 === f.sha256) return rel; // already there (a retry after a crash)
      // Same name, other content (another epoch, or a leftover): keep both apart by hash.
      const alt = `${dir}/${f.sha256.slice(0, 16)}/${fileName}`;
      await placeFile(f.path, join(this.cfg.repoDir, alt), dirs);
      return alt;
    };
    if (row.kind === 'deb') {
      const info = file.deb!;
      const upstreamRev = info.version.includes(':') ? info.version.slice(info.version.indexOf(':') + 1) : info.version;
      const rel = await target(`deb/pool/${row.channel}/${poolPrefix(row.name)}/${row.name}`, `${row.name}_${upstreamRev}_${row.arch}.deb`, file);
      row.path = rel;
      // Filename is relative to the archive root (deb/), which apt's sources.list names.
      row.entry = debStanza(info.control, rel.slice('deb/'.length), row.size, row.sha256);
    } else if (row.kind === 'rpm') {
      const info = file.rpm!;
      const base = rpmChannelDir(row.channel);
      const fileName = `${info.name}-${info.version}-${info.release}.${info.arch}.rpm`;
      const rel = await target(`${base}/Packages/${info.name.slice(0, 1).toLowerCase()}`, fileName, file);
      row.path = rel;
      // A hard link shares the verified file's mtime; a copy's differs by little, and only this field.
      const frags = rpmFragments(info, { sha256: row.sha256, size: row.size, mtime: Math.floor(file.mtimeMs / 1000), href: rel.slice(base.length + 1) });
      row.entry = frags.primary;
      row.entry2 = frags.filelists;
      row.entry3 = frags.other;
    } else {
      const dir = `deb/pool/${row.channel}/${poolPrefix(row.name)}/${row.name}`;
      row.path = await target(dir, file.name, file);
      const comps: string[] = [];
      for (const c of p.companions) comps.push(await target(dir, c.name, c));
      row.entry = JSON.stringify(comps);
    }
    p.placed = true;
  }

  /** Deletes files whose grace period has ended. */
  private async collectGarbage(): Promise<void> {
    const now = this.cfg.now();
    const due = await this.store.garbageBefore(now - this.cfg.graceMs);
    const gone: string[] = [];
    for (const g of due) {
      try {
        unlinkSync(join(this.cfg.repoDir, g.path));
        gone.push(g.path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') gone.push(g.path);
        else this.log.warn({ path: g.path, err: code }, 'cannot remove an old file; retrying later');
      }
    }
    await this.store.unGarbageMany(gone);
    if (due.length > 0) this.log.debug({ files: due.length }, 'old files removed');
    await this.store.pruneChunks(now - CHUNK_TTL_MS);
  }

  /** Time until the next garbage is due, for the watcher's timer (undefined when none). */
  async nextGarbageDueMs(): Promise<number | undefined> {
    const rows = await this.store.all<{ since: number | null }>('SELECT MIN(since) AS since FROM garbage');
    const since = rows[0]?.since;
    if (since === null || since === undefined) return undefined;
    return Math.max(0, since + this.cfg.graceMs - this.cfg.now());
  }

  async close(): Promise<void> {
    await this.store.close();
    await rm(this.lockPath, { force: true });
  }
}

