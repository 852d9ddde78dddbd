import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { ErrorCodes, RpcCallError } from '../../../protocol/index.js';
import { findCgroupPlace, sweepCgroups } from '../../../slave/executor/index.js';
import { RunningBin, runBin } from '../../helpers/procs.js';
import { alive, attemptDirs, killGroups, readSlotRecord, slaveTestBed, until } from './helpers/setup.js';
import type { TestMaster } from './helpers/test-master.js';

/** One clear line (plus an optional hint line), no stack trace, non-zero exit. */
function assertCleanError(r: { code: number | null; stderr: string }, re: RegExp): void {
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'stack trace printed');
  assert.ok(r.stderr.trim().split('\n').length <= 2, r.stderr);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

describe('slave run (a real child process)', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-run-');
  let root: string;
  let dir: string;
  let master: TestMaster;
  let n: number;
  const procs: RunningBin[] = [];
  const groups: number[] = [];

  beforeEach(function () {
    ({ root, dir, master, n } = bed);
  });
  afterEach(async function () {
    await Promise.all(procs.splice(0).map((p) => p.stop('SIGKILL')));
    killGroups(groups);
    // A slave SIGKILLed mid-job leaves its job cgroups; its next start would sweep them, but there is none.
    const place = findCgroupPlace(resolve(dir, 'work'));
    if (!('why' in place)) await sweepCgroups(place);
    await master.close();
  });

  function slave(extra: string[] = [], address = master.address): RunningBin {
    const p = new RunningBin('slave', ['run', '--dir', dir, '--master', address, '--channels', 'main', '--arch', 'x86_64,noarch', '--capacity', '2', '--kill-grace', '500ms', ...extra], {
      BUILDER_LOG_LEVEL: 'info',
    });
    procs.push(p);
    return p;
  }

  describe('when it gets SIGTERM', function () {
    it('tells the master it drains, refuses new work, lets the running job finish, delivers it, and exits 0', async function () {
      await master.listen(0);
      const s = slave(['--drain-timeout', '20s']);
      await s.waitFor(/"msg":"subscribed"/);
      await master.assign({ jobId: 1, command: { kind: 'script', text: 'echo working; sleep 1; echo art > "$BUILDER_OUTPUT/a.txt"; echo done' } });
      await until(() => master.text(1).includes('working'), 'the job to start');
      process.kill(s.pid, 'SIGTERM');
      await until(() => master.drainingCalls.length > 0, 'slave.draining');
      assert.deepEqual(master.drainingCalls, [true]);
      await assert.rejects(master.assign({ jobId: 2, command: { kind: 'script', text: 'true' } }), (e: unknown) => e instanceof RpcCallError && e.rpcCode === ErrorCodes.UNAVAILABLE && /draining/.test(e.message));
      // One SIGTERM only: a second one means "stop now".
      await until(() => s.child.exitCode !== null || s.child.signalCode !== null, 'the slave to exit');
      assert.equal(s.child.exitCode, 0, s.out.slice(-3000));
      const f = master.get(1).finish;
      assert.ok(f, 'finish delivered before exit');
      assert.equal(f.state, 'succeeded');
      assert.deepEqual(f.artifacts.map((a) => a.path), ['a.txt']);
      assert.equal(master.text(1), 'working\ndone\n');
      const rec = await readSlotRecord(dir);
      assert.deepEqual(
        rec.lines.map((l) => l.event),
        ['open', 'start', 'end', 'close'],
      );
      assert.ok(rec.maxUsed <= 2);
      assert.deepEqual(await attemptDirs(dir), []);
    });

    it('kills a job still running at the drain deadline (its whole group), reports it cancelled so the master requeues it, and exits 0', async function () {
      await master.listen(0);
      const s = slave(['--drain-timeout', '1s']);
      await s.waitFor(/"msg":"subscribed"/);
      const gc = join(root, `gc-${n}`);
      await master.assign({ jobId: 3, command: { kind: 'script', text: `(trap '' TERM; sleep 60) & echo $! > ${gc}; echo started; echo x > "$BUILDER_OUTPUT/partial"; wait` } });
      await until(() => existsSync(gc) && master.text(3).includes('started'), 'the job to start');
      const gpid = Number((await readFile(gc, 'utf8')).trim());
      groups.push(gpid);
      const t0 = Date.now();
      const r = await s.stop('SIGTERM', 20_000);
      assert.deepEqual(r, { code: 0, signal: null }, s.out.slice(-3000));
      assert.ok(Date.now() - t0 < 10_000, 'stopped within the drain timeout plus the kill grace');
      assert.equal(await alive(gpid), false);
      const f = master.get(3).finish;
      assert.ok(f);
      assert.equal(f.state, 'cancelled');
      assert.match(f.reason ?? '', /the slave shut down and killed it after the drain timeout of 1000 ms/);
      assert.deepEqual(f.artifacts, []);
      assert.equal(master.get(3).records[master.get(3).records.length - 1]?.kind, 'end');
    });
  });

  describe('when the master is unreachable', function () {
    it('logs each failed attempt, retries with back-off, and subscribes once the master is up', async function () {
      const port = await freePort();
      const s = slave([], `127.0.0.1:${port}`);
      await s.waitFor(/"msg":"cannot reach master"[\s\S]*"msg":"reconnecting"[\s\S]*"msg":"cannot reach master"/);
      await master.listen(port);
      await s.waitFor(/"msg":"subscribed"/, 40_000);
      assert.deepEqual(master.subscribes[0], { channels: ['main'], arches: ['x86_64', 'noarch'], capacity: 2, draining: false, running: [] });
      assert.deepEqual(await s.stop('SIGTERM'), { code: 0, signal: null });
    });

    it('keeps a finished attempt on disk when it stops before delivering it, and delivers it after a restart', async function () {
      await master.listen(0);
      const s = slave(['--deliver-timeout', '1s']);
      await s.waitFor(/"msg":"subscribed"/);
      await master.assign({ jobId: 5, command: { kind: 'script', text: 'echo before; sleep 0.5; echo after; echo out > "$BUILDER_OUTPUT/o.txt"' } });
      await until(() => master.text(5).includes('before'), 'the job to start');
      await master.close();
      await s.waitFor(/"msg":"attempt ended"/);
      assert.deepEqual(await s.stop('SIGTERM'), { code: 0, signal: null });
      assert.match(s.out, /kept on disk for the next start/);
      assert.deepEqual(await attemptDirs(dir), ['5-1']);
      await master.listen();
      const s2 = slave();
      const a = await master.waitFinish(5);
      assert.deepEqual(master.subscribes[master.subscribes.length - 1]!.running, [{ jobId: 5, attempt: 1, slots: 1 }]);
      assert.equal(a.finish!.state, 'succeeded');
      assert.equal(master.text(5), 'before\nafter\n');
      assert.deepEqual(a.finish!.artifacts.map((x) => x.path), ['o.txt']);
      await until(async () => (await attemptDirs(dir)).length === 0, 'the attempt files to go');
      assert.deepEqual(await s2.stop('SIGTERM'), { code: 0, signal: null });
    });

    it('after a SIGKILL, kills the job it left running and does not report it (the master requeues it)', async function () {
      await master.listen(0);
      const s = slave();
      await s.waitFor(/"msg":"subscribed"/);
      const pidFile = join(root, `pid-${n}`);
      await master.assign({ jobId: 6, command: { kind: 'script', text: `echo left > leftover; echo $$ > ${pidFile}; echo go; sleep 60` } });
      await until(() => existsSync(pidFile) && master.text(6).includes('go'), 'the job to start');
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      groups.push(pid);
      await s.stop('SIGKILL');
      // The pid is a line of the attempt's journal.
      const journal = join(dir, 'attempts', '6-1', 'attempt.jsonl');
      await until(async () => existsSync(journal) && (await readFile(journal, 'utf8')).includes(`"pid":${pid}`), 'the pid in the journal');
      assert.ok(await alive(pid), 'the orphaned job still runs');
      const subs = master.subscribes.length;
      const s2 = slave();
      await until(() => master.subscribes.length > subs, 'the new subscribe');
      assert.deepEqual(master.subscribes[master.subscribes.length - 1]!.running, []);
      await until(async () => !(await alive(pid)), 'the leftover job to be killed');
      assert.deepEqual(await attemptDirs(dir), []);
      // The slot work dirs the killed job left are set aside and removed before the slave takes work again.
      assert.deepEqual(await readdir(join(dir, 'work', 'slots')), []);
      assert.deepEqual((await readdir(join(dir, 'work'))).filter((x) => x.startsWith('.trash-')), []);
      assert.deepEqual(await s2.stop('SIGTERM'), { code: 0, signal: null });
    });

    it('after a SIGKILL, also kills what its job started outside its process group (the job cgroups)', async function () {
      const place = findCgroupPlace(resolve(dir, 'work'));
      if ('why' in place) {
        console.log(`      (skipped: ${place.why})`);
        this.skip();
      }
      await master.listen(0);
      const s = slave(['--cgroups', 'on']);
      await s.waitFor(/each job runs in a cgroup of its own/);
      await s.waitFor(/"msg":"subscribed"/);
      const pidFile = join(root, `daemon-${n}`);
      await master.assign({ jobId: 8, command: { kind: 'script', text: `setsid sh -c 'echo $$ > ${pidFile}; exec sleep 60' </dev/null >/dev/null 2>&1 &\necho go; sleep 60` } });
      await until(() => existsSync(pidFile) && master.text(8).includes('go'), 'the job to start');
      const daemon = Number((await readFile(pidFile, 'utf8')).trim());
      groups.push(daemon);
      await s.stop('SIGKILL');
      assert.ok(await alive(daemon), 'the daemon outlived the slave');
      assert.deepEqual(readdirSync(place.parent).filter((x) => x.startsWith(place.prefix)), [`${place.prefix}8-1`]);
      const s2 = slave(['--cgroups', 'on']);
      await s2.waitFor(/killed what was left in the job cgroups of the previous run/);
      await until(async () => !(await alive(daemon)), 'the daemon to be killed');
      assert.deepEqual(readdirSync(place.parent).filter((x) => x.startsWith(place.prefix)), []);
      assert.deepEqual(await s2.stop('SIGTERM'), { code: 0, signal: null });
    });
  });

  describe('when a second slave is started on its directory', function () {
    it('refuses it in one line with the pid of the running one, touching nothing; once that one is SIGKILLed, a new one starts', async function () {
      await master.listen(0);
      const s = slave();
      await s.waitFor(/"msg":"subscribed"/);
      await master.assign({ jobId: 9, command: { kind: 'script', text: 'echo go; sleep 60' } });
      await until(() => master.text(9).includes('go'), 'the job to start');
      const second = await runBin('slave', ['run', '--dir', dir, '--master', master.address, '--channels', 'main']);
      assertCleanError(second, new RegExp(`another slave process \\(pid ${s.pid}\\) runs on ${dir}\nHint: stop it first`));
      // The first still has its attempt files and its job.
      assert.deepEqual(await attemptDirs(dir), ['9-1']);
      assert.equal(master.subscribes.length, 1);
      await s.stop('SIGKILL');
      // The kernel dropped the lock with the process: the next start takes it.
      const s2 = slave();
      await s2.waitFor(/"msg":"subscribed"/);
      assert.deepEqual(await s2.stop('SIGTERM'), { code: 0, signal: null });
    });
  });

  describe('when its flags are wrong', function () {
    it('says so in one line with a hint', async function () {
      const base = ['run', '--dir', dir, '--master', '127.0.0.1:1'];
      assertCleanError(await runBin('slave', [...base, '--channels', 'main', '--capacity', '0']), /invalid --capacity 0: must be an integer from 1 to 4096\nHint: /);
      assertCleanError(await runBin('slave', [...base, '--channels', 'main', '--capacity', 'two']), /invalid --capacity "two"/);
      assertCleanError(await runBin('slave', [...base, '--channels', ',']), /no channels given\nHint: pass --channels main,updates/);
      // The other option errors (names, arch, address) come from compileSlaveRuntimeOptions: see test/unit/slave/runtime.test.ts.
      const missing = await runBin('slave', ['run', '--dir', dir, '--master', '127.0.0.1:1']);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /Missing required flag channels/);
    });
  });
});
