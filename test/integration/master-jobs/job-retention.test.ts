import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sqlite3 from 'sqlite3';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { TestSlave, exists, job, jobFarm, rejectsWith, until, waitJob } from './helpers.js';

const data = (seq: number, s: string) => ({ kind: 'data' as const, seq, stream: 'stdout' as const, data: Buffer.from(s) });

/** Runs one SQL statement on master.db from outside the master (WAL: the master keeps running). */
function sql(file: string, q: string, params: unknown[] = []): Promise<void> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, (e) => {
      if (e) return reject(e);
      db.run(q, params, (err) => db.close(() => (err ? reject(err) : resolve())));
    });
  });
}

describe('master jobs: job retention', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let admin: RpcPeer;
  let s: TestSlave;

  beforeEach(async function () {
    // Jobs kept 2 s after they end; the retention looks every 100 ms.
    ({ farm, client, admin } = await jobFarm({ jobRetentionMs: 2_000, retentionSweepMs: 100 }));
    s = await TestSlave.enroll(farm, 'w1');
    await s.connect();
    await s.subscribe();
  });
  afterEach(async function () {
    await farm.close();
  });

  /** A job named `name` that logs, uploads `files` and succeeds; its id. */
  async function build(name: string, files: Record<string, string>): Promise<number> {
    const id = (await client.call('job.submit', { job: job({ name }) })).job.id;
    await s.nextAssign(id);
    await s.log(id, 1, [data(1, `building ${name}`), { kind: 'end', seq: 2 }]);
    const artifacts = [];
    for (const [path, body] of Object.entries(files)) artifacts.push({ path, ...(await s.upload(id, 1, path, Buffer.from(body))) });
    await s.finish(id, 1, { artifacts });
    await waitJob(client, id, (x) => x.state === 'succeeded', 'succeeded');
    return id;
  }

  it('removes a job that ended longer ago than the retention with its log, packages and images; keeps the promoted job and running ones; says so on job.get, also after a restart', async function () {
    const release = await build('disk', { 'root.img': 'the release' });
    await admin.call('image.promote', { jobId: release, name: 'disk' });
    const old = await build('disk', { 'root.img': 'an old image', 'old_1.0-1_amd64.deb': 'a package' });
    const running = (await client.call('job.submit', { job: job({ name: 'long' }) })).job.id;
    await s.nextAssign(running);
    await waitJob(client, running, (x) => x.state === 'running', 'running');
    // A purge a crash cut short: the rows gone, the listing and a file left.
    await sql(join(farm.dir, 'master.db'), 'INSERT INTO job_purges (job_id, name, attempts) VALUES (?, ?, ?)', [99_999, 'ghost', 1]);
    await mkdir(join(farm.dir, 'packages', '99999'), { recursive: true });
    await writeFile(join(farm.dir, 'packages', '99999', 'left.deb'), 'left by a crash');

    const files = (id: number) => [join(farm.dir, 'logs', '0', `${id}-1.log`), join(farm.dir, 'packages', String(id)), join(farm.dir, 'images', 'disk', String(id)), join(farm.dir, 'uploads', String(id))];
    assert.ok(await exists(files(old)[0]!), 'the log is there while the job is kept');
    await until(`job ${old} to be removed`, async () => (await client.call('job.list', {})).jobs.every((j) => j.id !== old));
    const err = await rejectsWith(client.call('job.get', { id: old }), 'BUILDER_ERR_NOT_FOUND', new RegExp(`no job ${old}: it was removed by the job retention`));
    assert.match(String((err.data as { hint?: string }).hint), /removes jobs 2 seconds after they end \(master run --job-retention\)/);
    // The rows go first (one commit), the files right after.
    for (const f of files(old)) await until(`${f} to be gone`, async () => !(await exists(f)));
    await rejectsWith(client.call('artifact.list', { jobId: old }), 'BUILDER_ERR_NOT_FOUND');
    // A job id never given is still just unknown.
    await rejectsWith(client.call('job.get', { id: 1_000_000 }), 'BUILDER_ERR_NOT_FOUND', /^no job 1000000$/);

    // The promoted release and the running job stay; the cut-short purge is finished.
    assert.equal((await client.call('job.get', { id: release })).job.state, 'succeeded');
    assert.ok(await exists(join(farm.dir, 'images', 'disk', String(release))));
    assert.equal((await client.call('job.get', { id: running })).job.state, 'running');
    await until('the cut-short purge to be finished', async () => !(await exists(join(farm.dir, 'packages', '99999'))));

    await farm.restart();
    const again = await farm.connect(await farm.identity('carol', 'client'));
    try {
      await rejectsWith(again.call('job.get', { id: old }), 'BUILDER_ERR_NOT_FOUND', /removed by the job retention/);
      assert.equal((await again.call('job.get', { id: release })).job.state, 'succeeded');
    } finally {
      await again.close(200);
    }
  });
});
