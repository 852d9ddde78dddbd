import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import { cgroup2Mounts, cgroupDirIn, ownCgroupPath } from '../../../slave/executor/cgroup.js';
import {
  AttemptCgroup,
  compileExecutorOptions,
  findCgroupPlace,
  runAttempt,
  sweepCgroups,
  type AttemptHandle,
  type AttemptSpec,
  type CgroupPlace,
  type CompiledExecutorOptions,
} from '../../../slave/executor/index.js';
import { isAlive, MemorySink, ProcessReaper, readPid, waitUntil } from './helpers.js';

/** This slave's cgroups (by prefix) that exist now. */
function cgroupsOf(place: CgroupPlace): string[] {
  return readdirSync(place.parent).filter((n) => n.startsWith(place.prefix));
}

describe('slave/executor: a cgroup per attempt (real cgroup v2, native spawner)', function () {
  this.timeout(30_000);
  let root: string;
  let o: CompiledExecutorOptions;
  const reaper = new ProcessReaper();
  const handles: AttemptHandle[] = [];

  before(async function () {
    const probe = await mkdtemp(join(tmpdir(), 'builder-cg-probe-'));
    const place = findCgroupPlace(join(probe, 'work'));
    await rm(probe, { recursive: true, force: true });
    // CI runs as root on Linux 6 with cgroup2 mounted: there, this runs. Elsewhere, say why not.
    if ('why' in place) {
      console.log(`      (skipped: ${place.why})`);
      this.skip();
    }
  });

  function start(spec: Partial<AttemptSpec> & ({ script: string } | { argv: string[] }), sink = new MemorySink(), opts = o): { h: AttemptHandle; sink: MemorySink } {
    const h = runAttempt({ jobId: 'j7', attempt: 2, name: 'cg', channel: 'stable', arch: 'x86_64', ...spec }, sink, opts);
    handles.push(h);
    void waitUntil(() => h.pid !== undefined || handles.length === 0).then(() => reaper.addGroup(h.pid));
    return { h, sink };
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-cg-'));
    o = compileExecutorOptions({ dataDir: root, spawner: 'native', cgroups: 'on', killGraceMs: 300, pipeCloseTimeoutMs: 1000, flushIntervalMs: 20 });
  });
  afterEach(async () => {
    for (const h of handles) reaper.addGroup(h.pid);
    handles.splice(0);
    await reaper.reap();
    if (o.cgroup !== undefined) await sweepCgroups(o.cgroup);
    await rm(root, { recursive: true, force: true });
  });

  it('runs the job in a cgroup named after its job and attempt, and removes it after', async () => {
    const place = o.cgroup!;
    const { h, sink } = start({ script: 'grep ^0:: /proc/self/cgroup; sh -c "grep ^0:: /proc/self/cgroup"' });
    const r = await h.result;
    assert.equal(r.outcome, 'succeeded', sink.text());
    const lines = sink.text('stdout').trim().split('\n');
    assert.equal(lines.length, 2);
    for (const l of lines) assert.match(l, new RegExp(`^0::.*/${place.prefix}j7-2$`), 'the job and what it forks are in the attempt cgroup');
    assert.deepEqual(cgroupsOf(place), [], 'the cgroup is gone once the attempt is over');
  });

  it('kills a process that left the process group (setsid) at the end of the job, without waiting for its pipes', async () => {
    const script = `setsid sh -c 'trap "" TERM; echo $$ > "$BUILDER_OUTPUT/escaped.pid"; exec sleep 1000' &\nwhile [ ! -s "$BUILDER_OUTPUT/escaped.pid" ]; do sleep 0.01; done\necho bye`;
    const { h, sink } = start({ script });
    const r = await h.result;
    const escaped = await readPid(join(r.keptDir!, 'escaped.pid'));
    reaper.addPid(escaped);
    assert.equal(r.outcome, 'succeeded', sink.text());
    assert.equal(r.leftoversKilled, true);
    assert.equal(r.pipesForcedClosed, false, 'it died (SIGKILL after the grace) and closed the pipes itself');
    assert.equal(await isAlive(escaped), false);
    assert.deepEqual(cgroupsOf(o.cgroup!), []);
  });

  it('cancel kills a double-forked daemon that ignores SIGTERM, out of the process group', async () => {
    // The classic daemon: fork, setsid, fork again, stdio elsewhere; its parent exits at once.
    const script = [
      `sh -c 'setsid sh -c "trap \\"\\" TERM; echo \\$\\$ > \\"$BUILDER_OUTPUT/d.pid\\"; exec </dev/null >/dev/null 2>&1; while :; do sleep 1; done" &'`,
      'while [ ! -s "$BUILDER_OUTPUT/d.pid" ]; do sleep 0.01; done',
      'echo started',
      'sleep 1000',
    ].join('\n');
    const { h, sink } = start({ script });
    await sink.waitFor('started');
    h.cancel();
    const r = await h.result;
    const daemon = await readPid(join(r.keptDir!, 'd.pid'));
    reaper.addPid(daemon);
    assert.equal(r.outcome, 'cancelled');
    assert.equal(await isAlive(daemon), false, 'the daemon is dead when the result is ready');
    assert.deepEqual(cgroupsOf(o.cgroup!), []);
  });

  it('a timeout reaches the whole cgroup as well', async () => {
    const script = `setsid sh -c 'echo $$ > "$BUILDER_OUTPUT/e.pid"; exec sleep 1000' >/dev/null 2>&1 &\nwhile [ ! -s "$BUILDER_OUTPUT/e.pid" ]; do sleep 0.01; done\nsleep 1000`;
    const { h } = start({ script, timeoutMs: 1500 });
    const r = await h.result;
    const e = await readPid(join(r.keptDir!, 'e.pid'));
    reaper.addPid(e);
    assert.equal(r.outcome, 'timed_out');
    assert.equal(await isAlive(e), false);
  });

  it('SIGTERMs each process of the job once, also one out of the process group, before the SIGKILL', async () => {
    // Each counts the SIGTERMs it gets; a second one would make many programs skip their shutdown.
    const script = [
      `setsid sh -c 'n=0; trap "n=\\$((n+1)); echo TERM \\$n >> \\"$BUILDER_OUTPUT/escaped\\"" TERM; echo ready > "$BUILDER_OUTPUT/ready"; while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 &`,
      `n=0; trap 'n=$((n+1)); echo "TERM $n" >> "$BUILDER_OUTPUT/leader"' TERM`,
      'while [ ! -s "$BUILDER_OUTPUT/ready" ]; do sleep 0.01; done',
      'echo started',
      'while :; do sleep 0.05; done',
    ].join('\n');
    const { h, sink } = start({ script });
    await sink.waitFor('started');
    h.cancel();
    const r = await h.result;
    assert.equal(r.outcome, 'cancelled');
    assert.equal(await readFile(join(r.keptDir!, 'leader'), 'utf8'), 'TERM 1\n');
    assert.equal(await readFile(join(r.keptDir!, 'escaped'), 'utf8'), 'TERM 1\n', 'the process out of the group got its SIGTERM, once');
  });

  it('kills what the job put in a cgroup of its own under the attempt\'s, and removes both', async () => {
    const cg = join(o.cgroup!.parent, `${o.cgroup!.prefix}j7-2`);
    const script = ['mkdir "$CG/inner"', `sh -c 'echo $$ > "$CG/inner/cgroup.procs"; echo $$ > "$BUILDER_OUTPUT/inner.pid"; exec sleep 1000' &`, 'while [ ! -s "$BUILDER_OUTPUT/inner.pid" ]; do sleep 0.01; done', 'echo started', 'sleep 1000'].join('\n');
    const { h, sink } = start({ script, env: { CG: cg } });
    await sink.waitFor('started');
    h.cancel();
    const r = await h.result;
    const inner = await readPid(join(r.keptDir!, 'inner.pid'));
    reaper.addPid(inner);
    assert.equal(r.outcome, 'cancelled', sink.text());
    assert.equal(await isAlive(inner), false);
    await waitUntil(() => !existsSync(cg));
  });

  it('reports a cgroup it cannot join as the attempt error, and runs nothing', async () => {
    // A plain directory as the "parent": the attempt's directory is made, but it has no cgroup.procs.
    const fake = join(root, 'not-a-cgroup');
    mkdirSync(fake);
    const bad = { ...o, cgroup: { parent: fake, prefix: 'builder-x-' } };
    const { h } = start({ script: `touch ${join(root, 'ran')}` }, new MemorySink(), bad);
    const r = await h.result;
    assert.equal(r.outcome, 'failed');
    assert.equal(r.pid, undefined);
    assert.equal(r.error?.code, 'ENOENT');
    assert.match(r.error?.message ?? '', /^cannot put the job into a cgroup of its own: cgroup .*not-a-cgroup\/builder-x-j7-2\/cgroup\.procs ENOENT$/);
    assert.equal(existsSync(join(root, 'ran')), false);
    assert.deepEqual(readdirSync(fake), [], 'the directory made for it is removed again');
  });

  it('sweepCgroups kills what a previous slave process left in its cgroups and removes them, and leaves other slaves\' alone', async () => {
    const place = o.cgroup!;
    const mine = AttemptCgroup.make(place, '40-1');
    const other = AttemptCgroup.make({ parent: place.parent, prefix: 'builder-0000000000-' }, '40-1');
    try {
      // A process in "my" cgroup, as a job of a slave that was SIGKILLed would be.
      const child = spawn('sh', ['-c', `echo $$ > ${mine.procsFile}; exec sleep 1000`], { stdio: 'ignore', detached: true });
      reaper.addPid(child.pid);
      await waitUntil(() => mine.pids().includes(child.pid!));
      const r = await sweepCgroups(place);
      assert.deepEqual(r, { found: [`${place.prefix}40-1`], left: [] });
      assert.equal(await isAlive(child.pid!), false);
      assert.equal(existsSync(mine.path), false);
      assert.equal(existsSync(other.path), true, "another slave's cgroup is not touched");
    } finally {
      other.remove();
      mine.remove();
    }
  });

  it('cgroups on is refused, saying why, where it cannot be met; a bad value is a configuration error', () => {
    assert.throws(
      () => compileExecutorOptions({ dataDir: root, spawner: 'node', cgroups: 'on' }),
      (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && /cgroups on cannot be met: jobs join their cgroup through the native spawner/.test((e as Error).message),
    );
    assert.throws(() => compileExecutorOptions({ dataDir: root, cgroups: 'yes' as 'on' }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && /must be auto, on or off, got "yes"/.test((e as Error).message));
    const node = compileExecutorOptions({ dataDir: root, spawner: 'node' });
    assert.equal(node.cgroup, undefined);
    assert.match(node.cgroupNote ?? '', /native spawner/);
    assert.equal(compileExecutorOptions({ dataDir: root, cgroups: 'off' }).cgroup, undefined);
  });
});

describe('slave/executor: cgroup v2 lookup from /proc text', function () {
  it('finds the cgroup2 mount (octal escapes decoded) and the process path', () => {
    const mountinfo = [
      '22 1 0:21 / /sys/fs/cgroup/cpu rw,relatime shared:7 - cgroup cgroup rw,cpu',
      '30 22 0:27 /ns /sys/fs/cgroup/my\\040tree rw,nosuid - cgroup2 cgroup2 rw',
    ].join('\n');
    const mounts = cgroup2Mounts(mountinfo + '\n31 22 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw');
    assert.deepEqual(mounts, [
      { root: '/ns', mountPoint: '/sys/fs/cgroup/my tree' },
      { root: '/', mountPoint: '/sys/fs/cgroup/unified' },
    ]);
    assert.deepEqual(cgroup2Mounts('22 1 0:21 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n'), []);
    // The first mount that shows the cgroup: a bind mount of another subtree is passed over.
    assert.equal(cgroupDirIn(mounts, '/ns/slave.service'), '/sys/fs/cgroup/my tree/slave.service');
    assert.equal(cgroupDirIn(mounts, '/ns'), '/sys/fs/cgroup/my tree');
    assert.equal(cgroupDirIn(mounts, '/nsx/a'), '/sys/fs/cgroup/unified/nsx/a');
    assert.equal(cgroupDirIn(mounts, '/'), '/sys/fs/cgroup/unified');
    assert.equal(cgroupDirIn(mounts.slice(0, 1), '/other'), undefined);
    assert.equal(ownCgroupPath('4:memory:/x\n0::/system.slice/builder-slave.service\n'), '/system.slice/builder-slave.service');
    assert.equal(ownCgroupPath('4:memory:/x\n'), undefined);
  });
});
