import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { isBuilderError } from '../../../protocol/errors.js';
import { compileExecutorOptions, runAttempt, type AttemptHandle, type AttemptSpec, type CompiledExecutorOptions } from '../../../slave/executor/index.js';
import { LogSpool } from '../../../slave/spool/index.js';
import { isAlive, MemorySink, ProcessReaper, readPid, waitUntil } from './helpers.js';

const execFileP = promisify(execFile);

/** A uid the user database has no entry for (getent exits 2 for it). */
async function namelessUid(): Promise<number> {
  for (const uid of [1_999_999_001, 1_999_999_002, 1_999_999_003]) {
    try {
      await execFileP('getent', ['passwd', String(uid)]);
    } catch (e) {
      if ((e as { code?: unknown }).code === 2) return uid;
      throw e;
    }
  }
  throw new Error('every candidate uid has a passwd entry');
}

// Every case runs with both ways of starting a job: the native spawner (vfork) and child_process.
for (const spawner of ['native', 'node'] as const) describe(`slave/executor runAttempt (real processes, ${spawner} spawner)`, function () {
  this.timeout(30_000);
  let root: string;
  let o: CompiledExecutorOptions;
  const reaper = new ProcessReaper();
  const handles: AttemptHandle[] = [];

  function start(spec: Partial<AttemptSpec> & ({ script: string } | { argv: string[] }), sink = new MemorySink()): { h: AttemptHandle; sink: MemorySink } {
    const h = runAttempt({ jobId: 'j1', attempt: 1, name: 'hello', channel: 'stable', arch: 'x86_64', ...spec }, sink, o);
    handles.push(h);
    // The leader's pid is known right after the spawn; register its group for afterEach.
    void waitUntil(() => h.pid !== undefined || handles.length === 0).then(() => reaper.addGroup(h.pid));
    return { h, sink };
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-exec-'));
    o = compileExecutorOptions({ dataDir: root, spawner, killGraceMs: 300, pipeCloseTimeoutMs: 1000, flushIntervalMs: 20 });
  });
  afterEach(async () => {
    for (const h of handles) reaper.addGroup(h.pid);
    handles.splice(0);
    await reaper.reap();
    await rm(root, { recursive: true, force: true });
  });

  describe('when a job runs', () => {
    it('gets a fresh work dir, cwd build/, a clean env with the BUILDER_* variables, and its own process group', async () => {
      process.env.SLAVE_SECRET_FOR_TEST = 'must-not-leak';
      try {
        const { h, sink } = start({
          jobId: 'job42',
          attempt: 3,
          env: { FOO: 'bar baz' },
          script: 'echo "cwd=$(pwd)"; env | sort; echo "pgid=$(ps -o pgid= $$ | tr -d " ")"; echo "pid=$$"',
        });
        const r = await h.result;
        assert.equal(r.outcome, 'succeeded');
        const out = sink.text('stdout');
        // The work dir is the slot's (slot 0 when runAttempt is called without one).
        const wd = join(root, 'work', 'slots', '0');
        assert.equal(r.workDir, wd);
        for (const line of [
          `cwd=${wd}/build`,
          'BUILDER_JOB_ID=job42',
          'BUILDER_JOB_NAME=hello',
          'BUILDER_CHANNEL=stable',
          'BUILDER_ARCH=x86_64',
          'BUILDER_ATTEMPT=3',
          `BUILDER_WORKDIR=${wd}`,
          `BUILDER_INPUT=${wd}/input`,
          `BUILDER_OUTPUT=${wd}/output`,
          `HOME=${join(wd, 'home')}`,
          `TMPDIR=${wd}/tmp`,
          'LANG=C.UTF-8',
          'FOO=bar baz',
        ]) {
          assert.ok(out.split('\n').includes(line), `missing ${line} in\n${out}`);
        }
        assert.ok(!out.includes('SLAVE_SECRET_FOR_TEST'), 'the slave environment leaks into the job');
        const pid = /pid=(\d+)/.exec(out)?.[1];
        const pgid = /pgid=(\d+)/.exec(out)?.[1];
        assert.equal(pgid, pid, 'the job leads its own process group');
        assert.equal(Number(pid), r.pid);
      } finally {
        delete process.env.SLAVE_SECRET_FOR_TEST;
      }
    });

    it('gives the job USER and LOGNAME of the slave\'s own user when there is no runAs', async () => {
      const { h, sink } = start({ script: 'id -un; echo "$USER"; echo "$LOGNAME"' });
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded', sink.text());
      const me = userInfo().username;
      assert.equal(sink.text('stdout'), `${me}\n${me}\n${me}\n`);
    });

    it('refuses a spool whose records are smaller than the executor chunks', async () => {
      const spool = await LogSpool.open(join(root, 'spool', 'x-1'), { maxBytes: 4 * 1024 * 1024, segmentBytes: 1024 * 1024, maxRecordBytes: 64 * 1024 });
      try {
        assert.throws(() => runAttempt({ jobId: 'x', attempt: 1, name: 'n', channel: 'c', arch: 'a', script: 'true' }, spool, o), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
      } finally {
        await spool.close();
      }
    });

    it('refuses a job env that sets a BUILDER_* variable, with a clear error', () => {
      assert.throws(
        () => runAttempt({ jobId: 'j', attempt: 1, name: 'n', channel: 'c', arch: 'a', script: 'true', env: { BUILDER_OUTPUT: '/etc' } }, new MemorySink(), o),
        (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT') && /BUILDER_OUTPUT/.test(e.message),
      );
      assert.throws(
        () => runAttempt({ jobId: '../x', attempt: 1, name: 'n', channel: 'c', arch: 'a', script: 'true' }, new MemorySink(), o),
        (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'),
      );
    });

    it('keeps stdout and stderr apart and their interleaving in seq order', async () => {
      const wd = join(root, 'work', 'slots', '0');
      // Each step waits until the slave has seen the previous one, so the order is deterministic.
      const script = [
        'w() { while [ ! -e "$BUILDER_WORKDIR/go$1" ]; do sleep 0.01; done; }',
        'echo out1', 'w 1', 'echo err1 >&2', 'w 2', 'echo out2', 'w 3', 'echo err2 >&2', 'w 4', 'echo out3',
      ].join('\n');
      const { h, sink } = start({ script });
      const steps = ['out1', 'err1', 'out2', 'err2'];
      for (let i = 0; i < steps.length; i++) {
        await sink.waitFor(steps[i]!);
        await writeFile(join(wd, `go${i + 1}`), '');
      }
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded');
      assert.equal(sink.text('stdout'), 'out1\nout2\nout3\n');
      assert.equal(sink.text('stderr'), 'err1\nerr2\n');
      const seqs = sink.chunks.map((c) => c.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
      assert.equal(new Set(seqs).size, seqs.length, 'seqs are unique across streams');
      const bySeq = sink.chunks.map((c) => `${c.stream}:${c.data.toString().trim()}`);
      assert.deepEqual(bySeq, ['stdout:out1', 'stderr:err1', 'stdout:out2', 'stderr:err2', 'stdout:out3']);
      assert.equal(r.lastSeq, 5);
    });
  });

  describe('when jobs run as their own user (runAs)', () => {
    it('runs the job as that user, which cannot change its inputs or script, and refuses files it does not own', async function () {
      if (process.getuid?.() !== 0) this.skip();
      const { chmod } = await import('node:fs/promises');
      await chmod(root, 0o711);
      // maxInlineScriptBytes 0: the script is a file, which the job must not be able to change.
      const ro = compileExecutorOptions({ dataDir: root, spawner, runAs: { uid: 65534, gid: 65534 }, killGraceMs: 300, maxInlineScriptBytes: 0 });
      const sink = new MemorySink();
      const h = runAttempt(
        {
          jobId: 'ru',
          attempt: 1,
          name: 'n',
          channel: 'c',
          arch: 'a',
          fetchInputs: async (dir) => {
            await writeFile(join(dir, 'in.txt'), 'input');
            // Stands for a hard link to one of the slave's files: owned by root, placed in the output.
            await writeFile(join(dir, '..', 'output', 'rootfile'), 'secret');
          },
          script: [
            'id -u',
            'cat "$BUILDER_INPUT/in.txt"; echo',
            '(echo changed > "$BUILDER_INPUT/in.txt") 2>/dev/null && echo WROTE-INPUT',
            '(echo changed >> "$BUILDER_WORKDIR/script") 2>/dev/null && echo WROTE-SCRIPT',
            'echo built > "$BUILDER_OUTPUT/made.img"',
            'touch "$HOME/home-ok" && echo home-ok',
          ].join('\n'),
        },
        sink,
        ro,
      );
      handles.push(h);
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded', sink.text());
      assert.equal(sink.text('stdout'), '65534\ninput\nhome-ok\n');
      assert.deepEqual(r.artifacts?.artifacts.map((a) => a.path), ['made.img']);
      assert.deepEqual(r.artifacts?.refused.map((x) => [x.path, x.reason]), [['rootfile', 'foreign-owner']]);
    });

    it('gives the job USER and LOGNAME of the user it runs as, the name `id -un` gives inside it', async function () {
      if (process.getuid?.() !== 0) this.skip();
      const { chmod } = await import('node:fs/promises');
      await chmod(root, 0o711);
      const ro = compileExecutorOptions({ dataDir: root, spawner, runAs: { uid: 65534, gid: 65534 }, killGraceMs: 300 });
      const sink = new MemorySink();
      const h = runAttempt({ jobId: 'ru', attempt: 1, name: 'n', channel: 'c', arch: 'a', script: 'id -u; id -un; echo "$USER"; echo "$LOGNAME"' }, sink, ro);
      handles.push(h);
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded', sink.text());
      const [uid, name, user, logname] = sink.text('stdout').split('\n');
      assert.equal(uid, '65534');
      assert.ok(name !== undefined && name !== '' && name !== userInfo().username, `id -un gave ${String(name)}`);
      assert.deepEqual([user, logname], [name, name], 'USER and LOGNAME are the job user\'s name, not the slave\'s');
    });

    it('leaves USER and LOGNAME unset when the uid has no name (rather than the slave\'s)', async function () {
      if (process.getuid?.() !== 0) this.skip();
      const uid = await namelessUid();
      const { chmod } = await import('node:fs/promises');
      await chmod(root, 0o711);
      const ro = compileExecutorOptions({ dataDir: root, spawner, runAs: { uid, gid: uid }, killGraceMs: 300 });
      const sink = new MemorySink();
      const script = 'id -u; id -un >/dev/null 2>&1 || echo NO-NAME; echo "USER=${USER-unset} LOGNAME=${LOGNAME-unset}"';
      const h = runAttempt({ jobId: 'rn', attempt: 1, name: 'n', channel: 'c', arch: 'a', script }, sink, ro);
      handles.push(h);
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded', sink.text());
      assert.equal(sink.text('stdout'), `${uid}\nNO-NAME\nUSER=unset LOGNAME=unset\n`);
    });

    it('refuses runAs root', () => {
      assert.throws(() => compileExecutorOptions({ dataDir: root, spawner, runAs: { uid: 0, gid: 0 } }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    });
  });

  describe('when the log sink is slower than the job', () => {
    it('pauses the pipes instead of buffering: one append at a time, each about one batch, nothing lost', async () => {
      let outstanding = 0;
      let maxOutstanding = 0;
      let maxBatch = 0;
      let total = 0;
      const slow = {
        async append(chunks: readonly { data: Buffer }[]): Promise<void> {
          outstanding++;
          maxOutstanding = Math.max(maxOutstanding, outstanding);
          const n = chunks.reduce((s, c) => s + c.data.length, 0);
          maxBatch = Math.max(maxBatch, n);
          total += n;
          await new Promise((r) => setTimeout(r, 2));
          outstanding--;
        },
      };
      const opts = compileExecutorOptions({ dataDir: root, spawner, batchBytes: 64 * 1024, maxChunkBytes: 64 * 1024, flushIntervalMs: 20 });
      const h = runAttempt({ jobId: 'slow', attempt: 1, name: 'n', channel: 'c', arch: 'a', script: 'head -c 8388608 /dev/zero' }, slow, opts);
      handles.push(h);
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded');
      assert.equal(total, 8 * 1024 * 1024);
      assert.equal(maxOutstanding, 1);
      // A batch is cut at batchBytes; the pipe read that crosses it rides along, and Node delivers
      // the few reads it already holds after pause() (seen: up to ~280 KiB under load). Without
      // backpressure the batches grow with the sink's delay (measured: 1.2 MiB here).
      assert.ok(maxBatch <= 512 * 1024, `a batch of ${maxBatch} bytes`);
    });
  });

  describe('when a job must be stopped', () => {
    it('on timeout SIGTERMs then SIGKILLs the whole group, including a grandchild that ignores SIGTERM', async () => {
      const wd = join(root, 'work', 'slots', '0');
      const script = [
        `sh -c 'trap "" TERM; echo $$ > "$BUILDER_WORKDIR/gc.pid"; while :; do sleep 1; done' &`,
        'while [ ! -s "$BUILDER_WORKDIR/gc.pid" ]; do sleep 0.01; done',
        'echo ready',
        'sleep 1000',
      ].join('\n');
      const { h, sink } = start({ script, timeoutMs: 3000 });
      await Promise.race([sink.waitFor('ready'), h.result]);
      const gc = await readPid(join(wd, 'gc.pid'));
      reaper.addPid(gc);
      const r = await h.result;
      assert.equal(r.outcome, 'timed_out');
      assert.equal(r.timedOut, true);
      assert.equal(r.signal, 'SIGTERM', 'the leader died of the SIGTERM');
      assert.equal(await isAlive(gc), false, 'the grandchild that ignored SIGTERM is gone');
    });

    it('ends when the leader exits even if a grandchild that ignores SIGTERM still holds the pipes, and kills it', async () => {
      const wd = join(root, 'work', 'slots', '0');
      // The pid goes to the output: the work dir is emptied by the time the result is ready, the output kept.
      const script = [`sh -c 'trap "" TERM; echo $$ > "$BUILDER_OUTPUT/gc.pid"; while :; do sleep 1; done' &`, 'while [ ! -s "$BUILDER_OUTPUT/gc.pid" ]; do sleep 0.01; done', 'exit 3'].join('\n');
      const { h } = start({ script });
      const r = await h.result;
      assert.equal(r.workDir, wd);
      const gc = await readPid(join(r.keptDir!, 'gc.pid'));
      reaper.addPid(gc);
      assert.equal(r.exitCode, 3);
      assert.equal(r.outcome, 'failed');
      assert.equal(r.leftoversKilled, true);
      assert.equal(await isAlive(gc), false);
    });

    it('kills a leftover that ignores SIGTERM and let go of the pipes before the attempt ends (SIGKILL after the grace)', async () => {
      const script = [
        `sh -c 'trap "" TERM; echo $$ > "$BUILDER_OUTPUT/gc.pid"; exec >/dev/null 2>&1; while :; do sleep 1; done' &`,
        'while [ ! -s "$BUILDER_OUTPUT/gc.pid" ]; do sleep 0.01; done',
        'exit 3',
      ].join('\n');
      const { h } = start({ script });
      const r = await h.result;
      const gc = await readPid(join(r.keptDir!, 'gc.pid'));
      reaper.addPid(gc);
      assert.equal(r.exitCode, 3);
      assert.equal(r.leftoversKilled, true);
      // Before the fix the SIGKILL timer was dropped when the pipes closed: this process lived on.
      assert.equal(await isAlive(gc), false, 'the leftover is dead when the result is ready');
    });

    it('keeps the outcome of a job whose leader has exited when a cancel comes while its leftovers are being killed', async () => {
      o = compileExecutorOptions({ ...o, killGraceMs: 2_000 });
      const script = [`sh -c 'trap "" TERM; echo $$ > "$BUILDER_OUTPUT/gc.pid"; exec >/dev/null 2>&1; while :; do sleep 1; done' &`, 'while [ ! -s "$BUILDER_OUTPUT/gc.pid" ]; do sleep 0.01; done', 'echo bye'].join('\n');
      const { h, sink } = start({ script });
      await sink.waitFor('bye');
      await waitUntil(async () => h.pid !== undefined && !(await isAlive(h.pid)));
      // The leader is gone; the attempt waits for the leftover (2 s of grace): cancel now.
      await new Promise((r) => setTimeout(r, 100));
      h.cancel();
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded', 'the job had ended with exit 0 before the cancel');
      assert.equal(r.cancelled, false);
      assert.equal(r.leftoversKilled, true);
    });

    it('without a cgroup, does not wait forever for a process that left the group (setsid) and still holds the pipes', async () => {
      o = compileExecutorOptions({ ...o, cgroups: 'off' });
      const wd = join(root, 'work', 'slots', '0');
      const { h } = start({ script: 'setsid sh -c \'echo $$ > "$BUILDER_OUTPUT/escaped.pid"; exec sleep 1000\' &\nwhile [ ! -s "$BUILDER_OUTPUT/escaped.pid" ]; do sleep 0.01; done\necho bye' });
      const r = await h.result;
      assert.equal(r.workDir, wd);
      const escaped = await readPid(join(r.keptDir!, 'escaped.pid'));
      reaper.addPid(escaped);
      assert.equal(r.exitCode, 0);
      assert.equal(r.pipesForcedClosed, true, 'the executor closed its ends after pipeCloseTimeoutMs');
      // Documented limit without a cgroup: outside the group, it is out of reach; the test reaps it by pid.
      assert.equal(await isAlive(escaped), true);
    });

    it('without a cgroup, gives the next attempt in the slot a new work dir, where a process of the last job that left its group cannot write', async () => {
      o = compileExecutorOptions({ ...o, cgroups: 'off', pipeCloseTimeoutMs: 300 });
      const pidFile = join(root, 'bg.pid');
      // It outlives its job (out of reach without a cgroup), then writes by relative path into its cwd.
      const bg = `setsid sh -c 'echo $$ > ${pidFile}; sleep 0.6; echo planted > planted-by-job1; sleep 30' </dev/null >/dev/null 2>&1 &`;
      const r1 = await start({ jobId: 'job1', script: `${bg}\nwhile [ ! -s ${pidFile} ]; do sleep 0.01; done\nexit 0` }).h.result;
      reaper.addPid(await readPid(pidFile));
      assert.equal(r1.outcome, 'succeeded');
      const { h, sink } = start({ jobId: 'job2', script: 'sleep 1; ls -A; ls -A "$BUILDER_WORKDIR"' });
      const r2 = await h.result;
      assert.equal(r2.outcome, 'succeeded');
      assert.equal(sink.text(), 'build\nhome\ninput\noutput\nscript\ntmp\n', "job2's cwd is empty and its work dir holds only its own entries");
    });

    it('cancel kills the group and reports cancelled', async () => {
      const { h, sink } = start({ script: 'echo started; sleep 1000 & wait' });
      await sink.waitFor('started');
      h.cancel();
      const r = await h.result;
      assert.equal(r.outcome, 'cancelled');
      assert.equal(r.cancelled, true);
      assert.equal(r.signal, 'SIGTERM');
      assert.equal(await isAlive(r.pid!), false);
    });

    it('cancel before the process starts means it never starts', async () => {
      let release!: () => void;
      const { h } = start({ script: 'echo ran > "$BUILDER_OUTPUT/ran"', fetchInputs: () => new Promise<void>((r) => (release = r)) });
      await waitUntil(() => release !== undefined);
      h.cancel();
      release();
      const r = await h.result;
      assert.equal(r.outcome, 'cancelled');
      assert.equal(r.pid, undefined);
      assert.deepEqual(r.artifacts?.artifacts, []);
    });
  });

  describe('when a signal ends the job', () => {
    for (const [sig, script] of [
      ['SIGSEGV', 'ulimit -c 0; kill -SEGV $$'],
      ['SIGKILL', 'kill -9 $$'],
    ] as const) {
      it(`reports ${sig} as the signal, not as an exit code`, async () => {
        const { h } = start({ script });
        const r = await h.result;
        assert.equal(r.signal, sig);
        assert.equal(r.exitCode, null);
        assert.equal(r.outcome, 'failed');
        assert.equal(r.timedOut, false);
      });
    }
  });

  describe('when a job fails', () => {
    it('still collects its artifacts and reports refused entries', async () => {
      const { h } = start({ script: 'echo pkg > "$BUILDER_OUTPUT/a_1.0_all.deb"; mkdir "$BUILDER_OUTPUT/logs"; echo x > "$BUILDER_OUTPUT/logs/build.log"; ln -s /etc/passwd "$BUILDER_OUTPUT/pw"; exit 7' });
      const r = await h.result;
      assert.equal(r.exitCode, 7);
      assert.equal(r.outcome, 'failed');
      assert.deepEqual(r.artifacts?.artifacts.map((a) => [a.path, a.kind]), [['a_1.0_all.deb', 'package'], ['logs/build.log', 'image']]);
      assert.deepEqual(r.artifacts?.refused.map((x) => [x.path, x.reason]), [['pw', 'symlink']]);
    });

    it('collects an output dir holding a single file, and reports an empty one as nothing kept and nothing collected', async () => {
      const one = await start({ script: 'echo pkg > "$BUILDER_OUTPUT/only_1.0_all.deb"' }).h.result;
      assert.equal(one.outcome, 'succeeded');
      assert.ok(one.keptDir !== undefined, 'a one-file output dir is kept');
      assert.deepEqual(one.artifacts?.artifacts.map((a) => a.path), ['only_1.0_all.deb']);
      assert.equal(await readFile(join(one.keptDir, 'only_1.0_all.deb'), 'utf8'), 'pkg\n');
      const empty = await start({ attempt: 2, script: 'true' }).h.result;
      assert.equal(empty.outcome, 'succeeded');
      assert.equal(empty.keptDir, undefined);
      assert.deepEqual(empty.artifacts, { artifacts: [], refused: [], conflicts: [] });
    });

    it('refuses an output dir the job replaced with a symlink to / instead of walking the machine', async () => {
      const { h } = start({ script: 'rm -rf "$BUILDER_OUTPUT" && ln -s / "$BUILDER_OUTPUT"' });
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded');
      assert.deepEqual(r.artifacts, { artifacts: [], refused: [{ path: '.', reason: 'symlink' }], conflicts: [] });
    });

    it('keeps the job running when the log sink fails (a full disk), and reports the lost output', async () => {
      let calls = 0;
      const failing = {
        async append(): Promise<void> {
          if (++calls >= 2) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
        },
      };
      const opts = compileExecutorOptions({ dataDir: root, spawner, batchBytes: 1024, flushIntervalMs: 20 });
      const h = runAttempt({ jobId: 'full', attempt: 1, name: 'n', channel: 'c', arch: 'a', script: 'head -c 1048576 /dev/zero; echo done > "$BUILDER_OUTPUT/done"' }, failing, opts);
      handles.push(h);
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded');
      assert.equal(r.stdoutBytes, 1048576);
      assert.equal(r.logError?.code, 'ENOSPC');
      assert.ok(r.logLostBytes > 0 && r.logLostBytes <= 1048576, `lost ${r.logLostBytes}`);
      assert.deepEqual(r.artifacts?.artifacts.map((a) => a.path), ['done']);
    });

    it('reports a spawn failure (missing interpreter) as a failed attempt with the error', async () => {
      const { h } = start({ argv: ['/nonexistent/tool', '--x'] });
      const r = await h.result;
      assert.equal(r.outcome, 'failed');
      assert.equal(r.error?.code, 'ENOENT');
    });
  });

  describe('when inputs are fetched', () => {
    it('places them in BUILDER_INPUT before the start and reports an artifact that shadows one with other content', async () => {
      const { h, sink } = start({
        fetchInputs: async (dir) => {
          await writeFile(join(dir, 'src.tar'), 'original source');
        },
        script: 'cat "$BUILDER_INPUT/src.tar"; echo changed > "$BUILDER_OUTPUT/src.tar"',
      });
      const r = await h.result;
      assert.equal(sink.text('stdout'), 'original source');
      assert.equal(r.artifacts?.conflicts.length, 1);
      assert.equal(r.artifacts?.conflicts[0]?.path, 'src.tar');
      // The artifact moved out of the slot with its output dir; the input was not changed by the job.
      assert.equal(await readFile(join(r.keptDir!, 'src.tar'), 'utf8'), 'changed\n');
      assert.equal(r.artifacts?.conflicts[0]?.inputSha256, createHash('sha256').update('original source').digest('hex'));
    });

    it('fails the attempt without running it when the fetch fails', async () => {
      const { h } = start({ fetchInputs: () => Promise.reject(new Error('master unreachable')), script: 'touch "$BUILDER_OUTPUT/ran"' });
      const r = await h.result;
      assert.equal(r.outcome, 'failed');
      assert.equal(r.pid, undefined);
      assert.match(r.error?.message ?? '', /master unreachable/);
    });
  });
});
