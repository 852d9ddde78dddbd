/**
 * Repository builder benchmark, with its peers in the same run (never a test).
 *
 *   node dist/bench/repo-builder/generate.js --count 10000        # once: synthetic packages
 *   node dist/bench/repo-builder/bench.js [--data /tmp/rb-bench-data] [--work /tmp/rb-bench] [--scanpackages]
 *
 * For each kind (deb, rpm) with the N packages of <data>:
 *   - full publish: `repo-builder run --once` over N packages in 100 batches (fresh repository)
 *   - +1 publish, cold: one more batch, `repo-builder run --once` (a new process)
 *   - +1 publish, daemon: `repo-builder run` watching; time from the listing's rename to the
 *     new top file (Release / repomd.xml) naming the package
 *   - peers: apt-ftparchive packages (no cache; --db cold and warm +1), dpkg-scanpackages
 *     (with --scanpackages: it takes minutes), createrepo_c and createrepo_c --update (+1),
 *     each with and without its sqlite databases
 * Wall time and peak RSS come from /usr/bin/time. Prints a Markdown table.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { debFileName, makeDeb } from '../../test/integration/repo-builder/helpers/synth-deb.js';
import { buildRpms } from '../../test/integration/repo-builder/helpers/tools.js';

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: '/tmp/rb-bench-data' },
    work: { type: 'string', default: '/tmp/rb-bench' },
    scanpackages: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const DATA = values.data;
const WORK = values.work;
const BIN = resolve('bin/repo-builder.js');
const rows: string[] = [];

function timed(label: string, cmd: string, args: string[], opts: { stdout?: string; cwd?: string; note?: (stdout: string) => string } = {}): { s: number; mb: number } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { cwd: opts.cwd, encoding: 'buffer', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${label} failed: ${r.stderr.toString().slice(-800)}`);
  if (opts.stdout !== undefined) execFileSync('sh', ['-c', 'cat > "$0"', opts.stdout], { input: r.stdout });
  const last = r.stderr.toString().trim().split('\n').pop()!;
  const [s, kb] = last.split(' ').map(Number) as [number, number];
  const res = { s, mb: Math.round(kb / 1024) };
  const note = opts.note?.(r.stdout.toString()) ?? '';
  rows.push(`| ${label} | ${res.s.toFixed(2)} | ${res.mb} |${note ? ` ${note}` : ''}`);
  console.error(`${label}: ${res.s.toFixed(2)} s, ${res.mb} MB`);
  return res;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Hard-links files into incoming as batches of `per`, each with its listing (written last). */
async function fileBatches(incoming: string, src: string, files: string[], per: number, prefix: string, channel: string): Promise<void> {
  await mkdir(incoming, { recursive: true });
  for (let b = 0; b * per < files.length; b++) {
    const id = `${prefix}-${b}`;
    await mkdir(join(incoming, id));
    const list = [];
    for (const f of files.slice(b * per, b * per + per)) {
      await link(join(src, f), join(incoming, id, f));
      const data = await readFile(join(src, f));
      list.push({ name: f, size: data.length, sha256: sha256(data) });
    }
    await writeFile(join(incoming, `.${id}.tmp`), JSON.stringify({ version: 1, batch: id, job: id, channel, files: list }));
    await rename(join(incoming, `.${id}.tmp`), join(incoming, `${id}.listing.json`));
  }
}

async function oneBatch(incoming: string, id: string, name: string, data: Buffer, channel: string): Promise<void> {
  await mkdir(join(incoming, id), { recursive: true });
  await writeFile(join(incoming, id, name), data);
  await writeFile(join(incoming, `.${id}.tmp`), JSON.stringify({ version: 1, batch: id, job: id, channel, files: [{ name, size: data.length, sha256: sha256(data) }] }));
  await rename(join(incoming, `.${id}.tmp`), join(incoming, `${id}.listing.json`));
}

/** The in-process publish time and its phases, from `run --once --json`. */
function summaryNote(stdout: string): string {
  const line = stdout.trim().split('\n').pop() ?? '{}';
  const s = JSON.parse(line) as { ms?: number; phases?: Record<string, number> };
  return `publish ${s.ms} ms (${Object.entries(s.phases ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')})`;
}

/** Daemon +1: start `run`, wait until idle, drop one batch, time until `top` names `needle`. */
async function daemonPlusOne(label: string, args: string[], top: string, drop: () => Promise<void>, needle: () => Promise<boolean>): Promise<void> {
  const p = spawn(process.execPath, [BIN, 'run', ...args, '--debounce-ms', '20'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr.on('data', (c: Buffer) => (log += c.toString()));
  try {
    const t0 = Date.now();
    while (!log.includes('"watching"')) {
      if (Date.now() - t0 > 60_000) throw new Error(`daemon did not start: ${log}`);
      await sleep(20);
    }
    await sleep(1500); // let its startup run finish
    const before = (await stat(top)).mtimeMs;
    const doneBefore = log.split('"publish done"').length;
    const t = performance.now();
    await drop();
    for (;;) {
      const st = await stat(top).catch(() => undefined);
      if (st !== undefined && st.mtimeMs !== before && (await needle())) break;
      if (performance.now() - t > 60_000) throw new Error(`no publish: ${log.slice(-2000)}`);
      await sleep(2);
    }
    const ms = performance.now() - t;
    // The top file is renamed before the run ends (state commit, cleanup, log line): wait for it.
    for (let k = 0; k < 200 && log.split('"publish done"').length === doneBefore; k++) await sleep(10);
    const status = await readFile(`/proc/${p.pid}/status`, 'utf8');
    const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const inner = [...log.matchAll(/"ms":(\d+),"phases":(\{[^}]*\})/g)].pop();
    rows.push(`| ${label} | ${(ms / 1000).toFixed(3)} | ${Math.round(hwm / 1024)} (daemon peak since start) |`);
    rows[rows.length - 1] += ` publish ${inner?.[1]} ms ${inner?.[2]} |`;
    console.error(`${label}: ${(ms / 1000).toFixed(3)} s; publish itself ${inner?.[1]} ms ${inner?.[2]}`);
  } finally {
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  }
}

async function benchDeb(): Promise<void> {
  const src = join(DATA, 'debs');
  const files = (await readdir(src)).filter((f) => f.endsWith('.deb')).sort();
  const n = files.length;
  const w = join(WORK, 'deb');
  await rm(w, { recursive: true, force: true });
  const incoming = join(w, 'incoming');
  const repo = join(w, 'repo');
  await fileBatches(incoming, src, files, 100, 'full', 'stable');
  const common = ['--incoming', incoming, '--repo', repo, '--log-level', 'info'];
  timed(`repo-builder deb: full publish, ${n} packages (100 batches)`, process.execPath, [BIN, 'run', ...common, '--once', '--json'], { note: summaryNote });
  const extra = { name: 'bench-new', version: '1.0-1', arch: 'amd64' };
  const extraData = await makeDeb(extra);
  await oneBatch(incoming, 'plus1', debFileName(extra), extraData, 'stable');
  timed('repo-builder deb: +1 publish, new process (--once)', process.execPath, [BIN, 'run', ...common, '--once', '--json'], { note: summaryNote });
  const extra2 = { name: 'bench-new2', version: '1.0-1', arch: 'amd64' };
  const pk = join(repo, 'deb/dists/stable/main/binary-amd64/Packages');
  await daemonPlusOne(
    'repo-builder deb: +1 publish, running daemon (listing to Release)',
    common,
    join(repo, 'deb/dists/stable/Release'),
    () => makeDeb(extra2).then((d) => oneBatch(incoming, 'plus2', debFileName(extra2), d, 'stable')),
    async () => (await readFile(pk, 'utf8').catch(() => '')).includes('Package: bench-new2\n'),
  );

  // Peers over one flat directory holding the same files.
  const flat = join(w, 'flat');
  await mkdir(flat);
  for (const f of files) await link(join(src, f), join(flat, f));
  timed(`apt-ftparchive packages: full, ${n} packages, no cache`, 'apt-ftparchive', ['packages', '.'], { cwd: flat, stdout: join(w, 'Packages.aptftp') });
  const db = join(w, 'aftp.db');
  timed('apt-ftparchive --db packages: full, cold cache', 'apt-ftparchive', ['--db', db, 'packages', '.'], { cwd: flat, stdout: join(w, 'Packages.aptftp') });
  await writeFile(join(flat, debFileName(extra)), extraData);
  timed('apt-ftparchive --db packages: +1, warm cache', 'apt-ftparchive', ['--db', db, 'packages', '.'], { cwd: flat, stdout: join(w, 'Packages.aptftp') });
  if (values.scanpackages) timed(`dpkg-scanpackages -m: full, ${n} packages`, 'dpkg-scanpackages', ['-m', '.'], { cwd: flat, stdout: join(w, 'Packages.dsp') });
}

async function benchRpm(): Promise<void> {
  const src = join(DATA, 'rpms');
  const files = (await readdir(src)).filter((f) => f.endsWith('.rpm')).sort();
  const n = files.length;
  const w = join(WORK, 'rpm');
  await rm(w, { recursive: true, force: true });
  const incoming = join(w, 'incoming');
  const repo = join(w, 'repo');
  await fileBatches(incoming, src, files, 100, 'full', 'el');
  const common = ['--incoming', incoming, '--repo', repo, '--log-level', 'info'];
  timed(`repo-builder rpm: full publish, ${n} packages (100 batches)`, process.execPath, [BIN, 'run', ...common, '--once', '--json'], { note: summaryNote });
  const extraRpms = await buildRpms(join(w, 'extra'), [
    { name: 'bench-new', version: '1.0', release: '1' },
    { name: 'bench-new2', version: '1.0', release: '1' },
  ]);
  const e1 = 'bench-new-1.0-1.x86_64.rpm';
  const e2 = 'bench-new2-1.0-1.x86_64.rpm';
  await oneBatch(incoming, 'plus1', e1, extraRpms.get(e1)!, 'el');
  timed('repo-builder rpm: +1 publish, new process (--once)', process.execPath, [BIN, 'run', ...common, '--once', '--json'], { note: summaryNote });
  const repomd = join(repo, 'rpm/el/repodata/repomd.xml');
  const before = await readFile(repomd, 'utf8');
  await daemonPlusOne(
    'repo-builder rpm: +1 publish, running daemon (listing to repomd.xml)',
    common,
    repomd,
    () => oneBatch(incoming, 'plus2', e2, extraRpms.get(e2)!, 'el'),
    async () => (await readFile(repomd, 'utf8').catch(() => before)) !== before,
  );

  for (const [label, extraArgs] of [
    ['createrepo_c --no-database', ['--no-database']],
    ['createrepo_c (with sqlite, its default)', []],
  ] as const) {
    const flat = join(w, `flat${extraArgs.length}`);
    await mkdir(flat);
    for (const f of files) await link(join(src, f), join(flat, f));
    timed(`${label}: full, ${n} packages`, 'createrepo_c', ['-q', ...extraArgs, flat]);
    await writeFile(join(flat, e1), extraRpms.get(e1)!);
    timed(`${label} --update: +1`, 'createrepo_c', ['-q', '--update', ...extraArgs, flat]);
  }
}

rows.push('| what | wall s | peak RSS MB | notes |', '|---|---|---|---|');
if (values.only !== 'rpm') await benchDeb();
if (values.only !== 'deb') await benchRpm();
console.log(rows.join('\n'));
