import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileAttempt, type FilingPlaces } from '../../../master/jobs/index.js';
import type { RpcPeer } from '../../../protocol/index.js';
import { tempDir, type TestFarm } from '../../helpers/farm.js';
import { TestSlave, job, jobFarm, rejectsWith, sha, waitJob } from './helpers.js';

describe('master jobs: filing artifacts against repeats, requeues and late uploads', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let s: TestSlave;

  beforeEach(async function () {
    ({ farm, client } = await jobFarm());
    s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe();
  });
  afterEach(async function () {
    await farm.close();
  });

  it('files the package of the attempt that ends the job, not the bytes a requeued attempt left under the same name', async function () {
    const { job: j } = await client.call('job.submit', { job: job({ name: 'pkg' }) });
    await s.nextAssign(j.id);
    await waitJob(client, j.id, (x) => x.state === 'running', 'running');
    const a1 = Buffer.from('attempt-1 bytes of hello.deb');
    const a2 = Buffer.from('attempt-2 BYTES of hello.deb');
    assert.equal(a1.length, a2.length);
    await s.upload(j.id, 1, 'hello_1_amd64.deb', a1);
    // The slave stopped attempt 1 on its own (a requeueing end): the job runs again.
    await s.finish(j.id, 1, { state: 'cancelled', exitCode: null, reason: 'stopped', artifacts: [{ path: 'hello_1_amd64.deb', size: a1.length, sha256: sha(a1) }] });
    await s.until(() => s.assigned.some((a) => a.jobId === j.id && a.attempt === 2), 'attempt 2');
    const requeued = (await client.call('job.get', { id: j.id })).attempts.find((x) => x.attempt === 1)!;
    assert.match(requeued.reason ?? '', /1 artifact not filed: the attempt goes back to the queue/);
    await waitJob(client, j.id, (x) => x.state === 'running' && x.attempt === 2, 'running attempt 2');
    await s.upload(j.id, 2, 'hello_1_amd64.deb', a2);
    await s.finish(j.id, 2, { artifacts: [{ path: 'hello_1_amd64.deb', size: a2.length, sha256: sha(a2) }] });
    await waitJob(client, j.id, (x) => x.state === 'succeeded', 'succeeded');

    const listing = JSON.parse(await readFile(join(farm.dir, 'incoming', `job-${j.id}-a2.listing.json`), 'utf8'));
    const onDisk = await readFile(join(farm.dir, 'incoming', `job-${j.id}-a2`, 'hello_1_amd64.deb'));
    assert.equal(listing.files[0].sha256, sha(a2));
    // The listing (the repo-builder's commit mark) must describe the file next to it.
    assert.equal(sha(onDisk), listing.files[0].sha256, `incoming file holds ${JSON.stringify(onDisk.toString())}`);
    // And artifact.read of attempt 2's record must return attempt 2's bytes.
    const rec = (await client.call('artifact.list', { jobId: j.id })).artifacts.find((a) => a.attempt === 2)!;
    const got = Buffer.from((await client.call('artifact.read', { id: rec.id, offset: 0, length: rec.size })).data);
    assert.equal(sha(got), rec.sha256, `artifact.read gave ${JSON.stringify(got.toString())}`);
  });

  it('commits a listing of every package when a repeated attempt.finish comes while the first is filing', async function () {
    const { job: j } = await client.call('job.submit', { job: job({ name: 'pkg' }) });
    await s.nextAssign(j.id);
    await waitJob(client, j.id, (x) => x.state === 'running', 'running');
    // Enough packages that the first call is still moving files when the second starts.
    const arts = [];
    for (let i = 0; i < 300; i++) {
      const b = Buffer.from(`package ${i} of job ${j.id}`);
      await s.upload(j.id, 1, `p${i}_1_amd64.deb`, b);
      arts.push({ path: `p${i}_1_amd64.deb`, size: b.length, sha256: sha(b) });
    }
    // The slave's call timed out (or its connection dropped) while the master was filing: it sends attempt.finish again.
    const first = s.finish(j.id, 1, { artifacts: arts });
    await new Promise((r) => setTimeout(r, 5));
    const rs = await Promise.allSettled([first, s.finish(j.id, 1, { artifacts: arts })]);
    const calls = rs.map((r) => (r.status === 'fulfilled' ? 'ok' : String(r.reason))).join(' | ');
    const listing = JSON.parse(await readFile(join(farm.dir, 'incoming', `job-${j.id}-a1.listing.json`), 'utf8')) as { files: Array<{ name: string }> };
    const g = await client.call('job.get', { id: j.id });
    assert.equal(listing.files.length, 300, `listing names ${listing.files.length} of 300; job ${g.job.state}, reason ${g.job.reason}; calls ${calls}`);
    assert.deepEqual(rs.map((r) => r.status), ['fulfilled', 'fulfilled'], calls);
    assert.equal(g.job.state, 'succeeded');
    assert.equal(g.job.reason, null);
  });

  it('never lets a slave replace a filed (and promoted) file after its job ended', async function () {
    const admin = await farm.connect(await farm.identity('root', 'admin'));
    const { job: j } = await client.call('job.submit', { job: job({ name: 'rel' }) });
    await s.nextAssign(j.id);
    await waitJob(client, j.id, (x) => x.state === 'running', 'running');
    const good = Buffer.from('the reviewed release image');
    await s.upload(j.id, 1, 'disk.img', good);
    await s.finish(j.id, 1, { artifacts: [{ path: 'disk.img', size: good.length, sha256: sha(good) }] });
    await waitJob(client, j.id, (x) => x.state === 'succeeded', 'succeeded');
    await admin.call('image.promote', { jobId: j.id, name: 'rel' });
    // Later, the same slave (compromised, or a bug) uploads other bytes under the same name and repeats attempt.finish.
    const evil = Buffer.from('something else entirely, longer');
    const late = await Promise.allSettled([s.upload(j.id, 1, 'disk.img', evil)]);
    const fin = await Promise.allSettled([s.finish(j.id, 1, { artifacts: [{ path: 'disk.img', size: evil.length, sha256: sha(evil) }] })]);
    assert.equal(fin[0].status, 'fulfilled');
    const onDisk = await readFile(join(farm.dir, 'images', 'rel', 'current', 'disk.img'));
    const rec = (await client.call('artifact.list', { jobId: j.id })).artifacts.find((a) => a.name === 'disk.img')!;
    assert.equal(
      sha(onDisk),
      rec.sha256,
      `promoted file now holds ${JSON.stringify(onDisk.toString())} (late upload: ${late[0].status}, late finish: ${fin[0].status}); the store still says sha256 of the reviewed bytes`,
    );
    assert.equal(sha(onDisk), sha(good));
  });

  it('refuses a begin of other bytes under a committed name without reading the stored file again', async function () {
    const { job: j } = await client.call('job.submit', { job: job({ name: 'big' }) });
    await s.nextAssign(j.id);
    await waitJob(client, j.id, (x) => x.state === 'running', 'running');
    const big = Buffer.alloc(32 * 1024 * 1024, 1);
    await s.upload(j.id, 1, 'disk.img', big, 4 * 1024 * 1024);
    // The master runs in this process: its reads show in this process's read count.
    const readBytes = async (): Promise<number> => Number(/rchar: (\d+)/.exec(await readFile('/proc/self/io', 'utf8'))![1]);
    const before = await readBytes();
    for (let i = 0; i < 4; i++) {
      await assert.rejects(s.peer.call('artifact.begin', { jobId: j.id, attempt: 1, path: 'disk.img', size: big.length, sha256: sha(`other ${i}`) }));
    }
    const read = (await readBytes()) - before;
    assert.ok(read < big.length, `4 refused begins read ${read} bytes (the file is ${big.length})`);
    // The same bytes again are still answered as committed.
    assert.deepEqual(await s.peer.call('artifact.begin', { jobId: j.id, attempt: 1, path: 'disk.img', size: big.length, sha256: sha(big) }), { offset: big.length });
  });

  it('lets one slave hold at most 64 uploads open, so one that never finishes its uploads cannot stop another slave’s', async function () {
    const bad = await TestSlave.enroll(farm, 'bad');
    await bad.connect();
    await bad.subscribe({ channels: ['evil'] });
    const a = (await client.call('job.submit', { job: job({ name: 'a', channel: 'evil' }) })).job.id;
    const b = (await client.call('job.submit', { job: job({ name: 'b' }) })).job.id;
    await bad.nextAssign(a);
    await s.nextAssign(b);
    await waitJob(client, a, (x) => x.state === 'running', 'a running');
    await waitJob(client, b, (x) => x.state === 'running', 'b running');
    for (let i = 0; i < 64; i++) await bad.peer.call('artifact.begin', { jobId: a, attempt: 1, path: `f${i}`, size: 1, sha256: sha(`${i}`) });
    await rejectsWith(bad.peer.call('artifact.begin', { jobId: a, attempt: 1, path: 'f64', size: 1, sha256: sha('64') }), 'BUILDER_ERR_TOO_MANY_IN_FLIGHT', /64 artifact uploads in progress from bad/);
    const data = Buffer.from('the good slave’s package');
    await s.upload(b, 1, 'out.deb', data);
    // Finishing one frees a place for the same slave.
    await bad.peer.call('artifact.chunk', { jobId: a, attempt: 1, path: 'f0', offset: 0, data: new TextEncoder().encode('0') });
    await bad.peer.call('artifact.finish', { jobId: a, attempt: 1, path: 'f0' });
    await bad.peer.call('artifact.begin', { jobId: a, attempt: 1, path: 'f64', size: 1, sha256: sha('64') });
  });

  describe('when filed by hand', function () {
    it('notes an artifact whose path clashes with a filed one (file "out", then "out/x.img") instead of failing the filing for good', async function () {
      const dir = await tempDir();
      const places = (a: string): FilingPlaces => ({ uploads: join(dir, 'up', a), packages: join(dir, 'pk'), images: join(dir, 'img'), incoming: join(dir, 'in') });
      for (const a of ['1', '2']) await Promise.all(Object.values(places(a)).map((p) => mkdir(p, { recursive: true })));
      await writeFile(join(dir, 'up', '1', 'out'), 'file');
      await fileAttempt(places('1'), { jobId: 1, attempt: 1, channel: 'c' }, [{ path: 'out', size: 4, sha256: sha('file') }]);
      await mkdir(join(dir, 'up', '2', 'out'));
      await writeFile(join(dir, 'up', '2', 'out', 'x.img'), 'x');
      // Threw ENOTDIR on every repeat: that attempt.finish could never succeed.
      const r = await fileAttempt(places('2'), { jobId: 1, attempt: 2, channel: 'c' }, [{ path: 'out/x.img', size: 1, sha256: sha('x') }]);
      assert.equal(r.filed.length, 0);
      assert.deepEqual(r.notes, ["out/x.img: not filed: its path clashes with another artifact's"]);
      assert.equal(await readFile(join(dir, 'img', 'out'), 'utf8'), 'file');
      await rm(dir, { recursive: true, force: true });
    });
  });
});
