/**
 * The floor of the idle-farm dispatch latency on this machine: the same path as Builder's
 * queued -> running, built from the bare parts and nothing else, in the same process layout.
 *
 *   node dist/bench/jobs/latency-floor.js [count]      (bench/jobs/run.ts runs it too)
 *
 * - a "master" process: a TLS server (TLS 1.3, mutual, certificates from our pki) and a SQLite
 *   file through the sqlite3 package in WAL with synchronous=FULL, as the master's store. A
 *   submit is one INSERT (one durable commit, on sqlite3's worker thread), then the assignment
 *   goes to the slave and the answer to the submitter; the slave's acceptance is the start:
 *   `started - created` is the figure, as Builder's startedAt - createdAt;
 * - a "slave" process: answers the assignment at once, then spawns `true` with the slave's
 *   options (own process group, stdout and stderr piped) and reports its end;
 * - the driver (this process) is the client: one job at a time, the next after the last ended.
 * Messages are JSON lines: no msgpack, no JSON-RPC, no schema checks, no logs, no files per
 * attempt. What Builder adds on top of this is its own cost; what this takes is the machine's.
 * The processes are forked with IPC (setup and figures) and killed by pid at the end.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import sqlite3 from 'sqlite3';
import { PkiRegistry, initCa, issueIdentity, loadCa, loadIdentity } from '../../pki/index.js';
import { mutualTlsClientOptions, mutualTlsServerOptions } from '../../protocol/tls.js';
import { serverMaterial } from '../protocol/common.js';

type Msg = { t: string; id?: number; role?: string };

const now = (): number => performance.timeOrigin + performance.now();

/** Calls `onMsg` for each JSON line that arrives on `s`. */
function lines(s: tls.TLSSocket, onMsg: (m: Msg) => void): void {
  let buf = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      onMsg(JSON.parse(buf.slice(0, i)) as Msg);
      buf = buf.slice(i + 1);
    }
  });
}

const send = (s: tls.TLSSocket, m: Msg): void => void s.write(JSON.stringify(m) + '\n');

function dbCall(f: (cb: (err: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => f((err) => (err ? reject(err) : resolve())));
}

async function master(caDir: string, dbFile: string): Promise<void> {
  const db = new sqlite3.Database(dbFile);
  await dbCall((cb) => db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT, created REAL, started REAL, ended REAL)', cb));
  const insert = db.prepare("INSERT INTO jobs (state, created) VALUES ('dispatched', ?)");
  const start = db.prepare("UPDATE jobs SET state = 'running', started = ? WHERE id = ?");
  const end = db.prepare("UPDATE jobs SET state = 'succeeded', ended = ? WHERE id = ?");
  const created = new Map<number, number>();
  const exact: number[] = [];
  const ms: number[] = [];
  let slave: tls.TLSSocket | undefined;
  let client: tls.TLSSocket | undefined;
  const server = tls.createServer(mutualTlsServerOptions(await serverMaterial(caDir), 10_000), (s) => {
    s.setNoDelay(true);
    lines(s, (m) => {
      if (m.t === 'hello') {
        if (m.role === 'slave') slave = s;
        else client = s;
      } else if (m.t === 'submit') {
        const c = now();
        insert.run([c], function (this: sqlite3.RunResult, err: Error | null) {
          if (err) throw err;
          created.set(this.lastID, c);
          send(slave!, { t: 'assign', id: this.lastID });
          send(s, { t: 'submitted', id: this.lastID });
        });
      } else if (m.t === 'accepted') {
        const st = now();
        const c = created.get(m.id!)!;
        exact.push(st - c);
        ms.push(Math.floor(st) - Math.floor(c));
        start.run([st, m.id], (err) => {
          if (err) throw err;
        });
      } else if (m.t === 'ended') {
        end.run([now(), m.id], (err) => {
          if (err) throw err;
          created.delete(m.id!);
          send(client!, { t: 'ended', id: m.id! });
        });
      }
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    process.send?.({ port: typeof a === 'object' && a !== null ? a.port : 0 });
  });
  process.on('message', (m: { report?: boolean }) => {
    if (m.report === true) process.send?.({ exact, ms });
  });
}

async function slave(idDir: string, port: number): Promise<void> {
  const s = tls.connect(mutualTlsClientOptions(await loadIdentity(idDir), '127.0.0.1', port));
  s.setNoDelay(true);
  s.once('secureConnect', () => {
    send(s, { t: 'hello', role: 'slave' });
    process.send?.({ ready: true });
  });
  lines(s, (m) => {
    if (m.t !== 'assign') return;
    send(s, { t: 'accepted', id: m.id! });
    // After the answer is written, as the slave does (attempt-task.ts).
    setImmediate(() => {
      const c = spawn('true', [], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      c.stdout.resume();
      c.stderr.resume();
      c.once('close', () => send(s, { t: 'ended', id: m.id! }));
    });
  });
}

function message<T>(c: ChildProcess, pick: (m: unknown) => T | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: unknown) => {
      const v = pick(m);
      if (v === undefined) return;
      c.off('message', onMsg);
      resolve(v);
    };
    c.on('message', onMsg);
    c.once('exit', (code) => reject(new Error(`latency-floor child exited (${String(code)})`)));
  });
}

/**
 * Runs `warmup` then `count` jobs one at a time; returns the master's figures (ms): exact
 * (sub-millisecond clock) and whole-millisecond (Date.now() semantics, as Builder's store).
 */
export async function latencyFloor(count: number, warmup = 20, gapMs = 0): Promise<{ exact: number[]; ms: number[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'builder-latency-floor-'));
  const self = fileURLToPath(import.meta.url);
  const kids: ChildProcess[] = [];
  try {
    const caDir = join(dir, 'ca');
    await initCa({ dir: caDir });
    const ca = await loadCa(caDir);
    const reg = await PkiRegistry.open(ca.paths.registry);
    try {
      await issueIdentity(ca, reg, { name: 'floor', role: 'client', outDir: join(dir, 'id') });
    } finally {
      await reg.close();
    }
    const m = fork(self, ['master', caDir, join(dir, 'floor.db')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    kids.push(m);
    const port = await message(m, (x) => (x as { port?: number }).port);
    const s = fork(self, ['slave', join(dir, 'id'), String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    kids.push(s);
    await message(s, (x) => ((x as { ready?: boolean }).ready === true ? true : undefined));
    const c = tls.connect(mutualTlsClientOptions(await loadIdentity(join(dir, 'id')), '127.0.0.1', port));
    c.setNoDelay(true);
    await new Promise<void>((resolve, reject) => c.once('secureConnect', resolve).once('error', reject));
    send(c, { t: 'hello', role: 'client' });
    let wake: ((m: Msg) => void) | undefined;
    lines(c, (msg) => wake?.(msg));
    const next = (t: string) => new Promise<Msg>((resolve) => (wake = (msg) => msg.t === t && resolve(msg)));
    for (let i = 0; i < warmup + count; i++) {
      if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
      const submitted = next('submitted');
      send(c, { t: 'submit' });
      const { id } = await submitted;
      await new Promise<void>((resolve) => (wake = (msg) => msg.t === 'ended' && msg.id === id && resolve()));
    }
    c.destroy();
    m.send({ report: true });
    const r = await message(m, (x) => ('exact' in (x as object) ? (x as { exact: number[]; ms: number[] }) : undefined));
    return { exact: r.exact.slice(warmup), ms: r.ms.slice(warmup) };
  } finally {
    for (const k of kids) if (k.exitCode === null && k.pid !== undefined) process.kill(k.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

const [role, a1, a2] = process.argv.slice(2);
if (role === 'master' || role === 'slave') {
  // A child ends with its driver, whatever becomes of it.
  process.once('disconnect', () => process.exit(0));
  if (role === 'master') await master(a1!, a2!);
  else await slave(a1!, Number(a2));
}
else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const n = Number(role ?? 300);
  const r = await latencyFloor(n, 20, Number(a1 ?? 0));
  const q = (v: number[], p: number) => [...v].sort((x, y) => x - y)[Math.min(v.length - 1, Math.floor(v.length * p))]!;
  process.stdout.write(
    JSON.stringify({ n, exact: { p50: q(r.exact, 0.5), p99: q(r.exact, 0.99), max: q(r.exact, 1) }, ms: { p50: q(r.ms, 0.5), p99: q(r.ms, 0.99), max: q(r.ms, 1) } }) + '\n',
  );
}
