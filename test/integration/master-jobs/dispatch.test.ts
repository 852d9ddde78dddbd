import assert from 'node:assert/strict';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import sqlite3 from 'sqlite3';
import { TestSlave, job, jobFarm, rejectsWith, runningOnNewSlave, waitJob } from './helpers.js';

/** Runs one statement on the master's database through a connection of its own, as another process would. */
function sqlRun(file: string, sql: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, sqlite3.OPEN_READWRITE, (err) => {
      if (err) return reject(err);
      db.run(sql, (e) => db.close(() => (e ? reject(e) : resolve())));
    });
  });
}

describe('master jobs: dispatch, accept, cancel, timeouts', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;

  beforeEach(async function () {
    ({ farm, client } = await jobFarm());
  });
  afterEach(async function () {
    await farm.close();
  });

  describe('when a job is submitted and a matching slave is subscribed', function () {
    it('assigns it, marks it running on acceptance, and finishes it with the slave’s result', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      assert.deepEqual(await s.subscribe(), { keep: [], abandon: [] });
      const { job: j } = await client.call('job.submit', { job: job({ env: { A: 'b' }, timeoutMs: 60_000 }) });
      // A slot was free: the job was stored already dispatched to it.
      assert.equal(j.state, 'dispatched');
      assert.equal(j.slave, 'w1');
      const a = await s.nextAssign(j.id);
      assert.deepEqual({ attempt: a.attempt, name: a.name, channel: a.channel, arch: a.arch, env: a.env, timeoutMs: a.timeoutMs }, {
        attempt: 1,
        name: 'hello',
        channel: 'stable',
        arch: 'x86_64',
        env: { A: 'b' },
        timeoutMs: 60_000,
      });
      await waitJob(client, j.id, (x) => x.state === 'running', 'running');
      await s.log(j.id, 1, [{ kind: 'end', seq: 1 }]);
      await s.finish(j.id, 1, { state: 'failed', exitCode: 3, reason: 'exit code 3' });
      const done = await client.call('job.get', { id: j.id });
      assert.equal(done.job.state, 'failed');
      assert.equal(done.job.exitCode, 3);
      assert.equal(done.attempts.length, 1);
      assert.equal(done.attempts[0]!.slave, 'w1');
      assert.equal(done.waiting, null);
    });

    it('does not send a job to a slave of another channel or arch, and says why it waits', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ channels: ['testing'], arches: ['aarch64'] });
      const { job: j } = await client.call('job.submit', { job: job() });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(s.assigned.length, 0);
      const g = await client.call('job.get', { id: j.id });
      assert.equal(g.job.state, 'queued');
      assert.match(g.waiting ?? '', /no slave subscribed to channel stable with arch x86_64/);
    });
  });

  describe('when a job is submitted while a matching slot is free', function () {
    it('stores it already dispatched in one commit, then sends the assignment', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 1 });
      const store = farm.master.jobs.store;
      const before = store.commits;
      const { job: j } = await client.call('job.submit', { job: job() });
      // The reply comes after that one commit: the row is dispatched, attempt 1, on w1.
      assert.deepEqual([j.state, j.attempt, j.slave, j.dispatchedAt], ['dispatched', 1, 'w1', j.createdAt]);
      await s.nextAssign(j.id);
      await waitJob(client, j.id, (x) => x.state === 'running', 'running');
      // Create + dispatch in one commit, then the start: two commits, where it took three.
      assert.equal(store.commits - before, 2);
      const ev = await store.listEvents({ jobId: j.id });
      assert.deepEqual(ev.map((e) => `${e.from ?? '-'}>${e.to}#${e.attempt}`), ['->queued#0', 'queued>dispatched#1', 'dispatched>running#1']);
      // The slot is taken: the next job waits, and is dispatched (the usual way) once the first ends.
      const { job: k } = await client.call('job.submit', { job: job() });
      assert.equal(k.state, 'queued');
      await s.finish(j.id, 1);
      await s.nextAssign(k.id);
      await waitJob(client, k.id, (x) => x.state === 'running', 'running');
      assert.equal(farm.master.jobs.sched.slave('w1')!.used, 1);
    });

    it('when that write fails, gives the slot back and stores the job queued; when storing fails at all, the client gets the error and the slot stays free', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 1 });
      const file = farm.master.jobs.store.options.file;
      // Real SQLite failures, from triggers added by another connection as another process could.
      await sqlRun(file, `CREATE TRIGGER test_no_direct BEFORE INSERT ON jobs WHEN NEW.state = 'dispatched' AND NEW.name = 'doomed' BEGIN SELECT RAISE(ABORT, 'injected'); END`);
      await sqlRun(file, `CREATE TRIGGER test_refuse BEFORE INSERT ON jobs WHEN NEW.name = 'refused' BEGIN SELECT RAISE(ABORT, 'injected'); END`);
      const { job: d } = await client.call('job.submit', { job: job({ name: 'doomed' }) });
      assert.deepEqual([d.state, d.attempt, d.slave], ['queued', 0, null]);
      // The capacity-1 slave gets it: the slot taken for the failed write was given back.
      const a = await s.nextAssign(d.id);
      assert.equal(a.attempt, 1);
      await waitJob(client, d.id, (x) => x.state === 'running', 'running');
      await s.finish(d.id, 1);
      assert.equal((await client.call('job.get', { id: d.id })).job.state, 'succeeded');

      // An internal error, without the SQL text.
      await assert.rejects(client.call('job.submit', { job: job({ name: 'refused' }) }), (e: unknown) => e instanceof Error && /internal error/.test(e.message) && !/injected|INSERT/.test(e.message));
      assert.deepEqual((await client.call('job.list', {})).jobs.map((x) => x.name), ['doomed']);
      assert.equal(farm.master.jobs.sched.slave('w1')!.used, 0);
      const { job: ok } = await client.call('job.submit', { job: job({ name: 'after' }) });
      assert.equal(ok.state, 'dispatched');
      await s.nextAssign(ok.id);
    });

    it('after a restart between that commit and the slave’s answer, runs the job once, as attempt 2', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 1 });
      s.mode = 'ignore';
      const { job: j } = await client.call('job.submit', { job: job() });
      assert.equal(j.state, 'dispatched');
      // The store has it dispatched to w1, which never answers; the master goes down.
      await farm.restart();
      assert.equal((await farm.master.jobs.store.getJob(j.id))?.state, 'dispatched');
      s.mode = 'accept';
      await s.connect();
      // w1 comes back without it: the attempt is over, and the job runs again (on w1, the only slave).
      await s.subscribe({ capacity: 1 });
      const a = await s.nextAssign(j.id);
      assert.equal(a.attempt, 2);
      const c2 = await farm.connect(await farm.identity('bob', 'client'));
      await waitJob(c2, j.id, (x) => x.state === 'running', 'running');
      await s.finish(j.id, 2);
      const g = await c2.call('job.get', { id: j.id });
      assert.equal(g.job.state, 'succeeded');
      assert.deepEqual(g.attempts.map((x) => `${x.attempt} ${x.state}`), ['1 requeued', '2 succeeded']);
      assert.equal(s.assigned.filter((x) => x.jobId === j.id).length, 1, 'only attempt 2 was accepted');
    });
  });

  describe('when jobs end at once (the slave reports in the turn after it accepts)', function () {
    it('runs each once: the report waits for the start being committed, and every log reads back', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      const data = (seq: number, x: string) => ({ kind: 'data' as const, seq, stream: 'stdout' as const, data: Buffer.from(x) });
      const reports: Array<Promise<unknown>> = [];
      s.peer.handle('attempt.assign', (a) => {
        // Even jobs print a line (an attempt.log first); odd ones print nothing (the end is seq 1).
        setImmediate(() => {
          const quiet = a.jobId % 2 === 1;
          const sent = quiet ? Promise.resolve() : s.log(a.jobId, a.attempt, [data(1, `job ${a.jobId}\n`)]);
          reports.push(sent.then(() => s.finish(a.jobId, a.attempt, { logEnd: quiet ? 1 : 2 })));
        });
        return { accepted: true as const };
      });
      await s.subscribe({ capacity: 8 });
      const ids: number[] = [];
      for (let i = 0; i < 40; i++) ids.push((await client.call('job.submit', { job: job() })).job.id);
      for (const id of ids) {
        const { job: j, attempts } = await waitJob(client, id, (x) => x.state === 'succeeded', 'succeeded');
        assert.equal(j.attempt, 1);
        assert.equal(attempts.length, 1);
        assert.ok(j.startedAt !== null && j.endedAt !== null && j.startedAt <= j.endedAt);
        const r = await client.call('log.read', { jobId: id });
        assert.equal(r.ended, true);
        assert.equal(Buffer.concat(r.records.map((x) => (x.kind === 'data' ? Buffer.from(x.data) : Buffer.alloc(0)))).toString(), id % 2 === 1 ? '' : `job ${id}\n`);
      }
      await Promise.all(reports);
    });
  });

  describe('when the slave does not answer the assignment within the accept timeout', function () {
    it('takes the job back and, with no attempt left, fails it with the reason', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      s.mode = 'ignore';
      await s.subscribe();
      const { job: j } = await client.call('job.submit', { job: job({ maxAttempts: 1 }) });
      const g = await waitJob(client, j.id, (x) => x.state === 'failed', 'failed after the accept timeout');
      assert.match(g.job.reason ?? '', /did not accept attempt 1/);
      assert.equal(g.attempts[0]!.state, 'requeued');
      assert.equal(g.attempts[0]!.setupFailure, true);
    });

    it('requeues it when attempts remain, and a refusing slave counts toward quarantine', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      s.mode = 'refuse';
      await s.subscribe();
      const { job: j } = await client.call('job.submit', { job: job({ maxAttempts: 3 }) });
      const g = await waitJob(client, j.id, (x) => x.state === 'failed', 'failed after three refusals');
      assert.equal(g.attempts.length, 3);
      assert.ok(g.attempts.every((a) => a.setupFailure));
      const st = await client.call('slave.status', {});
      assert.ok((st.slaves[0]!.quarantinedUntil ?? 0) > Date.now(), 'three setup failures in a row quarantine the slave');
    });
  });

  describe('when a running job is cancelled', function () {
    /**
     * A job running on a slave of one slot; with `longKillDeadline`, on a fresh farm whose kill
     * deadline is a minute (a slot must then come back with the slave's report, not the deadline).
     */
    async function oneSlotRunning(longKillDeadline = false): Promise<{ s: TestSlave; j: { id: number } }> {
      if (longKillDeadline) {
        await farm.close();
        ({ farm, client } = await jobFarm({ cancelTimeoutMs: 60_000 }));
      }
      return runningOnNewSlave(farm, client);
    }

    it('cancels it in the store, kills it on the slave, and refuses the slave’s late finish quietly', async function () {
      const { s, j } = await oneSlotRunning();
      const c = await client.call('job.cancel', { id: j.id });
      assert.equal(c.job.state, 'cancelled');
      await s.until(() => s.cancels.some((x) => x.jobId === j.id && x.reason === 'cancelled'), 'attempt.cancel');
      // Its slot stays taken while the slave is still killing it...
      const { job: k } = await client.call('job.submit', { job: job() });
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(s.assigned.filter((a) => a.jobId === k.id).length, 0);
      // ...until the slave reports the kill: accepted (nothing changes), the job stays cancelled.
      await s.finish(j.id, 1, { state: 'cancelled', exitCode: null, signal: 'SIGTERM' });
      assert.equal((await client.call('job.get', { id: j.id })).job.state, 'cancelled');
      await rejectsWith(client.call('job.cancel', { id: j.id }), 'BUILDER_ERR_BAD_STATE', /already cancelled/);
      await s.nextAssign(k.id);
    });

    it('frees the slot at the slave’s report also when the cancel commits while that report is being filed', async function () {
      const { s, j } = await oneSlotRunning(true);
      const art = await s.upload(j.id, 1, 'out.bin', Buffer.from('output'));
      // The report's artifact is being recorded (held here) when a user cancels the job.
      const store = farm.master.jobs.store;
      const addArtifact = store.addArtifact.bind(store);
      let open!: () => void;
      const opened = new Promise<void>((r) => (open = r));
      let entered!: () => void;
      const held = new Promise<void>((r) => (entered = r));
      store.addArtifact = async (a) => {
        entered();
        await opened;
        return addArtifact(a);
      };
      const report = s.finish(j.id, 1, { state: 'succeeded', exitCode: 0, artifacts: [{ path: 'out.bin', ...art }] });
      await held;
      assert.equal((await client.call('job.cancel', { id: j.id })).job.state, 'cancelled');
      await s.until(() => s.cancels.some((x) => x.jobId === j.id), 'attempt.cancel');
      open();
      await report;
      assert.equal((await client.call('job.get', { id: j.id })).job.state, 'cancelled');
      const { job: k } = await client.call('job.submit', { job: job() });
      await s.nextAssign(k.id, 10_000);
    });

    it('frees the slot at the slave’s report also when that report comes before the slave answered the cancel', async function () {
      const { s, j } = await oneSlotRunning(true);
      // As a real slave does: the cancel is answered (found) only after the attempt's report went out.
      let reported!: () => void;
      const reportSent = new Promise<void>((r) => (reported = r));
      s.peer.handle('attempt.cancel', async (p) => {
        s.cancels.push(p);
        await reportSent;
        await new Promise((res) => setTimeout(res, 100));
        return { found: true };
      });
      assert.equal((await client.call('job.cancel', { id: j.id })).job.state, 'cancelled');
      await s.until(() => s.cancels.some((x) => x.jobId === j.id), 'attempt.cancel');
      await s.finish(j.id, 1, { state: 'cancelled', exitCode: null, signal: 'SIGTERM' });
      reported();
      const { job: k } = await client.call('job.submit', { job: job() });
      await s.nextAssign(k.id, 10_000);
    });
  });

  describe('when the slave never reports a job past its timeout', function () {
    it('times it out on the master and tells the slave to kill it', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const { job: j } = await client.call('job.submit', { job: job({ timeoutMs: 200 }) });
      await s.nextAssign(j.id);
      const g = await waitJob(client, j.id, (x) => x.state === 'timed_out', 'timed out on the master');
      assert.match(g.job.reason ?? '', /master-side timeout/);
      await s.until(() => s.cancels.some((x) => x.jobId === j.id && x.reason === 'timed_out'), 'attempt.cancel timed_out');
    });
  });

  describe('when a slave reports for an attempt that is not current', function () {
    it('refuses it with BUILDER_ERR_BAD_STATE, and an unknown job with NOT_FOUND', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const other = await TestSlave.enroll(farm, 'w2');
      await other.connect();
      await other.subscribe({ channels: ['other'] });
      const { job: j } = await client.call('job.submit', { job: job() });
      await s.nextAssign(j.id);
      await rejectsWith(s.finish(j.id, 2), 'BUILDER_ERR_BAD_STATE', /attempt 2 of job/);
      await rejectsWith(other.finish(j.id, 1), 'BUILDER_ERR_BAD_STATE', /not held by w2/);
      await rejectsWith(other.log(j.id, 1, [{ kind: 'end', seq: 1 }]), 'BUILDER_ERR_BAD_STATE');
      await rejectsWith(s.log(999, 1, [{ kind: 'end', seq: 1 }]), 'BUILDER_ERR_NOT_FOUND', /no job 999/);
      await rejectsWith(s.finish(999, 1), 'BUILDER_ERR_NOT_FOUND');
      // Nothing was lost: the real holder finishes normally.
      await s.finish(j.id, 1);
      assert.equal((await client.call('job.get', { id: j.id })).job.state, 'succeeded');
    });

    it('refuses job methods to the wrong role', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await assert.rejects(s.peer.call('job.submit', { job: job() }), /role slave may not call job.submit/);
      await assert.rejects(client.call('slave.subscribe', { channels: ['a'], arches: ['b'], capacity: 1, draining: false, running: [] }), /role client may not/);
      await assert.rejects(client.call('slave.drain', { name: 'w1', drained: true }), /role client may not/);
    });
  });
});
