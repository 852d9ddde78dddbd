import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { RpcPeer } from '../../../protocol/index.js';
import type { TestFarm } from '../../helpers/farm.js';
import { exists, job, jobFarm, rejectsWith, sha, until, uploadInputAs } from './helpers.js';

describe('master jobs: input retention', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let client: RpcPeer;
  const inputPath = (b: Buffer) => join(farm.dir, 'inputs', sha(b));
  const input = (name: string, b: Buffer) => ({ name, sha256: sha(b), size: b.length });

  beforeEach(async function () {
    // Inputs unused for 1.5 s go; the retention looks every 100 ms.
    ({ farm, client } = await jobFarm({ inputRetentionMs: 1_500, retentionSweepMs: 100 }));
  });
  afterEach(async function () {
    await farm.close();
  });

  it('removes an input nothing uses once unused for the retention; keeps those a queued job or a schedule names; a job naming a removed one is refused with the rule', async function () {
    const [a, b, c] = ['source of a queued job', 'source of a schedule', 'used by nobody'].map((t) => Buffer.from(t));
    for (const x of [a!, b!, c!]) await uploadInputAs(client, x);
    // No slave serves this channel: the job stays queued.
    const queued = (await client.call('job.submit', { job: job({ name: 'waits', channel: 'nobody', inputs: [input('a.tar', a!)] }) })).job.id;
    await client.call('schedule.create', { cron: '0 3 * * *', template: job({ name: 'nightly', inputs: [input('b.tar', b!)] }) });

    await until('the unused input to be removed', async () => !(await exists(inputPath(c!))));
    assert.ok(await exists(inputPath(a!)), 'named by a queued job');
    assert.ok(await exists(inputPath(b!)), "named by a schedule's template");
    const err = await rejectsWith(client.call('job.submit', { job: job({ inputs: [input('c.txt', c!)] }) }), 'BUILDER_ERR_INVALID_INPUT', /input file c\.txt .* is not on the master/);
    assert.match(String((err.data as { hint?: string }).hint), /removes inputs unused for 2 seconds \(master run --input-retention, 1500 ms\)/);
    // Uploaded again, it is taken.
    await uploadInputAs(client, c!);
    assert.ok(await exists(inputPath(c!)));

    // Once no job that may still run names it, and it is unused for the retention, it goes too.
    await client.call('job.cancel', { id: queued });
    await until('the input of the cancelled job to be removed', async () => !(await exists(inputPath(a!))));
    assert.ok(await exists(inputPath(b!)), 'the schedule still names it');
  });

  it('counts an input.begin of a file the master holds as a use, so that the submit after it finds the file', async function () {
    const x = Buffer.from('reused source');
    await uploadInputAs(client, x);
    for (let i = 0; i < 6; i++) {
      // Every 500 ms for 3 s (twice the retention): each begin answers "have it" and marks it used.
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(await client.call('input.begin', { sha256: sha(x), size: x.length }), { offset: x.length });
    }
    const j = await client.call('job.submit', { job: job({ channel: 'nobody', inputs: [input('x', x)] }) });
    assert.equal(j.job.state, 'queued');
  });
});

describe('master jobs: input retention of uploads given up on', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let client: RpcPeer;

  beforeEach(async function () {
    // Uploads idle for 1 s close (their bytes kept for a resume); the retention is 1.5 s.
    ({ farm, client } = await jobFarm({ inputRetentionMs: 1_500, retentionSweepMs: 100, uploadIdleMs: 1_000 }));
  });
  afterEach(async function () {
    await farm.close();
  });

  it('removes the partial bytes of an upload untouched for the retention, and keeps one still being written', async function () {
    const given = Buffer.alloc(1 << 20, 3);
    const kept = Buffer.alloc(1 << 20, 4);
    for (const b of [given, kept]) {
      await client.call('input.begin', { sha256: sha(b), size: b.length });
      await client.call('input.chunk', { sha256: sha(b), offset: 0, data: b.subarray(0, 4096) });
    }
    const part = (b: Buffer): string => join(farm.dir, 'inputs', `${sha(b)}.part`);
    // The second one goes on, a chunk every 300 ms (each resumes it if the idle sweep closed it).
    let off = 4096;
    const deadline = Date.now() + 15_000;
    while ((await exists(part(given))) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 300));
      const { offset } = await client.call('input.begin', { sha256: sha(kept), size: kept.length });
      assert.equal(offset, off, 'the upload still being written resumes where it was');
      await client.call('input.chunk', { sha256: sha(kept), offset: off, data: kept.subarray(off, off + 4096) });
      off += 4096;
    }
    assert.ok(!(await exists(part(given))), 'the abandoned upload is still on disk');
    assert.ok(!(await exists(`${part(given)}.meta`)));
    assert.ok(await exists(part(kept)));
    // Begun again from scratch, the abandoned one completes.
    assert.equal((await client.call('input.begin', { sha256: sha(given), size: given.length })).offset, 0);
  });
});
