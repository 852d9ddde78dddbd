import assert from 'node:assert/strict';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, rejectsWith, sha, uploadInputAs, waitJob } from './helpers.js';

describe('master jobs: what clients call', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let admin: RpcPeer;

  beforeEach(async function () {
    ({ farm, client, admin } = await jobFarm());
  });
  afterEach(async function () {
    await farm.close();
  });

  const uploadInput = (b: Buffer): Promise<void> => uploadInputAs(client, b);

  describe('when a job names input files', function () {
    it('refuses it while an input is missing, naming the file; takes it once uploaded; its slave may read it, another may not', async function () {
      const src = Buffer.from('int main(void) { return 0; }\n');
      const inputs = [{ name: 'src/main.c', sha256: sha(src), size: src.length }];
      await rejectsWith(client.call('job.submit', { job: job({ inputs }) }), 'BUILDER_ERR_INVALID_INPUT', /input file src\/main\.c .* is not on the master/);
      assert.deepEqual((await client.call('job.list', {})).jobs, []);
      await uploadInput(src);
      // Uploading it again is answered at once: the master has it.
      assert.deepEqual(await client.call('input.begin', { sha256: sha(src), size: src.length }), { offset: src.length });
      await rejectsWith(client.call('job.submit', { job: job({ inputs: [{ ...inputs[0]!, size: 3 }] }) }), 'BUILDER_ERR_INVALID_INPUT', /holds 29 bytes/);

      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      const s2 = await TestSlave.enroll(farm, 'w2');
      await s2.connect();
      await s2.subscribe({ channels: ['other'] });
      await rejectsWith(s.peer.call('input.read', { sha256: sha(src), offset: 0, length: 100 }), 'BUILDER_ERR_FORBIDDEN');
      await s.subscribe();
      const { job: j } = await client.call('job.submit', { job: job({ inputs }) });
      const a = await s.nextAssign(j.id);
      assert.deepEqual(a.inputs, inputs);
      const got = await s.peer.call('input.read', { sha256: sha(src), offset: 0, length: 1 << 20 });
      assert.deepEqual(Buffer.from(got.data), src);
      await rejectsWith(s2.peer.call('input.read', { sha256: sha(src), offset: 0, length: 10 }), 'BUILDER_ERR_FORBIDDEN');
      const part = await client.call('input.read', { sha256: sha(src), offset: 4, length: 4 });
      assert.equal(Buffer.from(part.data).toString(), 'main');
      await rejectsWith(client.call('input.read', { sha256: sha('nope'), offset: 0, length: 4 }), 'BUILDER_ERR_NOT_FOUND');
    });

    it('refuses an input upload whose bytes do not match its sha256, keeping nothing', async function () {
      const h = sha('what the client says');
      await client.call('input.begin', { sha256: h, size: 5 });
      await client.call('input.chunk', { sha256: h, offset: 0, data: Buffer.from('other') });
      await rejectsWith(client.call('input.finish', { sha256: h }), 'BUILDER_ERR_CHECKSUM');
      await rejectsWith(client.call('job.submit', { job: job({ inputs: [{ name: 'f', sha256: h, size: 5 }] }) }), 'BUILDER_ERR_INVALID_INPUT', /not on the master/);
      await rejectsWith(client.call('input.chunk', { sha256: h, offset: 5, data: Buffer.from('x') }), 'BUILDER_ERR_BAD_STATE', /input.begin first/);
    });
  });

  describe('when clients list, retry and look at jobs', function () {
    it('lists newest first with filters, retries a finished job as a new one, and refuses to retry a live one', async function () {
      const a = (await client.call('job.submit', { job: job({ name: 'a' }) })).job;
      const b = (await client.call('job.submit', { job: job({ name: 'b', channel: 'testing' }) })).job;
      assert.deepEqual((await client.call('job.list', {})).jobs.map((j) => j.id), [b.id, a.id]);
      assert.deepEqual((await client.call('job.list', { channel: 'testing' })).jobs.map((j) => j.id), [b.id]);
      await rejectsWith(client.call('job.retry', { id: a.id }), 'BUILDER_ERR_BAD_STATE', /still queued/);
      await client.call('job.cancel', { id: a.id });
      const r = (await client.call('job.retry', { id: a.id })).job;
      assert.equal(r.name, 'a');
      assert.notEqual(r.id, a.id);
      assert.equal(r.state, 'queued');
      assert.equal((await client.call('job.get', { id: a.id })).job.state, 'cancelled');
      await rejectsWith(client.call('job.get', { id: 12345 }), 'BUILDER_ERR_NOT_FOUND', /no job 12345/);
      await rejectsWith(client.call('job.cancel', { id: 12345 }), 'BUILDER_ERR_NOT_FOUND');
      await rejectsWith(client.call('job.submit', { job: job({ name: '../etc' }) }), 'BUILDER_ERR_INVALID_NAME');
    });
  });

  describe('when clients manage schedules', function () {
    it('creates, lists, pauses, resumes and removes one; an invalid cron is a clear INVALID_INPUT', async function () {
      await rejectsWith(client.call('schedule.create', { cron: 'every day', template: job() }), 'BUILDER_ERR_INVALID_INPUT', /cron/);
      await rejectsWith(client.call('schedule.create', { cron: '* * * * * *', template: job() }), 'BUILDER_ERR_INVALID_INPUT');
      const { schedule } = await client.call('schedule.create', { cron: '0 3 * * *', template: job({ name: 'nightly' }) });
      assert.match(schedule.id, /^nightly-[0-9a-f]{8}$/);
      assert.ok(schedule.nextFireAt !== null && schedule.nextFireAt > Date.now());
      assert.deepEqual((await client.call('schedule.list', {})).schedules.map((x) => x.id), [schedule.id]);
      assert.equal((await client.call('schedule.pause', { id: schedule.id, paused: true })).schedule.nextFireAt, null);
      assert.ok((await client.call('schedule.pause', { id: schedule.id, paused: false })).schedule.nextFireAt !== null);
      await client.call('schedule.remove', { id: schedule.id });
      assert.deepEqual((await client.call('schedule.list', {})).schedules, []);
      await rejectsWith(client.call('schedule.remove', { id: schedule.id }), 'BUILDER_ERR_NOT_FOUND');
    });

    it('queues and dispatches the job a due schedule fires', async function () {
      await farm.close();
      // Seconds allowed (an option) so that a tick is due within a second.
      ({ farm, client, admin } = await jobFarm({ cron: { allowSeconds: true } }));
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe();
      const { schedule } = await client.call('schedule.create', { cron: '* * * * * *', template: job({ name: 'tick' }) });
      await s.until(() => s.assigned.some((a) => a.name === 'tick'), 'the fired job', 5_000);
      const fired = (await client.call('schedule.list', {})).schedules.find((x) => x.id === schedule.id)!;
      assert.equal((await client.call('job.get', { id: fired.lastJobId! })).job.scheduleId, schedule.id);
    });
  });

  describe('when operators look at and drain slaves', function () {
    it('shows each slave, drains it (admin only, persisted) so it gets nothing new, and undrains it', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await s.subscribe({ capacity: 3 });
      const { job: j } = await client.call('job.submit', { job: job({ slots: 2 }) });
      await s.nextAssign(j.id);
      await waitJob(client, j.id, (x) => x.state === 'running', 'running');
      const st = (await client.call('slave.status', {})).slaves;
      assert.equal(st.length, 1);
      assert.deepEqual(
        { ...st[0]!, connectedSince: typeof st[0]!.connectedSince, lastSeen: typeof st[0]!.lastSeen },
        { name: 'w1', channels: ['stable'], arches: ['x86_64'], capacity: 3, slotsInUse: 2, running: [j.id], connected: true, connectedSince: 'number', lastSeen: 'number', drained: false, quarantinedUntil: null },
      );
      await rejectsWith(admin.call('slave.drain', { name: 'nobody', drained: true }), 'BUILDER_ERR_NOT_FOUND');
      await admin.call('slave.drain', { name: 'w1', drained: true });
      const { job: k } = await client.call('job.submit', { job: job() });
      await new Promise((res) => setTimeout(res, 200));
      assert.equal(s.assigned.filter((a) => a.jobId === k.id).length, 0);
      assert.match((await client.call('job.get', { id: k.id })).waiting ?? '', /drained/);
      // Persisted: still drained after a restart.
      await farm.restart();
      client = await farm.connect(await farm.identity('bob', 'client'));
      admin = await farm.connect(await farm.identity('root2', 'admin'));
      await s.connect();
      await s.subscribe({ capacity: 3, running: [{ jobId: j.id, attempt: 1, slots: 2 }] });
      assert.equal((await client.call('slave.status', {})).slaves[0]!.drained, true);
      await admin.call('slave.drain', { name: 'w1', drained: false });
      await s.nextAssign(k.id);
    });

    it('lets a slave drain itself (slave.draining) and come back', async function () {
      const s = await TestSlave.enroll(farm, 'w1');
      await s.connect();
      await rejectsWith(s.peer.call('slave.draining', { draining: true }), 'BUILDER_ERR_BAD_STATE', /subscribe first/);
      await s.subscribe({ draining: true });
      const { job: j } = await client.call('job.submit', { job: job() });
      await new Promise((res) => setTimeout(res, 200));
      assert.equal(s.assigned.length, 0);
      assert.equal((await client.call('slave.status', {})).slaves[0]!.drained, true);
      await s.peer.call('slave.draining', { draining: false });
      await s.nextAssign(j.id);
    });
  });
});
