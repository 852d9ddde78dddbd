import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessFarm, waitFor } from '../../helpers/process-farm.js';
import { RunningBin, binPath, runBin } from '../../helpers/procs.js';
import { assertCleanError, builderCli, builderOnTty, jobIdOf } from './cli-helpers.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('the builder CLI against a real master and slave', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;
  let tmp: string;
  let aliceDir: string;
  const cli = builderCli(
    () => ['--master', farm.masterAddress, '--identity', farm.adminDir],
    // An empty config dir: a config file of the machine's user must not leak into the tests.
    () => ({ BUILDER_CONFIG_DIR: join(tmp, 'no-config') }),
  );
  const job = ['--channel', 'demo', '--arch', 'x86_64'];

  before(async function () {
    // A short grace: a slave cut off for longer loses its job to the queue (the requeue test).
    farm = await ProcessFarm.start({ masterArgs: ['--slave-grace', '500ms'] });
    tmp = await mkdtemp(join(tmpdir(), 'builder-cli-'));
    await farm.addSlave({ name: 'w1', channels: ['demo'], arches: ['x86_64'], capacity: 4, args: ['--kill-grace', '300ms'] });
    aliceDir = join(tmp, 'alice');
    const r = await runBin('master', ['client', 'create', 'alice', '--dir', farm.masterDir, '--out', aliceDir]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async function () {
    await farm?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  describe('when a job is scheduled and observed', function () {
    it('prints the job id, then observe replays stdout and stderr apart, tells the states, and exits 0', async function () {
      const id = jobIdOf(await cli(['schedule', '--name', 'hello', ...job, '--', 'sh', '-c', 'echo out; echo err >&2']));
      const o = await cli(['observe', String(id)]);
      assert.equal(o.code, 0, o.stderr);
      assert.equal(o.stdout, 'out\n');
      assert.match(o.stderr, /^err$/m);
      assert.match(o.stderr, new RegExp(`^\\[builder\\] job ${id} succeeded \\(exit 0\\)`, 'm'));
    });

    it('on a terminal, colours the job\'s stderr apart from its stdout', async function () {
      const id = jobIdOf(await cli(['schedule', '--name', 'colours', ...job, '--', 'sh', '-c', 'echo plain; echo red >&2']));
      const r = await builderOnTty(['observe', String(id), '--master', farm.masterAddress, '--identity', farm.adminDir], { BUILDER_CONFIG_DIR: join(tmp, 'no-config') });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^plain\r?$/m);
      // The escape codes as text: red for the job's stderr, cyan for Builder's own lines.
      const esc = '\x1b';
      assert.ok(r.out.includes(`${esc}[31mred`), r.out);
      assert.match(r.out.replaceAll(esc, 'ESC'), /ESC\[36m\[builder\] job \d+ succeeded/);
      const plain = await builderOnTty(['observe', String(id), '--master', farm.masterAddress, '--identity', farm.adminDir], { BUILDER_CONFIG_DIR: join(tmp, 'no-config'), NO_COLOR: '1' });
      assert.equal(plain.out.includes(esc), false, 'NO_COLOR is honoured');
      assert.match(plain.out, /^red\r?$/m);
    });

    it('follows a running job live: state changes, then the outcome, with schedule --observe', async function () {
      const r = await cli(['schedule', '--name', 'live', ...job, '--observe', '--', 'sh', '-c', 'sleep 0.5; echo later']);
      assert.equal(r.code, 0, r.stderr);
      const [idLine, ...rest] = r.stdout.split('\n');
      assert.match(idLine!, /^\d+$/);
      assert.equal(rest.join('\n'), 'later\n');
      assert.match(r.stderr, /\[builder\] job \d+ (queued|dispatched|running)/);
      assert.match(r.stderr, /\[builder\] job \d+ succeeded/);
    });

    it('takes every job option, and shows the job in human and --json form', async function () {
      const r = await cli(['schedule', '--name', 'opts', ...job, '--slots', '2', '--priority', '3', '--timeout', '1m', '--retries', '2', '--env', 'A=1', '--env', 'B=x=y', '--json', '--', 'sh', '-c', 'echo "$A $B"']);
      assert.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout);
      assert.deepEqual([j.name, j.channel, j.arch, j.slots, j.priority, j.timeoutMs, j.maxAttempts], ['opts', 'demo', 'x86_64', 2, 3, 60_000, 3]);
      assert.deepEqual(j.env, { A: '1', B: 'x=y' });
      assert.deepEqual(j.command, { kind: 'argv', argv: ['sh', '-c', 'echo "$A $B"'] });
      await farm.waitJob(j.id);
      const o = await cli(['observe', String(j.id)]);
      assert.equal(o.stdout, '1 x=y\n');

      const human = await cli(['job', String(j.id)]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^state:\s+succeeded \(exit 0\)$/m);
      assert.match(human.stdout, /^slave:\s+w1$/m);
      assert.match(human.stdout, /^ATTEMPT\s+SLAVE\s+STATE/m);
      const js = JSON.parse((await cli(['job', String(j.id), '--json'])).stdout);
      assert.equal(js.job.id, j.id);
      assert.equal(js.attempts.length, 1);
      assert.equal(js.waiting, null);
    });

    it('lists jobs, filtered, in human and --json form', async function () {
      const all = JSON.parse((await cli(['jobs', '--json', '--channel', 'demo', '--limit', '100'])).stdout) as Array<{ id: number; state: string }>;
      assert.ok(all.length >= 3);
      assert.ok(all.every((x, i) => i === 0 || all[i - 1]!.id > x.id), 'newest first');
      const ok = JSON.parse((await cli(['jobs', '--json', '--state', 'succeeded'])).stdout) as Array<{ state: string }>;
      assert.ok(ok.length > 0 && ok.every((x) => x.state === 'succeeded'));
      const one = JSON.parse((await cli(['jobs', '--json', '--limit', '1'])).stdout) as unknown[];
      assert.equal(one.length, 1);
      const h = await cli(['jobs', '--state', 'succeeded']);
      assert.match(h.stdout, /^ID\s+STATE\s+NAME\s+CHANNEL\s+ARCH\s+SLAVE\s+CREATED\s+OUTCOME$/m);
      assert.match(h.stdout, /^\d+\s+succeeded\s+hello\s+demo\s+x86_64\s+w1\s/m);
      assert.equal((await cli(['jobs', '--channel', 'empty-channel'])).stdout, 'no jobs\n');
    });

    it('shows all 10,000 lines of a job in order, live and replayed', async function () {
      const script = 'for i in 1 2 3 4 5 6 7 8 9 10; do seq -f "line %g" $(( (i - 1) * 1000 + 1 )) $(( i * 1000 )); sleep 0.05; done; echo "to stderr" >&2';
      const id = jobIdOf(await cli(['schedule', '--name', 'flood', ...job, '--', 'sh', '-c', script]));
      const expected = Array.from({ length: 10_000 }, (_, i) => `line ${i + 1}`).join('\n') + '\n';
      const live = await cli(['observe', String(id)]);
      assert.equal(live.code, 0, live.stderr);
      assert.ok(live.stdout === expected, `live: ${live.stdout.split('\n').length - 1} lines, first difference at line ${live.stdout.split('\n').findIndex((l, i) => l !== `line ${i + 1}`) + 1}`);
      assert.match(live.stderr, /^to stderr$/m);
      const replay = await cli(['observe', String(id)]);
      assert.ok(replay.stdout === expected, 'replayed log differs');

      // A reader that stops early (`builder observe N | head`): a quiet exit 141, as after SIGPIPE.
      const child = spawn(process.execPath, [binPath('builder'), 'observe', String(id), '--master', farm.masterAddress, '--identity', farm.adminDir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // The reader is gone before the first line arrives, so the first write meets a closed pipe.
      child.stdout.destroy();
      const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
      assert.equal(code, 141, stderr);
      assert.doesNotMatch(stderr, /Error/);
    });
  });

  describe('when a job does not succeed', function () {
    it('observe exits 10 for a failed job, 11 for a timed-out one, 12 for a cancelled one', async function () {
      const failed = jobIdOf(await cli(['schedule', '--name', 'fails', ...job, '--', 'sh', '-c', 'echo bad >&2; exit 3']));
      const f = await cli(['observe', String(failed)]);
      assert.equal(f.code, 10, f.stderr);
      assert.match(f.stderr, /\[builder\] job \d+ failed \(exit 3/);

      const slow = jobIdOf(await cli(['schedule', '--name', 'slow', ...job, '--timeout', '1s', '--', 'sleep', '30']));
      const t = await cli(['observe', String(slow)]);
      assert.equal(t.code, 11, t.stderr);
      assert.match(t.stderr, /\[builder\] job \d+ timed_out/);

      const long = jobIdOf(await cli(['schedule', '--name', 'long', ...job, '--', 'sh', '-c', 'echo started; sleep 30']));
      const obs = new RunningBin('builder', ['observe', String(long), '--master', farm.masterAddress, '--identity', farm.adminDir], { NO_COLOR: '1' });
      const exited = new Promise<number | null>((resolve) => obs.child.once('exit', (code) => resolve(code)));
      try {
        await obs.waitFor(/started/, 60_000);
        const c = await cli(['cancel', String(long)]);
        assert.equal(c.code, 0, c.stderr);
        assert.match(c.stdout, new RegExp(`^job ${long} cancelled$`, 'm'));
        assert.equal(await exited, 12, obs.out);
        assert.match(obs.out, /\[builder\] job \d+ cancelled/);
      } finally {
        await obs.stop('SIGKILL');
      }
    });

    it('Ctrl-C stops observing (exit 130) and leaves the job running', async function () {
      const id = jobIdOf(await cli(['schedule', '--name', 'keeps', ...job, '--', 'sh', '-c', 'echo started; sleep 30']));
      const obs = new RunningBin('builder', ['observe', String(id), '--master', farm.masterAddress, '--identity', farm.adminDir], { NO_COLOR: '1' });
      try {
        await obs.waitFor(/started/, 60_000);
        assert.deepEqual(await obs.stop('SIGINT'), { code: 130, signal: null });
        assert.match(obs.out, /stopped observing; job \d+ keeps running/);
        assert.equal((await farm.getJob(id)).job.state, 'running');
      } finally {
        await obs.stop('SIGKILL');
        await cli(['cancel', String(id)]);
      }
    });

    it('follows a job into its next attempt when its slave is lost, and exits with the final outcome', async function () {
      // A second slave behind a cuttable proxy, on its own channel.
      const w2 = await farm.addSlave({ name: 'w2', channels: ['flaky'], arches: ['x86_64'], viaProxy: true, enroll: 'direct', args: ['--kill-grace', '300ms'] });
      const mark = join(tmp, 'attempt-mark');
      const script = `if [ -e ${mark} ]; then echo second; exit 0; fi; touch ${mark}; echo first; sleep 60`;
      const id = jobIdOf(await cli(['schedule', '--name', 'requeued', '--channel', 'flaky', '--arch', 'x86_64', '--retries', '2', '--', 'sh', '-c', script]));
      const obs = new RunningBin('builder', ['observe', String(id), '--master', farm.masterAddress, '--identity', farm.adminDir], { NO_COLOR: '1' });
      const exited = new Promise<number | null>((resolve) => obs.child.once('exit', (code) => resolve(code)));
      try {
        await obs.waitFor(/^first$/m, 60_000);
        await w2.proxy!.cut();
        await waitFor('the job back in the queue', async () => (await farm.getJob(id)).job.attempt >= 2 || (await farm.getJob(id)).job.state === 'queued', 30_000, 100);
        await w2.proxy!.restore();
        assert.equal(await exited, 0, obs.out);
        assert.match(obs.out, /^first\n[\s\S]*\[builder\] attempt 2\n[\s\S]*^second$/m);
        assert.match(obs.out, /\[builder\] job \d+ succeeded/);
      } finally {
        await obs.stop('SIGKILL');
      }
    });

    it('a queued job says why it waits; cancel --json; observe exits 12', async function () {
      const id = jobIdOf(await cli(['schedule', '--name', 'nowhere', '--channel', 'no-slave-here', '--arch', 'x86_64', '--', 'true']));
      const h = await cli(['job', String(id)]);
      assert.match(h.stdout, /^state:\s+queued$/m);
      assert.match(h.stdout, /^waiting:\s+\S.*$/m);
      const c = await cli(['cancel', String(id), '--json']);
      assert.equal(c.code, 0, c.stderr);
      assert.equal(JSON.parse(c.stdout).state, 'cancelled');
      assert.equal((await cli(['observe', String(id)])).code, 12);
    });

    it('retry queues a new job with the same spec, in human and --json form, and --observe follows it', async function () {
      const id = jobIdOf(await cli(['schedule', '--name', 'again', ...job, '--', 'sh', '-c', 'exit 1']));
      await farm.waitJob(id);
      const again = jobIdOf(await cli(['retry', String(id)]));
      assert.notEqual(again, id);
      const js = await cli(['retry', String(id), '--json']);
      const j = JSON.parse(js.stdout);
      assert.equal(j.name, 'again');
      assert.deepEqual(j.command, { kind: 'argv', argv: ['sh', '-c', 'exit 1'] });
      const o = await cli(['retry', String(id), '--observe']);
      assert.equal(o.code, 10, o.stderr);
      assert.equal((await farm.getJob(id)).job.state, 'failed', 'the old job stays as it was');
    });
  });

  describe('when a job has inputs and artifacts', function () {
    let id: number;
    let data: Buffer;
    let outDir: string;

    before(async function () {
      data = randomBytes(3 * 1024 * 1024 + 17);
      await writeFile(join(tmp, 'data.bin'), data);
      await writeFile(
        join(tmp, 'build.sh'),
        '#!/bin/sh\nset -e\ncp "$BUILDER_INPUT/data.bin" "$BUILDER_OUTPUT/copy.bin"\nmkdir -p "$BUILDER_OUTPUT/sub"\necho note > "$BUILDER_OUTPUT/sub/note.txt"\nsha256sum "$BUILDER_INPUT/data.bin" | cut -d" " -f1\n',
      );
      outDir = join(tmp, 'out');
    });

    it('uploads --input files (sha256-checked), runs --script, and lists the artifacts in human and --json form', async function () {
      const r = await cli(['schedule', '--name', 'files', ...job, '--input', join(tmp, 'data.bin'), '--script', join(tmp, 'build.sh'), '--observe']);
      assert.equal(r.code, 0, r.stderr);
      const [idLine, shaLine] = r.stdout.split('\n');
      id = Number(idLine);
      assert.equal(shaLine, sha256(data));
      assert.match(r.stderr, /uploaded data\.bin \(3145745 bytes\)/);

      const list = JSON.parse((await cli(['artifacts', String(id), '--json'])).stdout) as Array<{ name: string; sha256: string; size: number; kind: string }>;
      const byName = new Map(list.map((a) => [a.name, a]));
      assert.equal(byName.get('copy.bin')?.sha256, sha256(data));
      assert.equal(byName.get('copy.bin')?.size, data.length);
      assert.equal(byName.get('sub/note.txt')?.sha256, sha256('note\n'));
      const h = await cli(['artifacts', String(id)]);
      assert.match(h.stdout, /^ATTEMPT\s+KIND\s+SIZE\s+SHA256\s+NAME$/m);
      assert.match(h.stdout, new RegExp(`^1\\s+\\w+\\s+3\\.0 MiB\\s+${sha256(data)}\\s+copy\\.bin$`, 'm'));
    });

    it('an input the master already holds is not sent again', async function () {
      const r = await cli(['schedule', '--name', 'files2', ...job, '--input', join(tmp, 'data.bin'), '--', 'true']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /uploaded data\.bin \(3145745 bytes, 3145745 already on the master\)/);
    });

    it('resumes an input upload that stopped half-way', async function () {
      const part = randomBytes(2 * 1024 * 1024);
      const sum = sha256(part);
      await writeFile(join(tmp, 'part.bin'), part);
      // An earlier upload sent the first MiB, then stopped.
      await farm.call('input.begin', { sha256: sum, size: part.length });
      await farm.call('input.chunk', { sha256: sum, offset: 0, data: part.subarray(0, 1024 * 1024) });
      const r = await cli(['schedule', '--name', 'resumed', ...job, '--input', join(tmp, 'part.bin'), '--observe', '--', 'sh', '-c', 'sha256sum "$BUILDER_INPUT/part.bin" | cut -d" " -f1']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /uploaded part\.bin \(2097152 bytes, 1048576 already on the master\)/);
      assert.equal(r.stdout.split('\n')[1], sum);
    });

    it('downloads every artifact into --out with checked sha256, in human and --json form', async function () {
      const r = await cli(['download', String(id), '--out', outDir]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /copy\.bin\s+3\.0 MiB\s+sha256 [0-9a-f]{64} ok/);
      assert.deepEqual(await readFile(join(outDir, 'copy.bin')), data);
      assert.equal(await readFile(join(outDir, 'sub', 'note.txt'), 'utf8'), 'note\n');
      assert.deepEqual((await readdir(outDir)).sort(), ['copy.bin', 'sub']);

      const again = await cli(['download', String(id), '--out', outDir]);
      assertCleanError(again, /already exists/, 1);
      const forced = await cli(['download', String(id), '--out', outDir, '--force', '--json']);
      assert.equal(forced.code, 0, forced.stderr);
      const rows = JSON.parse(forced.stdout) as Array<{ name: string; path: string; sha256: string }>;
      assert.deepEqual(rows.map((x) => x.name).sort(), ['copy.bin', 'sub/note.txt']);
      assert.equal(rows.find((x) => x.name === 'copy.bin')?.path, join(outDir, 'copy.bin'));
    });

    it('shows a progress bar on a terminal', async function () {
      const r = await builderOnTty(['download', String(id), 'copy.bin', '--out', join(tmp, 'tty'), '--master', farm.masterAddress, '--identity', farm.adminDir], { BUILDER_CONFIG_DIR: join(tmp, 'no-config') });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /copy\.bin \[[█░]+\] 100% \| 3145745\/3145745 bytes/);
      assert.deepEqual(await readFile(join(tmp, 'tty', 'copy.bin')), data);
    });

    it('downloads one artifact by name, and names an unknown one in one line', async function () {
      const one = join(tmp, 'one');
      const r = await cli(['download', String(id), 'sub/note.txt', '--out', one]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await readdir(one), ['sub']);
      assert.deepEqual(await readdir(join(one, 'sub')), ['note.txt']);
      assertCleanError(await cli(['download', String(id), 'nope.bin', '--out', one]), /has no artifact named nope\.bin/, 5);
    });
  });

  describe('when operating the farm', function () {
    it('schedules a recurring job with --cron, lists it, and unschedules it', async function () {
      const r = await cli(['schedule', '--name', 'nightly', ...job, '--cron', '0 3 * * *', '--tz', 'Europe/Paris', '--', 'true']);
      assert.equal(r.code, 0, r.stderr);
      const sid = r.stdout.trim();
      assert.ok(sid.length > 0 && !sid.includes('\n'));
      const h = await cli(['schedules']);
      assert.match(h.stdout, /^ID\s+CRON\s+TZ\s+NAME/m);
      assert.match(h.stdout, new RegExp(`^${sid}\\s+0 3 \\* \\* \\*\\s+Europe/Paris\\s+nightly\\s+demo\\s+x86_64\\s+no\\s`, 'm'));
      const js = JSON.parse((await cli(['schedules', '--json'])).stdout) as Array<{ id: string; tz: string; nextFireAt: number }>;
      const s = js.find((x) => x.id === sid);
      assert.equal(s?.tz, 'Europe/Paris');
      assert.ok((s?.nextFireAt ?? 0) > Date.now());
      const cj = await cli(['schedule', '--name', 'hourly', ...job, '--cron', '@hourly', '--json', '--', 'true']);
      const created = JSON.parse(cj.stdout);
      assert.equal(created.cron, '@hourly');

      assert.match((await cli(['unschedule', sid])).stdout, new RegExp(`schedule ${sid} removed`));
      assert.match((await cli(['unschedule', created.id])).stdout, /removed/);
      assert.ok(!(JSON.parse((await cli(['schedules', '--json'])).stdout) as Array<{ id: string }>).some((x) => x.id === sid));
      assertCleanError(await cli(['unschedule', sid]), /./, 5);
    });

    it('pauses and resumes a schedule, in human and --json form; an unknown id exits 5', async function () {
      const sid = (await cli(['schedule', '--name', 'paused', ...job, '--cron', '0 3 * * *', '--', 'true'])).stdout.trim();
      assert.match(sid, /^paused-[0-9a-f]{8}$/);
      try {
        const p = await cli(['pause-schedule', sid]);
        assert.equal(p.code, 0, p.stderr);
        assert.equal(p.stdout, `schedule ${sid} paused\n`);
        assert.match((await cli(['schedules'])).stdout, new RegExp(`^${sid}\\s+0 3 \\* \\* \\*\\s+UTC\\s+paused\\s+demo\\s+x86_64\\s+yes\\s+-\\s`, 'm'));
        const { schedules } = await farm.call('schedule.list', {});
        assert.deepEqual(schedules.filter((x) => x.id === sid).map((x) => [x.paused, x.nextFireAt]), [[true, null]]);
        const r = await cli(['resume-schedule', sid, '--json']);
        assert.equal(r.code, 0, r.stderr);
        const resumed = JSON.parse(r.stdout) as { id: string; paused: boolean; nextFireAt: number };
        assert.deepEqual([resumed.id, resumed.paused], [sid, false]);
        assert.ok(resumed.nextFireAt > Date.now());
        assert.match((await cli(['pause-schedule', sid, '--json'])).stdout, /"paused": true/);
        assert.match((await cli(['resume-schedule', sid])).stdout, new RegExp(`^schedule ${sid} resumed; next fire \\d{4}-\\d\\d-\\d\\dT03:00:00Z$`, 'm'));
        assertCleanError(await cli(['pause-schedule', 'nope-00000000']), /no schedule nope-00000000/, 5);
        assertCleanError(await cli(['resume-schedule', '../x']), /./, 2);
      } finally {
        await cli(['unschedule', sid]);
      }
    });

    it('lists slaves in human and --json form', async function () {
      const js = JSON.parse((await cli(['slaves', '--json'])).stdout) as Array<{ name: string; channels: string[]; arches: string[]; capacity: number; connected: boolean; connectedSince: number }>;
      const w1 = js.find((s) => s.name === 'w1');
      assert.deepEqual([w1?.channels, w1?.arches, w1?.capacity, w1?.connected], [['demo'], ['x86_64'], 4, true]);
      assert.ok((w1?.connectedSince ?? 0) > 0);
      const h = await cli(['slaves']);
      assert.match(h.stdout, /^NAME\s+CHANNELS\s+ARCHES\s+CAPACITY\s+IN USE\s+CONNECTED SINCE\s+STATUS$/m);
      assert.match(h.stdout, /^w1\s+demo\s+x86_64\s+4\s+\d+\s+\d{4}-\d\d-\d\dT\S+Z\s+connected$/m);
    });

    it('drains and undrains a slave (admin); a client identity is refused', async function () {
      assert.match((await cli(['drain', 'w1'])).stdout, /slave w1 drained/);
      try {
        const st = JSON.parse((await cli(['slaves', '--json'])).stdout) as Array<{ name: string; drained: boolean }>;
        assert.equal(st.find((s) => s.name === 'w1')?.drained, true);
        assert.match((await cli(['slaves'])).stdout, /^w1\s.*connected, drained$/m);
        const id = jobIdOf(await cli(['schedule', '--name', 'after-drain', ...job, '--', 'true']));
        await new Promise((r) => setTimeout(r, 300));
        assert.equal((await farm.getJob(id)).job.state, 'queued');
        assertCleanError(await cli(['drain', 'w1'], { conn: ['--master', farm.masterAddress, '--identity', aliceDir] }), /may not call slave\.drain/, 4);
        assert.match((await cli(['undrain', 'w1'])).stdout, /slave w1 takes jobs again/);
        assert.equal((await cli(['observe', String(id)])).code, 0);
      } finally {
        await cli(['undrain', 'w1']);
      }
    });

    it('lists images and promotes one (admin); a client identity may not promote', async function () {
      const id = jobIdOf(await cli(['schedule', '--name', 'rootfs', ...job, '--', 'sh', '-c', 'echo image > "$BUILDER_OUTPUT/rootfs.img"']));
      assert.equal((await cli(['observe', String(id)])).code, 0);
      const before = JSON.parse((await cli(['images', 'rootfs', '--json'])).stdout) as Array<{ name: string; jobId: number; promoted: boolean; files: Array<{ name: string }> }>;
      const mine = before.find((i) => i.jobId === id);
      assert.deepEqual([mine?.name, mine?.promoted, mine?.files.map((f) => f.name)], ['rootfs', false, ['rootfs.img']]);
      assertCleanError(await cli(['promote', String(id), 'rootfs'], { conn: ['--master', farm.masterAddress, '--identity', aliceDir] }), /may not call image\.promote/, 4);
      const p = await cli(['promote', String(id), 'rootfs']);
      assert.equal(p.code, 0, p.stderr);
      assert.match(p.stdout, new RegExp(`job ${id} is now the release of rootfs`));
      const after = JSON.parse((await cli(['images', '--json'])).stdout) as Array<{ jobId: number; promoted: boolean }>;
      assert.equal(after.find((i) => i.jobId === id)?.promoted, true);
      assert.match((await cli(['images'])).stdout, new RegExp(`^\\*\\s+rootfs\\s+${id}\\s`, 'm'));
      assert.equal((await cli(['images', 'no-such-image'])).stdout, 'no images named no-such-image\n');
    });

    it('a client identity made by `master client create` schedules, observes, lists and downloads', async function () {
      const conn = ['--master', farm.masterAddress, '--identity', aliceDir];
      const id = jobIdOf(await cli(['schedule', '--name', 'by-alice', ...job, '--', 'sh', '-c', 'echo hi > "$BUILDER_OUTPUT/a.txt"; echo done'], { conn }));
      const o = await cli(['observe', String(id)], { conn });
      assert.equal(o.code, 0, o.stderr);
      assert.equal(o.stdout, 'done\n');
      assert.equal((await cli(['download', String(id), '--out', join(tmp, 'alice-out')], { conn })).code, 0);
      assert.equal(await readFile(join(tmp, 'alice-out', 'a.txt'), 'utf8'), 'hi\n');
      await waitFor('alice in jobs', async () => (JSON.parse((await cli(['jobs', '--json'], { conn })).stdout) as Array<{ id: number }>).some((j) => j.id === id));
    });
  });
});
