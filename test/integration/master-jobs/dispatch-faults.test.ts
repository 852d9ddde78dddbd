import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, runningOnNewSlave, sqlRun, waitJob, writeLock } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('master jobs: the dispatcher against store faults and races', function () {
  this.timeout(40_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let admin: RpcPeer;
  afterEach(async function () {
    await farm?.close();
  });

  it('when a dispatch write fails once, dispatches the job again shortly and does not count it against the slave', async function () {
    ({ farm, client } = await jobFarm({ acceptTimeoutMs: 300 }));
    const { s, j: a } = await runningOnNewSlave(farm, client);
    const file = farm.master.jobs.store.options.file;
    // A transient failure of the queued -> dispatched write (as SQLITE_IOERR / SQLITE_FULL would be).
    await sqlRun(file, `CREATE TRIGGER test_no_dispatch BEFORE UPDATE ON jobs WHEN NEW.state = 'dispatched' AND NEW.name = 'doomed' BEGIN SELECT RAISE(ABORT, 'injected'); END`);
    const { job: d } = await client.call('job.submit', { job: job({ name: 'doomed' }) });
    assert.equal(d.state, 'queued');
    await s.finish(a.id, 1);
    await sleep(500);
    await sqlRun(file, `DROP TRIGGER test_no_dispatch`);
    const sched = farm.master.jobs.sched;
    await waitJob(client, d.id, (x) => x.state !== 'queued', `dispatched again (dispatcher phase: ${String(sched.phaseOf(d.id))})`, 5_000);
    await s.nextAssign(d.id);
    assert.equal(sched.slave('w1')!.setupFailures, 0);
    const ev = await farm.master.jobs.store.listEvents({ jobId: d.id });
    assert.ok(!ev.some((e) => e.to === 'queued' && e.from !== null), `no requeue: ${JSON.stringify(ev.map((e) => [e.from, e.to]))}`);
  });

  it('does not let a reconnect’s subscribe undo an admin drain made while it ran', async function () {
    ({ farm, client, admin } = await jobFarm());
    const { s, j } = await runningOnNewSlave(farm, client, 'w1', 2);
    // Reads of the reported job are slow (a busy reader connection): widens the reconcile's window.
    const store = farm.master.jobs.store;
    const realGet = store.getJob.bind(store);
    (store as unknown as { getJob: typeof store.getJob }).getJob = async (id: number) => {
      if (id === j.id) await sleep(400);
      return realGet(id);
    };
    await s.connect();
    const sub = s.subscribe({ capacity: 2, running: [{ jobId: j.id, attempt: 1, slots: 1 }] });
    await sleep(150);
    await admin.call('slave.drain', { name: 'w1', drained: true });
    const r = await sub;
    assert.deepEqual(r.keep.map((k) => k.jobId), [j.id]);
    const status = (await admin.call('slave.status', {})).slaves.find((x) => x.name === 'w1')!;
    assert.equal(status.drained, true, 'the store says drained');
    const { job: k } = await client.call('job.submit', { job: job({ name: 'after-drain' }) });
    assert.equal(k.state, 'queued', `job ${k.id} was dispatched to the drained slave w1 (dispatcher: drained=${farm.master.jobs.sched.slave('w1')!.drained})`);
  });

  it('leaves running an attempt the slave accepted in time whose start commit was slow: not requeued, not a setup failure', async function () {
    ({ farm, client } = await jobFarm({ acceptTimeoutMs: 300, store: { busyTimeoutMs: 30_000 } }));
    const file = farm.master.jobs.store.options.file;
    const s = await TestSlave.enroll(farm, 'w1');
    s.peer = await farm.connect(s.identity);
    const got: number[] = [];
    let lock: { release(): Promise<void> } | undefined;
    s.peer
      .handle('attempt.assign', async (p) => {
        got.push(p.jobId);
        // The store is slow to commit the start (held here by another connection's write lock).
        if (lock === undefined) lock = await writeLock(file);
        return { accepted: true as const };
      })
      .handle('attempt.cancel', () => ({ found: true }));
    await s.subscribe({ capacity: 1 });
    const { job: j } = await client.call('job.submit', { job: job({ name: 'slow-start' }) });
    const sched = farm.master.jobs.sched;
    // The dispatcher's accept deadline (300 + 300 ms) passes while the start commit waits.
    await sleep(1_200);
    assert.equal(sched.phaseOf(j.id), 'assigned', 'reported, not freed');
    assert.equal(sched.slave('w1')!.used, 1);
    await lock!.release();
    await waitJob(client, j.id, (x) => x.state !== 'dispatched', 'start committed');
    const ev = await farm.master.jobs.store.listEvents({ jobId: j.id });
    const trail = ev.map((e) => `${e.from ?? '-'}>${e.to}#${e.attempt} ${e.reason ?? ''}`.trim());
    // The slave accepted attempt 1 in time (the master's own commit was slow): it is not a setup failure of w1,
    // and a running attempt is not requeued as "did not accept".
    assert.ok(!trail.some((t) => /did not accept attempt 1 in time/.test(t)), `events: ${JSON.stringify(trail)}; w1 setupFailures=${sched.slave('w1')!.setupFailures}`);
    assert.equal(sched.slave('w1')!.setupFailures, 0);
    assert.equal(got.length, 1, 'one assignment');
    assert.equal((await client.call('job.get', { id: j.id })).job.state, 'running');
  });

  it('drains a slave after a restart, before it reconnects with its restored jobs', async function () {
    ({ farm, client } = await jobFarm({ slaveGraceMs: 10_000 }));
    await runningOnNewSlave(farm, client);
    await farm.restart();
    const adm = await farm.connect(await farm.identity('root2', 'admin'));
    await adm.call('slave.drain', { name: 'w1', drained: true });
    const st = (await adm.call('slave.status', {})).slaves.find((x) => x.name === 'w1')!;
    assert.equal(st.drained, true);
  });

  it('takes back an assignment not accepted in time once the store recovers, when taking it back failed for a while', async function () {
    ({ farm, client } = await jobFarm({ acceptTimeoutMs: 300 }));
    const file = farm.master.jobs.store.options.file;
    const s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe({ capacity: 1 });
    s.mode = 'ignore';
    // Every requeue of 'doomed' fails for a while (as SQLITE_IOERR / SQLITE_FULL would).
    await sqlRun(file, `CREATE TRIGGER test_no_requeue BEFORE UPDATE ON jobs WHEN NEW.state IN ('queued','failed') AND OLD.state = 'dispatched' AND NEW.name = 'doomed' BEGIN SELECT RAISE(ABORT, 'injected'); END`);
    const { job: d } = await client.call('job.submit', { job: job({ name: 'doomed' }) });
    // The RPC accept timeout (300 ms) and the dispatcher's accept deadline (600 ms) both pass, and
    // every try to take the assignment back fails.
    await sleep(2_500);
    await sqlRun(file, `DROP TRIGGER test_no_requeue`);
    s.mode = 'accept';
    const sched = farm.master.jobs.sched;
    // Taken back once the store lets it (a setup failure of w1), and run again, on w1 (the only slave).
    await waitJob(client, d.id, (x) => x.attempt === 2 && x.state === 'running', `job ${d.id} taken back and run again (dispatcher phase ${String(sched.phaseOf(d.id))})`, 8_000);
    const g = await client.call('job.get', { id: d.id });
    assert.match(g.attempts[0]!.reason ?? '', /did not accept attempt 1/);
    // One slot, held by attempt 2 alone: a job submitted now waits.
    assert.equal(sched.slave('w1')!.used, 1);
    const { job: k } = await client.call('job.submit', { job: job({ name: 'next' }) });
    assert.equal(k.state, 'queued');
  });

  it('does not lose a job whose dispatch write failed when its slave reconnects during the retry wait', async function () {
    ({ farm, client } = await jobFarm({ acceptTimeoutMs: 300 }));
    const file = farm.master.jobs.store.options.file;
    const { s, j: a } = await runningOnNewSlave(farm, client);
    await sqlRun(file, `CREATE TRIGGER test_no_dispatch BEFORE UPDATE ON jobs WHEN NEW.state = 'dispatched' AND NEW.name = 'doomed' BEGIN SELECT RAISE(ABORT, 'injected'); END`);
    const { job: d } = await client.call('job.submit', { job: job({ name: 'doomed' }) });
    assert.equal(d.state, 'queued');
    await s.finish(a.id, 1);
    await sleep(200);
    await sqlRun(file, `DROP TRIGGER test_no_dispatch`);
    // A network blip: the slave reconnects within the 1 s retry wait.
    const closed = once(s.peer, 'close');
    s.peer.destroy();
    await closed;
    await s.connect();
    await s.subscribe({ capacity: 1 });
    const sched = farm.master.jobs.sched;
    await waitJob(client, d.id, (x) => x.state !== 'queued', `job ${d.id} dispatched (dispatcher phase: ${String(sched.phaseOf(d.id))}, queuedCount=${sched.queuedCount})`, 8_000);
  });
});
