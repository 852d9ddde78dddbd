import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkPublishedTree } from './helpers/consistency.js';
import { debFileName, makeDeb } from './helpers/synth-deb.js';
import { aptClient, buildRpms, closeServer, run, serveDir, writeBatch, type BatchFile } from './helpers/tools.js';

const BIN = resolve('bin/repo-builder.js');

/** Starts the real repo-builder bin; its stderr (pino JSON lines) is kept. */
function startBin(args: string[], env: NodeJS.ProcessEnv = process.env): { proc: ChildProcess; log: string[] } {
  const proc = spawn(process.execPath, [BIN, 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const log: string[] = [];
  let buf = '';
  proc.stderr.on('data', (c: Buffer) => {
    buf += c.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    log.push(...lines);
  });
  proc.stdout.resume();
  return { proc, log };
}

async function waitFor(cond: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

describe('repo-builder as a process', function () {
  this.timeout(120_000);
  let dir: string;
  let procs: ChildProcess[] = [];
  let server: Server | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rb-proc-'));
  });
  afterEach(async () => {
    for (const p of procs) {
      if (p.exitCode === null && p.signalCode === null && p.pid !== undefined) {
        process.kill(p.pid, 'SIGKILL');
        await exited(p);
      }
    }
    procs = [];
    await closeServer(server);
    server = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  describe('when 500 packages are published while a client polls the tree', () => {
    it('never shows an index that names a missing file, and ends with the newest of each', async () => {
      const incoming = join(dir, 'incoming');
      const repo = join(dir, 'repo');
      // 250 names x 2 versions: the second versions replace the first, so files are removed
      // (after a short grace period) while the poller reads.
      const debs: BatchFile[] = [];
      for (const v of ['1.0-1', '1.1-1']) {
        for (let k = 0; k < 250; k++) {
          const d = { name: `pkg${String(k).padStart(3, '0')}`, version: v, arch: k % 10 === 0 ? 'all' : 'amd64' };
          debs.push({ name: debFileName(d), data: await makeDeb(d) });
        }
      }
      const rpms = [...(await buildRpms(join(dir, 'rpmbuild'), Array.from({ length: 40 }, (_, k) => ({ name: `rpkg${k}`, version: '1.0', release: '1' }))))];
      const rpms2 = [...(await buildRpms(join(dir, 'rpmbuild2'), Array.from({ length: 40 }, (_, k) => ({ name: `rpkg${k}`, version: '1.1', release: '1' }))))];
      const allRpms = [...rpms, ...rpms2].map(([name, data]) => ({ name, data }));

      // Grace 1.5 s: far above one poll (40 ms pauses), even on a loaded machine.
      const { proc, log } = startBin(['--incoming', incoming, '--repo', repo, '--grace-ms', '1500', '--debounce-ms', '20', '--no-fsync', '--log-level', 'info']);
      procs.push(proc);
      await waitFor(() => log.some((l) => l.includes('"watching"')), 20_000, 'start');

      let polls = 0;
      let writing = true;
      const problems: string[] = [];
      const poller = (async () => {
        while (writing) {
          // A slow client: 40 ms between reading a top file and what it names.
          const r = await checkPublishedTree(repo, 40);
          problems.push(...r.problems.filter((p) => !/no Release|no repomd/.test(p)));
          if (r.debPackages.size > 0) polls++;
          else await sleep(5);
        }
      })();
      for (let b = 0; b < 50; b++) {
        const files = [...debs.slice(b * 10, b * 10 + 10), ...allRpms.slice(b * 2, b * 2 + 2)];
        await writeBatch(incoming, `job-${b}`, 'stable', files);
        await sleep(40);
      }
      await waitFor(async () => (await readdir(incoming)).length === 0, 60_000, 'incoming to drain');
      await sleep(1800); // let a grace period pass with the poller still reading
      writing = false;
      await poller;
      assert.deepEqual(problems.slice(0, 5), []);
      const publishes = log.filter((l) => l.includes('"publish done"')).length;
      assert.ok(publishes >= 5, `${publishes} publishes happened while the client read`);
      assert.ok(polls >= 5, `the poller read the tree ${polls} times`);

      const final = await checkPublishedTree(repo);
      assert.deepEqual(final.problems, []);
      const amd64 = final.debPackages.get('stable/main/binary-amd64')!;
      assert.equal(amd64.length, 250);
      assert.ok(amd64.every((p) => p.endsWith('=1.1-1')));
      const rpmNames = final.rpmPackages.get('stable')!;
      assert.equal(rpmNames.length, 40);
      assert.ok(rpmNames.every((p) => p.endsWith('=0:1.1:1')));
      // Old versions are gone from the pool after the grace period.
      const pool = await readdir(join(repo, 'deb/pool/stable/p/pkg000'));
      assert.deepEqual(pool, ['pkg000_1.1-1_all.deb']);
    });
  });

  describe('when the repo-builder is killed with SIGKILL mid-publish and restarted', () => {
    it('leaves a consistent repository and publishes everything after the restart', async () => {
      const incoming = join(dir, 'incoming');
      const repo = join(dir, 'repo');
      const names = 600;
      let shared = 0;
      const addBatches = async (round: number): Promise<void> => {
        for (let b = 0; b < 2; b++) {
          const files: BatchFile[] = [];
          for (let k = 0; k < names / 12; k++) {
            const d = { name: `kpkg${round}x${b}x${k}`, version: `${round}.0-1`, arch: 'amd64' };
            files.push({ name: debFileName(d), data: await makeDeb(d) });
          }
          // Every batch also updates one shared package, so removals happen on each publish.
          const s = { name: 'shared', version: `${++shared}.0-1`, arch: 'amd64' };
          files.push({ name: debFileName(s), data: await makeDeb(s) });
          await writeBatch(incoming, `kbatch-${round}-${b}`, 'stable', files);
        }
      };
      const args = ['--incoming', incoming, '--repo', repo, '--grace-ms', '0', '--debounce-ms', '0', '--log-level', 'info'];
      // Kills at known points of a publish (the process SIGKILLs itself there), then at times
      // spread over a publish of these batches (a few hundred ms here).
      const failpoints = ['after-place', 'after-top', 'after-commit', 'mid-remove'];
      const pendingAtKill: number[] = [];
      for (const [round, point] of [...failpoints, 300, 600].entries()) {
        await addBatches(round);
        const env = typeof point === 'string' ? { ...process.env, REPO_BUILDER_FAILPOINT: point } : process.env;
        const { proc, log } = startBin(args, env);
        procs.push(proc);
        if (typeof point === 'string') {
          await exited(proc);
          assert.equal(proc.signalCode, 'SIGKILL', `${point}: ${log.join('\n')}`);
        } else {
          await waitFor(() => log.some((l) => l.includes('"watching"')) || proc.exitCode !== null, 20_000, 'start');
          await sleep(point);
          process.kill(proc.pid!, 'SIGKILL');
          await exited(proc);
        }
        pendingAtKill.push((await readdir(incoming)).length);
        const mid = await checkPublishedTree(repo);
        assert.deepEqual(mid.problems.filter((p) => !/no Release|no repomd/.test(p)), [], `after SIGKILL at ${point}`);
      }
      assert.ok(pendingAtKill.slice(0, failpoints.length).every((n) => n > 0), `each failpoint kill left work in progress (${pendingAtKill.join(',')})`);
      // More work arrives while it is down; the restart picks it up.
      const late = { name: 'shared', version: '99.0-1', arch: 'amd64' };
      await writeBatch(incoming, 'late', 'stable', [{ name: debFileName(late), data: await makeDeb(late) }]);
      const once = await run(process.execPath, [BIN, 'run', ...args, '--once', '--json']);
      assert.equal(once.code, 0, once.stderr);
      assert.deepEqual(await readdir(incoming), []);
      const final = await checkPublishedTree(repo);
      assert.deepEqual(final.problems, []);
      const pkgs = final.debPackages.get('stable/main/binary-amd64')!;
      assert.equal(pkgs.length, names + 1); // 6 rounds x 2 batches x 50, and shared
      assert.ok(pkgs.includes('shared=99.0-1'));

      const srv = await serveDir(repo);
      server = srv.server;
      const apt = await aptClient(join(dir, 'client'), `deb [trusted=yes] ${srv.url}/deb stable main`);
      const up = await apt(['update']);
      assert.equal(up.code, 0, up.stderr);
      assert.doesNotMatch(`${up.stdout}${up.stderr}`, /^(W|E):/m);
      assert.match((await apt(['policy', 'shared'], 'apt-cache')).stdout, /Candidate: 99\.0-1/);
    });
  });

  describe('when a second repo-builder starts on the same repository', () => {
    it('refuses to run while the first is alive', async () => {
      const args = ['--incoming', join(dir, 'incoming'), '--repo', join(dir, 'repo')];
      const { proc, log } = startBin(args);
      procs.push(proc);
      await waitFor(() => log.some((l) => l.includes('"watching"')), 20_000, 'start');
      const second = await run(process.execPath, [BIN, 'run', ...args, '--once']);
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, /another repo-builder \(pid \d+\) holds/);
    });
  });
});
