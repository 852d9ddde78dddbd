import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { loadIdentity } from '../../../pki/index.js';
import { connectRpc, mutualTlsClientOptions } from '../../../protocol/index.js';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, text, waitJob } from './helpers.js';

describe('master jobs: slaves that leave and come back', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;

  beforeEach(async function () {
    ({ farm, client } = await jobFarm({ slaveGraceMs: 1_500 }));
  });
  afterEach(async function () {
    await farm.close();
  });

  async function running(s: TestSlave) {
    const { job: j } = await client.call('job.submit', { job: job() });
    await s.nextAssign(j.id);
    await waitJob(client, j.id, (x) => x.state === 'running', 'running');
    return j.id;
  }

  /** The store's next read of job `id` fails (as one SQLITE_IOERR would); the returned call puts the store back. */
  function failGetJobOnce(id: number): () => void {
    const store = farm.master.jobs.store;
    const real = store.getJob.bind(store);
    let failed = false;
    (store as unknown as { getJob: typeof store.getJob }).getJob = async (jid: number) => {
      if (!failed && jid === id) {
        failed = true;
        throw new Error('SQLITE_IOERR: disk I/O error (injected)');
      }
      return real(jid);
    };
    return () => {
      (store as unknown as { getJob: typeof store.getJob }).getJob = real;
    };
  }

  async function drop(s: TestSlave): Promise<void> {
    const closed = once(s.peer, 'close');
    s.peer.destroy();
    await closed;
  }

  describe("when a slave's connection closes while the master is still handling its subscribe", function () {
    it('does not keep it as a connected slave: a job for its channel waits instead of failing on it', async function () {
      // The slave reaches the master through a TCP hop that can reset the master's side of the
      // connection: an abrupt close (as when the slave's host dies), not an orderly half-close
      // (after which the master still answers what it was asked).
      const [host, port] = [farm.mainAddress.slice(0, farm.mainAddress.lastIndexOf(':')), Number(farm.mainAddress.slice(farm.mainAddress.lastIndexOf(':') + 1))];
      const upstreams: Socket[] = [];
      const hop = createServer((c) => {
        const u = connect(port, host);
        upstreams.push(u);
        c.pipe(u).pipe(c);
        c.on('error', () => u.destroy());
        u.on('error', () => c.destroy());
      });
      await new Promise<void>((r) => hop.listen(0, '127.0.0.1', () => r()));
      try {
        const id = await loadIdentity(await farm.enroll('ghost'));
        const peer = await connectRpc({ tls: mutualTlsClientOptions(id, '127.0.0.1', (hop.address() as AddressInfo).port), remote: { role: 'master', name: 'master' } });
        // Fifty unknown attempts make the master read the store fifty times before it registers the slave.
        const running = Array.from({ length: 50 }, (_, i) => ({ jobId: 100_000 + i, attempt: 1, slots: 1 }));
        const sub = peer.call('slave.subscribe', { channels: ['stable'], arches: ['x86_64'], capacity: 2, draining: false, running }).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 5));
        for (const u of upstreams) u.resetAndDestroy();
        peer.destroy();
        await sub;
        await new Promise((r) => setTimeout(r, 300));
        const { job: j } = await client.call('job.submit', { job: job() });
        await new Promise((r) => setTimeout(r, 500));
        const g = await client.call('job.get', { id: j.id });
        assert.equal(g.job.state, 'queued', `job ${j.id}: ${g.job.state} after ${g.job.attempt} attempts (${String(g.job.reason)})`);
        assert.equal(g.job.attempt, 0, 'never assigned to the closed connection');
        // A real slave that comes later gets it.
        const w = await TestSlave.enroll(farm, 'w2');
        await w.connect();
        await w.subscribe();
        await w.nextAssign(j.id);
      } finally {
        await new Promise<void>((r) => hop.close(() => r()));
      }
    });
  });

  describe('when a slave reconnects within the grace period and reports its attempt', function () {
    it('keeps the job, answers the next log seq to send, and the job finishes without a rerun', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const id = await running(s);
      await s.log(id, 1, [
        { kind: 'data', seq: 1, stream: 'stdout', data: Buffer.from('one\n') },
        { kind: 'data', seq: 2, stream: 'stderr', data: Buffer.from('two\n') },
      ]);
      await drop(s);
      await s.connect();
      const r = await s.subscribe({ running: [{ jobId: id, attempt: 1, slots: 1 }] });
      assert.deepEqual(r, { keep: [{ jobId: id, attempt: 1, nextSeq: 3 }], abandon: [] });
      // The slave resends from its spool, including a record the master has: it is skipped.
      await s.log(id, 1, [
        { kind: 'data', seq: 2, stream: 'stderr', data: Buffer.from('two\n') },
        { kind: 'data', seq: 3, stream: 'stdout', data: Buffer.from('three\n') },
        { kind: 'end', seq: 4 },
      ]);
      await s.finish(id, 1);
      // Past the grace period nothing is requeued.
      await new Promise((res) => setTimeout(res, 1_800));
      const g = await client.call('job.get', { id });
      assert.equal(g.job.state, 'succeeded');
      assert.equal(g.job.attempt, 1);
      assert.equal(s.assigned.filter((a) => a.jobId === id).length, 1);
      const log = await client.call('log.read', { jobId: id });
      assert.equal(text(log.records), 'one\ntwo\nthree\n');
      assert.equal(log.ended, true);
    });

    it('tells it to abandon an attempt the master no longer gives it, and requeues one it no longer reports', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const id = await running(s);
      await drop(s);
      await s.connect();
      // It comes back without the job (it restarted) and reports one it never had.
      const r = await s.subscribe({ running: [{ jobId: 4242, attempt: 1, slots: 1 }] });
      assert.deepEqual(r.keep, []);
      assert.deepEqual(r.abandon.map((a) => a.jobId), [4242]);
      assert.match(r.abandon[0]!.reason, /no job 4242/);
      // The lost job is requeued at once and assigned again (attempt 2).
      const a = await s.until(() => s.assigned.some((x) => x.jobId === id && x.attempt === 2), 'attempt 2');
      void a;
      const g = await client.call('job.get', { id });
      assert.equal(g.attempts[0]!.state, 'requeued');
      assert.match(g.attempts[0]!.reason ?? '', /came back without attempt 1/);
    });
  });

  describe('when a slave does not come back within the grace period', function () {
    it('requeues its job (attempt + 1) to another slave; the old slave is told to abandon it', async function () {
      const s1 = await TestSlave.enroll(farm, 'w1');
      await s1.connect();
      await s1.subscribe();
      const id = await running(s1);
      const s2 = await TestSlave.enroll(farm, 'w2');
      await s2.connect();
      await s2.subscribe();
      const t0 = Date.now();
      await drop(s1);
      const a = await s2.nextAssign(id, 10_000);
      assert.ok(Date.now() - t0 >= 1_000, 'not before the grace period');
      assert.equal(a.attempt, 2);
      await s1.connect();
      const r = await s1.subscribe({ running: [{ jobId: id, attempt: 1, slots: 1 }] });
      assert.deepEqual(r.keep, []);
      assert.match(r.abandon[0]!.reason, /not the current attempt/);
      await s2.finish(id, 2);
      const g = await client.call('job.get', { id });
      assert.equal(g.job.state, 'succeeded');
      assert.deepEqual(g.attempts.map((x) => [x.slave, x.state]), [['w1', 'requeued'], ['w2', 'succeeded']]);
    });

    it('requeues its job also when its re-subscribe failed on the master before it went away for good', async function () {
      const s1 = await TestSlave.enroll(farm, 'w1');
      await s1.connect();
      await s1.subscribe();
      const id = await running(s1);
      await drop(s1);
      // One transient store error while the master handles the re-subscribe (after it stopped
      // the grace period): the slave then never comes back.
      const restore = failGetJobOnce(id);
      await s1.connect();
      await assert.rejects(s1.subscribe({ running: [{ jobId: id, attempt: 1, slots: 1 }] }));
      restore();
      await drop(s1);
      const s2 = await TestSlave.enroll(farm, 'w2');
      await s2.connect();
      await s2.subscribe();
      const a = await s2.nextAssign(id, 10_000);
      assert.equal(a.attempt, 2);
    });

    it('takes a slave whose new connection replaced a live one, and whose re-subscribe then failed, as gone: a job for it waits', async function () {
      const s1 = await TestSlave.enroll(farm, 'w1');
      await s1.connect();
      await s1.subscribe();
      const id = await running(s1);
      const restore = failGetJobOnce(id);
      // A second connection while the first is still registered (a half-open one the slave gave up on).
      const old = s1.peer;
      await s1.connect();
      await assert.rejects(s1.subscribe({ running: [{ jobId: id, attempt: 1, slots: 1 }] }));
      restore();
      old.destroy();
      const { job: k } = await client.call('job.submit', { job: job({ name: 'waits' }) });
      await new Promise((r) => setTimeout(r, 300));
      const g = await client.call('job.get', { id: k.id });
      // Not sent to a connection that is not there, again and again, each costing an attempt.
      assert.equal(g.job.state, 'queued');
      assert.equal(g.job.attempt, 0);
      assert.match(g.waiting ?? '', /is connected/);
    });

    it('fails the job when it has no attempt left', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const { job: j } = await client.call('job.submit', { job: job({ maxAttempts: 1 }) });
      await s.nextAssign(j.id);
      await waitJob(client, j.id, (x) => x.state === 'running', 'running');
      await drop(s);
      const g = await waitJob(client, j.id, (x) => x.state === 'failed', 'failed after the grace period');
      assert.match(g.job.reason ?? '', /slave w1 lost.*no attempt left/);
    });
  });

  describe('when a reconnect races the end of the grace period or a cancel', function () {
    /** Holds the store's `method` for the first call that `hold` picks, until the returned `open` is called. */
    function gate<K extends 'requeueJob' | 'getJob'>(method: K, hold: (args: Parameters<TestFarm['master']['jobs']['store'][K]>) => boolean) {
      const store = farm.master.jobs.store;
      const orig = (store[method] as (...a: unknown[]) => Promise<unknown>).bind(store);
      let open!: () => void;
      const opened = new Promise<void>((r) => (open = r));
      let entered!: () => void;
      const held = new Promise<void>((r) => (entered = r));
      let armed = true;
      (store as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
        if (armed && hold(args as Parameters<TestFarm['master']['jobs']['store'][K]>)) {
          armed = false;
          entered();
          await opened;
        }
        return orig(...args);
      };
      return { held, open };
    }

    it('does not tell the slave to keep attempts that the expired grace period is requeueing', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 2 });
      const ids = [await running(s), await running(s)];
      // The grace period runs out and its first requeue is slow to commit (an fsync under load).
      const g = gate('requeueJob', () => true);
      await drop(s);
      await g.held;
      await s.connect();
      const sub = s.subscribe({ capacity: 2, running: ids.map((jobId) => ({ jobId, attempt: 1, slots: 1 })) });
      await new Promise((res) => setTimeout(res, 200));
      g.open();
      const r = await sub;
      // Both were requeued (the grace period began first): the slave drops both attempts, and
      // gets them again as attempt 2, never an attempt 1 it keeps beside an attempt 2.
      assert.deepEqual(r.keep, []);
      assert.deepEqual(r.abandon.map((a) => a.jobId).sort(), [...ids].sort());
      for (const id of ids) await s.until(() => s.assigned.some((a) => a.jobId === id && a.attempt === 2), `attempt 2 of job ${id}`);
      for (const id of ids) await s.finish(id, 2);
      for (const id of ids) assert.deepEqual((await client.call('job.get', { id })).attempts.map((x) => x.state), ['requeued', 'succeeded']);
    });

    it('kills on the slave a job cancelled while the slave re-subscribes, and keeps its slot until the slave reports it', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 1 });
      const id = await running(s);
      await drop(s);
      await s.connect();
      // The subscribe reads each reported attempt: job `id` is read running (kept), then the read
      // of a second, unknown one is slow while a user cancels `id`.
      const g = gate('getJob', ([jobId]) => jobId === 99_999);
      const sub = s.subscribe({ capacity: 1, running: [{ jobId: id, attempt: 1, slots: 1 }, { jobId: 99_999, attempt: 1, slots: 1 }] });
      await g.held;
      const c = await client.call('job.cancel', { id });
      assert.equal(c.job.state, 'cancelled');
      g.open();
      const r = await sub;
      assert.deepEqual([r.keep.map((k) => k.jobId), r.abandon.map((k) => k.jobId)], [[id], [99_999]]);
      // Kept, so the slave must be told to kill it...
      await s.until(() => s.cancels.some((x) => x.jobId === id && x.attempt === 1 && x.reason === 'cancelled'), 'attempt.cancel of the cancelled job');
      // ...and its one slot is not given to another job while it dies...
      const { job: k } = await client.call('job.submit', { job: job() });
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(s.assigned.filter((a) => a.jobId === k.id).length, 0);
      // ...until the slave reports the kill.
      await s.finish(id, 1, { state: 'cancelled', exitCode: null, signal: 'SIGTERM' });
      await s.nextAssign(k.id);
      assert.equal((await client.call('job.get', { id })).job.state, 'cancelled');
    });
  });

  describe('when the master restarts while jobs run and wait', function () {
    it('keeps queued jobs, and the slave that reports its running job finishes it once', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 1 });
      const id = await running(s);
      await s.log(id, 1, [{ kind: 'data', seq: 1, stream: 'stdout', data: Buffer.from('before\n') }]);
      const { job: q } = await client.call('job.submit', { job: job({ name: 'waits' }) });
      await farm.restart();
      client = await farm.connect(await farm.identity('bob', 'client'));
      assert.equal((await client.call('job.get', { id: q.id })).job.state, 'queued');
      await s.connect();
      const r = await s.subscribe({ capacity: 1, running: [{ jobId: id, attempt: 1, slots: 1 }] });
      assert.deepEqual(r.keep, [{ jobId: id, attempt: 1, nextSeq: 2 }]);
      // Capacity 1 is taken by the kept job: the queued one waits for it.
      await new Promise((res) => setTimeout(res, 200));
      assert.equal(s.assigned.filter((a) => a.jobId === q.id).length, 0);
      await s.log(id, 1, [{ kind: 'data', seq: 2, stream: 'stdout', data: Buffer.from('after\n') }, { kind: 'end', seq: 3 }]);
      await s.finish(id, 1);
      await s.nextAssign(q.id);
      const g = await client.call('job.get', { id });
      assert.equal(g.job.state, 'succeeded');
      assert.equal(g.job.attempt, 1);
      assert.equal(text((await client.call('log.read', { jobId: id })).records), 'before\nafter\n');
    });

    it('requeues a running job whose slave does not return within the grace period after the restart', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const id = await running(s);
      s.peer.destroy();
      await farm.restart();
      client = await farm.connect(await farm.identity('bob', 'client'));
      const s2 = await TestSlave.enroll(farm, 'w2');
      await s2.connect();
      await s2.subscribe();
      const a = await s2.nextAssign(id, 5_000);
      assert.equal(a.attempt, 2);
    });
  });
});
