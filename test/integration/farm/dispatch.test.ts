import assert from 'node:assert/strict';
import { ProcessFarm, type FarmSlave } from '../../helpers/process-farm.js';
import { Gate, RunLog, maxConcurrentSlots, readSlotRecord, slotEvents } from './setup.js';

/**
 * Real master and four real slave processes on 127.0.0.1: what goes where, how much at once, and
 * in which order.
 */
describe('when a farm of real processes dispatches jobs', function () {
  this.timeout(90_000);
  let farm: ProcessFarm;
  let amd: FarmSlave; // main, x86_64, 2 slots
  let arm: FarmSlave; // main, aarch64 + noarch, 1 slot
  let other: FarmSlave; // other, x86_64, 1 slot
  let prio: FarmSlave; // prio, x86_64, 1 slot

  before(async function () {
    farm = await ProcessFarm.start();
    amd = await farm.addSlave({ name: 'amd', channels: ['main'], arches: ['x86_64'], capacity: 2 });
    arm = await farm.addSlave({ name: 'arm', channels: ['main'], arches: ['aarch64', 'noarch'], capacity: 1 });
    other = await farm.addSlave({ name: 'other', channels: ['other', 'extra'], arches: ['x86_64'], capacity: 1 });
    prio = await farm.addSlave({ name: 'prio', channels: ['prio'], arches: ['x86_64'], capacity: 1 });
  });
  after(async function () {
    await farm?.stop();
  });

  it('sends each job only to a slave of its channel and arch, and never runs more than a slave\'s capacity at once', async function () {
    const runs = new RunLog(farm, 'match');
    const script = [runs.line('start'), 'echo "ran on $BUILDER_CHANNEL/$BUILDER_ARCH"', 'sleep 0.3', runs.line('end')].join('\n');
    const plan: Array<{ channel: string; arch: string; slots?: number; expect: FarmSlave }> = [
      ...Array.from({ length: 8 }, () => ({ channel: 'main', arch: 'x86_64', expect: amd })),
      { channel: 'main', arch: 'x86_64', slots: 2, expect: amd },
      ...Array.from({ length: 3 }, () => ({ channel: 'main', arch: 'aarch64', expect: arm })),
      ...Array.from({ length: 2 }, () => ({ channel: 'main', arch: 'noarch', expect: arm })),
      ...Array.from({ length: 3 }, () => ({ channel: 'other', arch: 'x86_64', expect: other })),
      ...Array.from({ length: 2 }, () => ({ channel: 'extra', arch: 'x86_64', expect: other })),
    ];
    const jobs: Array<(typeof plan)[number] & { id: number }> = [];
    for (const p of plan) {
      const j = await farm.submitScript(script, { name: `match-${p.channel}-${p.arch}`, channel: p.channel, arch: p.arch, ...(p.slots ? { slots: p.slots } : {}) });
      jobs.push({ ...p, id: j.id });
    }
    // One that no slave can take: it stays queued and says why.
    const stranded = await farm.submitScript('true', { name: 'stranded', channel: 'main', arch: 'riscv64' });

    const done = await farm.waitJobs(jobs.map((j) => j.id), 60_000);
    for (const j of jobs) {
      const d = done.get(j.id)!;
      assert.equal(d.job.state, 'succeeded', `job ${j.id}: ${d.job.state} ${String(d.job.reason)}`);
      assert.equal(d.job.slave, j.expect.name, `job ${j.id} (${j.channel}/${j.arch}) ran on ${String(d.job.slave)}`);
      assert.deepEqual(
        d.attempts.map((a) => a.slave),
        [j.expect.name],
      );
      const log = Buffer.concat((await farm.readLog(j.id)).flatMap((r) => (r.kind === 'data' ? [Buffer.from(r.data)] : []))).toString();
      assert.equal(log, `ran on ${j.channel}/${j.arch}\n`);
    }

    // The jobs' own record agrees: each ran once, in a work dir of the expected slave.
    const lines = await runs.read();
    for (const j of jobs) {
      const mine = lines.filter((l) => l.jobId === j.id);
      assert.deepEqual(mine.map((l) => l.event), ['start', 'end'], `job ${j.id} ran ${mine.length / 2} times`);
      assert.ok(mine[0]!.workdir.startsWith(`${j.expect.dir}/`), `job ${j.id} ran in ${mine[0]!.workdir}`);
    }

    // The slaves' own records: never more slots than capacity; the 2-slot slave did use both.
    for (const s of [amd, arm, other]) {
      const rec = await readSlotRecord(s.dir);
      assert.ok(rec.length > 0, `slave ${s.name} kept no record`);
      const max = maxConcurrentSlots(rec);
      assert.ok(max <= s.spec.capacity, `slave ${s.name} ran ${max} slots at once with capacity ${s.spec.capacity}`);
      for (const e of slotEvents(rec)) assert.ok(e.usedAfter >= 0 && e.usedAfter <= s.spec.capacity, JSON.stringify(e));
    }
    assert.equal(maxConcurrentSlots(await readSlotRecord(amd.dir)), 2, 'the 2-slot slave never ran two slots at once');

    // And the processes themselves never overlapped beyond capacity (from the jobs' timestamps).
    for (const s of [amd, arm, other]) {
      const events = lines
        .filter((l) => l.workdir.startsWith(`${s.dir}/`))
        .map((l) => ({ at: l.atNs, d: (l.event === 'start' ? 1 : -1) * (jobs.find((j) => j.id === l.jobId)?.slots ?? 1) }))
        .sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.d - b.d));
      let used = 0;
      for (const e of events) {
        used += e.d;
        assert.ok(used <= s.spec.capacity, `jobs on ${s.name} overlapped beyond its capacity`);
      }
    }

    const st = await farm.getJob(stranded.id);
    assert.equal(st.job.state, 'queued');
    assert.ok(st.waiting, 'a stranded job must say why it waits');
    assert.match(st.waiting, /riscv64/);
    const c = await farm.call('job.cancel', { id: stranded.id });
    assert.equal(c.job.state, 'cancelled');
  });

  it('runs a 1-slot slave\'s queue by priority, then by age', async function () {
    const gate = new Gate(farm, 'prio');
    const runs = new RunLog(farm, 'prio');
    const blocker = await farm.submitScript(gate.waitLine(), { name: 'blocker', channel: 'prio', priority: 100 });
    await farm.waitJob(blocker.id, ['running']);
    // Queued behind the blocker, in this order of submission.
    const priorities = [1, 5, 3, 5, 0, 10, -2, 3];
    const ids: number[] = [];
    for (const [i, p] of priorities.entries()) {
      const j = await farm.submitScript(runs.line('start'), { name: `prio-${i}`, channel: 'prio', priority: p });
      ids.push(j.id);
    }
    for (const id of ids) assert.equal((await farm.getJob(id)).job.state, 'queued');
    await gate.open();
    await farm.waitJobs([blocker.id, ...ids], 30_000);

    // Expected: highest priority first; equal priorities in submission order.
    const expected = priorities
      .map((p, i) => ({ p, i, id: ids[i]! }))
      .sort((a, b) => b.p - a.p || a.i - b.i)
      .map((x) => x.id);
    const ran = (await runs.read()).map((l) => l.jobId);
    assert.deepEqual(ran, expected);
    // The slave's own record shows the same order of starts.
    const starts = slotEvents(await readSlotRecord(prio.dir))
      .filter((e) => e.event === 'start')
      .map((e) => e.key);
    assert.equal(starts.length, 1 + ids.length);
    assert.deepEqual(
      starts.slice(1).map((k) => Number(k.split('-')[0])),
      expected,
    );
  });
});
