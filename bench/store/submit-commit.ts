/**
 * The one-commit submit (a job inserted already dispatched, `createJob(spec, slave)`) on a file
 * store: the SQLite pages its commit writes, and the commit's latency.
 *
 *   node dist/bench/store/submit-commit.js [--submits 2000] [--gap-ms 0] [--runs 1]
 *       [--store dist/master/store/index.js] [--dir DIR]
 *
 * 1. pages: 300 jobs (each submitted, then started and finished, as on a farm), with the
 *    background checkpointer held off so that the WAL keeps every frame. The submit's commit
 *    appends its frames to the WAL (24 + page size bytes each); their page numbers are read
 *    from the frame headers and named by the `dbstat` table (which b-tree each page is in).
 * 2. latency: a fresh store with the default options (background checkpoints as in the
 *    master), 200 warm-up jobs, then `--submits` jobs one at a time, `--gap-ms` apart: the time
 *    of `createJob(spec, slave)` alone (validation, the write queue, the binding's round trip,
 *    the statement and its COMMIT with synchronous=FULL); start and finish are not timed. Also
 *    the CPU time of the process (all threads: the binding runs SQLite on a worker) during them.
 *
 * 3. with `--io`: what the disk alone charges for a commit of n frames: n frames (a 24-byte
 *    header, then the page, two writes each, as SQLite's WAL writes them) appended to a file,
 *    then one fdatasync; 1,000 rounds per n (7, 6, 5 and 1 frames of 4 KiB, 7 of 1 KiB), in turn.
 *
 * 4. with `--binding`: the time the event loop spends inside node-sqlite3's `Statement#all`
 *    call itself (it only hands the statement to a libuv worker thread), for `SELECT ?` on an
 *    in-memory database, back to back and after 1 ms of idleness (the worker asleep).
 *
 * `--page-size N` creates master.db with that page size before the store opens it (an
 * experiment: the store itself keeps SQLite's default, 4,096).
 *
 * `--store` is the path of a module that exports `MasterStore` (default: this build's), so that
 * a copy of an older build can be measured on the same machine. `--against PATH` adds a second
 * one: both are measured in the same run, the latency phase alternating one submit to each
 * (paired, so that both see the same load on the machine).
 */
import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import { open as openFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import sqlite3 from 'sqlite3';
import type { MasterStore as StoreClass, NewJob } from '../../master/store/index.js';

const { values } = parseArgs({
  options: {
    submits: { type: 'string', default: '2000' },
    'gap-ms': { type: 'string', default: '0' },
    runs: { type: 'string', default: '1' },
    store: { type: 'string' },
    against: { type: 'string' },
    dir: { type: 'string' },
    'page-size': { type: 'string' },
    io: { type: 'boolean', default: false },
    binding: { type: 'boolean', default: false },
  },
});
const SUBMITS = Number(values.submits);
const GAP_MS = Number(values['gap-ms']);
const RUNS = Number(values.runs);
const PAGE_SIZE = values['page-size'] === undefined ? undefined : Number(values['page-size']);
type Variant = { url: string; MasterStore: typeof StoreClass; cpuUs: number };
async function variant(path: string | undefined): Promise<Variant> {
  const url = path === undefined ? new URL('../../master/store/index.js', import.meta.url).href : pathToFileURL(resolve(path)).href;
  return { url, MasterStore: ((await import(url)) as { MasterStore: typeof StoreClass }).MasterStore, cpuUs: 0 };
}
const variants = [await variant(values.store), ...(values.against === undefined ? [] : [await variant(values.against)])];

const spec = (i: number): NewJob => ({ name: `noop-${i}`, channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function lifecycle(s: StoreClass, i: number, v?: Variant): Promise<number> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const j = await s.createJob(spec(i), 'w1');
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  // CPU time (user + system, all threads: the binding runs SQLite on a worker) of the submit.
  if (v !== undefined) v.cpuUs += c.user + c.system;
  await s.startJob(j.id, 1);
  await s.finishJob(j.id, 1, { state: 'succeeded', exitCode: 0 });
  return ms;
}

/** Page numbers of the WAL frames in [from, to) (byte offsets, frame-aligned). */
async function framePages(wal: string, from: number, to: number, pageSize: number): Promise<number[]> {
  const fh = await openFile(wal, 'r');
  try {
    const pages: number[] = [];
    const hdr = Buffer.alloc(24);
    for (let off = from; off < to; off += 24 + pageSize) {
      await fh.read(hdr, 0, 24, off);
      pages.push(hdr.readUInt32BE(0));
    }
    return pages;
  } finally {
    await fh.close();
  }
}

function query<T>(file: string, sql: string): Promise<T[]> {
  return new Promise((res, rej) => {
    const db = new sqlite3.Database(file, sqlite3.OPEN_READONLY, (e) => {
      if (e) return rej(e);
      db.all(sql, (err, rows) => db.close(() => (err ? rej(err) : res(rows as T[]))));
    });
  });
}

/** With --page-size, creates an empty database with that page size (fixed by the first table). */
async function precreate(dir: string): Promise<void> {
  if (PAGE_SIZE === undefined) return;
  await new Promise<void>((res, rej) => {
    const db = new sqlite3.Database(join(dir, 'master.db'), (e) => {
      if (e) return rej(e);
      db.exec(`PRAGMA page_size = ${PAGE_SIZE}; CREATE TABLE bench_page_size (x); DROP TABLE bench_page_size;`, (err) => db.close(() => (err ? rej(err) : res())));
    });
  });
}

async function walSize(wal: string): Promise<number> {
  return (await stat(wal).catch(() => ({ size: 0 }))).size;
}

async function pages(base: string, { MasterStore }: Variant): Promise<void> {
  const dir = await mkdtemp(join(base, 'builder-bench-pages-'));
  try {
    await precreate(dir);
    const s = await MasterStore.open({ dir, checkpointEveryCommits: 1e9, checkpointMaxDelayMs: 1e8, maxWalFrames: 1e9 });
    const file = join(dir, 'master.db');
    const wal = `${file}-wal`;
    for (let i = 0; i < 20; i++) await lifecycle(s, i);
    const ps = (await query<{ page_size: number }>(file, 'PRAGMA page_size'))[0]!.page_size;
    const perSubmit: number[][] = [];
    for (let i = 0; i < 300; i++) {
      const before = await walSize(wal);
      await s.createJob(spec(i), 'w1');
      const after = await walSize(wal);
      perSubmit.push(await framePages(wal, before, after, ps));
      const j = (await s.listJobs({ limit: 1 }))[0]!;
      await s.startJob(j.id, 1);
      await s.finishJob(j.id, 1, { state: 'succeeded', exitCode: 0 });
    }
    await s.close();
    const names = new Map((await query<{ name: string; pageno: number }>(file, 'SELECT name, pageno FROM dbstat')).map((r) => [r.pageno, r.name]));
    const frames = perSubmit.map((p) => p.length).sort((a, b) => a - b);
    const byTree = new Map<string, number>();
    for (const p of perSubmit.flat()) {
      const n = p === 1 ? 'page 1 (header)' : (names.get(p) ?? `page ${p}`);
      byTree.set(n, (byTree.get(n) ?? 0) + 1);
    }
    const mean = frames.reduce((a, b) => a + b, 0) / frames.length;
    console.log(`pages: page size ${ps}; WAL frames per submit over 300: mean ${mean.toFixed(2)}, min ${frames[0]}, median ${frames[150]}, max ${frames[299]}`);
    console.log(`  frames by b-tree (total over 300 submits): ${[...byTree].sort((a, b) => b[1] - a[1]).map(([n, c]) => `${n} ${c}`).join(', ')}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function latency(base: string): Promise<void> {
  const dirs: string[] = [];
  const stores: StoreClass[] = [];
  try {
    for (const v of variants) {
      const dir = await mkdtemp(join(base, 'builder-bench-commit-'));
      dirs.push(dir);
      await precreate(dir);
      stores.push(await v.MasterStore.open({ dir }));
      v.cpuUs = 0;
    }
    for (let i = 0; i < 200; i++) for (const s of stores) await lifecycle(s, i);
    const ms = stores.map(() => [] as number[]);
    for (let i = 0; i < SUBMITS; i++) {
      // With two stores, one submit to each in turn, the first one alternating: both see the same machine.
      for (let k = 0; k < stores.length; k++) {
        const n = (k + i) % stores.length;
        if (GAP_MS > 0) await sleep(GAP_MS);
        ms[n]!.push(await lifecycle(stores[n]!, 200 + i, variants[n]));
      }
    }
    const f = (x: number) => x.toFixed(2);
    for (const [n, v] of variants.entries()) {
      const m = ms[n]!.sort((a, b) => a - b);
      const mean = m.reduce((a, b) => a + b, 0) / m.length;
      const who = variants.length > 1 ? ` [${n === 0 ? 'store' : 'against'}]` : '';
      console.log(`latency${who}: ${SUBMITS} submits, gap ${GAP_MS} ms: mean ${f(mean)} p50 ${f(pct(m, 50))} p90 ${f(pct(m, 90))} p99 ${f(pct(m, 99))} max ${f(m[m.length - 1]!)} ms; CPU ${(v.cpuUs / SUBMITS).toFixed(0)} us per submit`);
    }
  } finally {
    for (const s of stores) await s.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
}

/** Synchronous calls, as SQLite makes them on the binding's worker thread (no libuv round trip per write). */
async function io(base: string): Promise<void> {
  const dir = await mkdtemp(join(base, 'builder-bench-io-'));
  const fd = openSync(join(dir, 'wal'), 'w');
  try {
    const shapes = [
      { frames: 7, page: 4096 },
      { frames: 6, page: 4096 },
      { frames: 5, page: 4096 },
      { frames: 7, page: 1024 },
      { frames: 1, page: 4096 },
    ];
    const ms = shapes.map(() => [] as number[]);
    const hdr = Buffer.alloc(24, 1);
    let off = 0;
    for (let r = 0; r < 1000; r++) {
      for (const [k, sh] of shapes.entries()) {
        const page = Buffer.alloc(sh.page, r & 0xff);
        // Rewind now and then, as a checkpoint does, so the file stays small.
        if (off > 4 << 20) off = 0;
        const t0 = performance.now();
        for (let f = 0; f < sh.frames; f++) {
          writeSync(fd, hdr, 0, 24, off);
          writeSync(fd, page, 0, sh.page, off + 24);
          off += 24 + sh.page;
        }
        fdatasyncSync(fd);
        ms[k]!.push(performance.now() - t0);
      }
      // Let timers and I/O of this process run between rounds, as between commits.
      if (r % 50 === 0) await sleep(0);
    }
    for (const [k, sh] of shapes.entries()) {
      const m = ms[k]!.sort((a, b) => a - b);
      console.log(`io: ${sh.frames} frames of ${sh.page} B (${sh.frames * (24 + sh.page)} B) + fdatasync: p50 ${pct(m, 50).toFixed(3)} p90 ${pct(m, 90).toFixed(3)} p99 ${pct(m, 99).toFixed(3)} ms`);
    }
  } finally {
    closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  }
}

async function binding(): Promise<void> {
  const db = await new Promise<sqlite3.Database>((res, rej) => {
    const d = new sqlite3.Database(':memory:', (e) => (e ? rej(e) : res(d)));
  });
  try {
    db.serialize();
    const st = db.prepare('SELECT ? AS x');
    let inside = 0;
    const one = () =>
      new Promise<void>((res, rej) => {
        const t0 = performance.now();
        st.all([1], (e) => (e ? rej(e) : res()));
        inside = performance.now() - t0;
      });
    for (let i = 0; i < 2000; i++) await one();
    for (const pauseMs of [0, 1]) {
      const us: number[] = [];
      for (let i = 0; i < 2000; i++) {
        if (pauseMs > 0) await sleep(pauseMs);
        await one();
        us.push(inside * 1000);
      }
      us.sort((a, b) => a - b);
      console.log(`binding: inside Statement#all, ${pauseMs === 0 ? 'back to back' : `after ${pauseMs} ms idle`}: p50 ${pct(us, 50).toFixed(1)} p90 ${pct(us, 90).toFixed(1)} p99 ${pct(us, 99).toFixed(1)} us`);
    }
    await new Promise<void>((res) => st.finalize(() => res()));
  } finally {
    await new Promise<void>((res) => db.close(() => res()));
  }
}

const base = values.dir ?? tmpdir();
for (const [n, v] of variants.entries()) {
  console.log(`${n === 0 ? 'store' : 'against'}: ${v.url}`);
  await pages(base, v);
}
for (let r = 0; r < RUNS; r++) await latency(base);
if (values.io) await io(base);
if (values.binding) await binding();
