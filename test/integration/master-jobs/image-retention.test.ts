import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { runBin } from '../../helpers/procs.js';
import { TestSlave, exists, job, jobFarm, rejectsWith, until, waitJob } from './helpers.js';

describe('master jobs: image retention', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let admin: RpcPeer;
  let s: TestSlave;
  const imageDir = (name: string, id: number) => join(farm.dir, 'images', name, String(id));

  beforeEach(async function () {
    // Images kept 2 s, and always those of the newest job of each name; the retention looks every 100 ms.
    ({ farm, client, admin } = await jobFarm({ imageRetentionMs: 2_000, imageKeep: 1, retentionSweepMs: 100 }));
    s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe();
  });
  afterEach(async function () {
    await farm.close();
  });

  /** Runs one job named `name` that uploads `files` (path -> text) and succeeds (or fails); its id. */
  async function build(name: string, files: Record<string, string>, state: 'succeeded' | 'failed' = 'succeeded'): Promise<number> {
    const id = (await client.call('job.submit', { job: job({ name, maxAttempts: 1 }) })).job.id;
    await s.nextAssign(id);
    const artifacts = [];
    for (const [path, body] of Object.entries(files)) artifacts.push({ path, ...(await s.upload(id, 1, path, Buffer.from(body))) });
    await s.finish(id, 1, { artifacts, state, exitCode: state === 'succeeded' ? 0 : 1 });
    await waitJob(client, id, (x) => x.state === state, state);
    return id;
  }

  it('removes old images except the newest job of each name and the promoted one, keeps packages, and says so on artifact.read (also after a restart)', async function () {
    const old = await build('disk', { 'root.img': 'old image', 'old_1.0-1_amd64.deb': 'its package' });
    const promoted = await build('disk', { 'root.img': 'the release' });
    await admin.call('image.promote', { jobId: promoted, name: 'disk' });
    const newest = await build('disk', { 'root.img': 'newest image', 'hello_1.0-1_amd64.deb': 'a package' });
    // A failed build after it does not take the place of the last good one.
    const failed = await build('disk', { 'root.img': 'a broken image' }, 'failed');
    const other = await build('other', { 'x.iso': 'only one of its name' });
    // What a pass cut short by a crash leaves (moved aside, not yet deleted) goes at the next pass.
    await mkdir(join(farm.dir, 'images', 'disk', '.removing-999'), { recursive: true });
    await writeFile(join(farm.dir, 'images', 'disk', '.removing-999', 'x.img'), 'left by a crash');

    // Within the retention: everything is there.
    for (const [n, id] of [['disk', old], ['disk', promoted], ['disk', newest], ['disk', failed], ['other', other]] as const) assert.ok(await exists(imageDir(n, id)), `${n}/${id}`);
    await until(`the images of job ${old} to be removed`, async () => !(await exists(imageDir('disk', old))));
    await until(`the images of failed job ${failed} to be removed`, async () => !(await exists(imageDir('disk', failed))));
    assert.equal(await exists(join(farm.dir, 'images', 'disk', '.removing-999')), false);
    // One more sweep's worth of time: nothing else goes.
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(await exists(imageDir('disk', promoted)), 'the promoted job keeps its images');
    assert.ok(await exists(imageDir('disk', newest)), 'the newest job of the name keeps its images');
    assert.ok(await exists(imageDir('other', other)), 'the newest (only) job of another name keeps its images');
    assert.deepEqual(
      (await client.call('image.list', { name: 'disk' })).images.map((i) => i.jobId),
      [newest, promoted],
    );
    // Packages are the repo-builder's business: the retention leaves them alone.
    const newestList = (await client.call('artifact.list', { jobId: newest })).artifacts;
    assert.deepEqual(newestList.map((a) => [a.name, a.kind, a.removedAt]).sort(), [['hello_1.0-1_amd64.deb', 'package', undefined], ['root.img', 'image', undefined]]);

    // builder download of the old job: the package, and a word on the removed image.
    const out = await mkdtemp(join(tmpdir(), 'builder-dl-'));
    try {
      const dl = await runBin('builder', ['download', String(old), '--master', farm.mainAddress, '--identity', await farm.identity('dana', 'client'), '--out', out]);
      assert.equal(dl.code, 0, dl.stderr);
      assert.match(dl.stderr, /^builder: skipped root\.img: removed on \d{4}-.* by the image retention$/m);
      assert.deepEqual(await readdir(out), ['old_1.0-1_amd64.deb']);
    } finally {
      await rm(out, { recursive: true, force: true });
    }

    const gone = (await client.call('artifact.list', { jobId: old })).artifacts.find((a) => a.name === 'root.img');
    assert.equal(typeof gone!.removedAt, 'number', 'artifact.list says when it was removed');
    const err = await rejectsWith(client.call('artifact.read', { id: gone!.id, offset: 0, length: 10 }), 'BUILDER_ERR_NOT_FOUND', new RegExp(`artifact ${gone!.id} \\(root.img\\) of job ${old} was removed on \\d{4}-\\d\\d-\\d\\dT.* by the image retention`));
    assert.match(String((err.data as { hint?: string }).hint), /keeps images for 2 seconds, and those of the newest 1 succeeded job\(s\) of each name and of the promoted one/);
    // A removed job cannot be promoted: said as such.
    await rejectsWith(admin.call('image.promote', { jobId: old, name: 'disk' }), 'BUILDER_ERR_NOT_FOUND', /the images of job \d+ were removed on .* by the image retention/);

    // The removal is in the store: a restarted master says the same, and the rest is still served.
    await farm.restart();
    const again = await farm.connect(await farm.identity('carol', 'client'));
    try {
      await rejectsWith(again.call('artifact.read', { id: gone!.id, offset: 0, length: 10 }), 'BUILDER_ERR_NOT_FOUND', /by the image retention/);
      const keep = (await again.call('artifact.list', { jobId: promoted })).artifacts[0]!;
      assert.equal(Buffer.from((await again.call('artifact.read', { id: keep.id, offset: 0, length: 100 })).data).toString(), 'the release');
      assert.equal((await again.call('job.get', { id: old })).job.state, 'succeeded', 'the job itself stays');
    } finally {
      await again.close(200);
    }
  });

  it('keeps images forever by default', async function () {
    await farm.close();
    ({ farm, client, admin } = await jobFarm({ retentionSweepMs: 100 }));
    s = await TestSlave.enroll(farm, 'w2');
    await s.connect();
    await s.subscribe();
    const a = await build('disk', { 'root.img': 'one' });
    await build('disk', { 'root.img': 'two' });
    await new Promise((r) => setTimeout(r, 1_000));
    assert.ok(await exists(imageDir('disk', a)));
  });
});
