import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ParamsOf, ResultOf, RpcPeer } from '../../../protocol/index.js';
import type { SlaveRuntime } from '../../../slave/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';
import { alive, fastRuntimeOptions, killGroups, readSlotRecord, startRuntime, until } from './helpers/setup.js';

type NewJob = ParamsOf<'job.submit'>['job'];
type Job = ResultOf<'job.get'>['job'];

const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);

/** The slave runtime against the real Master (job service, SQLite store, on-disk logs). */
describe('slave runtime with the real master', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let client: RpcPeer;
  let rt: SlaveRuntime | undefined;
  let slaveDir: string;
  const groups: number[] = [];

  beforeEach(async function () {
    farm = await startFarm({ slaveGraceMs: 20_000, acceptTimeoutMs: 5_000 });
    client = await farm.connect(await farm.identity('ops', 'client'));
    slaveDir = await farm.identity('worker-1', 'slave');
  });
  afterEach(async function () {
    killGroups(groups);
    if (rt !== undefined) {
      const r = rt;
      rt = undefined;
      await r.shutdown();
    }
    await farm.close();
  });

  async function submit(job: Partial<NewJob> & { command: NewJob['command'] }): Promise<number> {
    const r = await client.call('job.submit', { job: { name: 'job', channel: 'main', arch: 'x86_64', ...job } });
    return r.job.id;
  }

  async function waitJob(id: number, pred: (j: Job) => boolean = (j) => FINAL.has(j.state), ms = 30_000): Promise<ResultOf<'job.get'>> {
    const end = Date.now() + ms;
    for (;;) {
      const r = await client.call('job.get', { id });
      if (pred(r.job)) return r;
      if (Date.now() > end) throw new Error(`job ${id} is ${r.job.state} (${r.job.reason ?? ''})`);
      await new Promise((res) => setTimeout(res, 25));
    }
  }

  async function logText(id: number, stream: 'stdout' | 'stderr' = 'stdout', attempt?: number): Promise<string> {
    const parts: Buffer[] = [];
    let fromSeq = 1;
    for (;;) {
      const r = await client.call('log.read', { jobId: id, fromSeq, ...(attempt === undefined ? {} : { attempt }) });
      for (const rec of r.records) if (rec.kind === 'data' && rec.stream === stream) parts.push(Buffer.from(rec.data));
      if (r.records.length === 0 || r.ended) break;
      fromSeq = r.nextSeq;
    }
    return Buffer.concat(parts).toString('utf8');
  }

  async function uploadInput(content: Buffer): Promise<{ sha256: string; size: number }> {
    const sha256 = createHash('sha256').update(content).digest('hex');
    const { offset } = await client.call('input.begin', { sha256, size: content.length });
    if (offset < content.length) await client.call('input.chunk', { sha256, offset, data: content.subarray(offset) as Uint8Array<ArrayBuffer> });
    await client.call('input.finish', { sha256 });
    return { sha256, size: content.length };
  }

  it('runs a job with an input, and the master gets its log, its exit and its artifacts with matching sha256', async function () {
    rt = await startRuntime(fastRuntimeOptions(slaveDir, farm.mainAddress));
    const inp = await uploadInput(Buffer.from('payload\n'));
    const id = await submit({
      name: 'pkg',
      inputs: [{ name: 'in/p.txt', ...inp }],
      command: { kind: 'script', text: 'cat "$BUILDER_INPUT/in/p.txt"; echo oops >&2; printf deb > "$BUILDER_OUTPUT/hello_1.0_amd64.deb"; printf img > "$BUILDER_OUTPUT/disk.img"' },
    });
    const r = await waitJob(id);
    assert.equal(r.job.state, 'succeeded', r.job.reason ?? '');
    assert.equal(r.job.attempt, 1);
    assert.equal(r.job.exitCode, 0);
    assert.equal(await logText(id), 'payload\n');
    assert.equal(await logText(id, 'stderr'), 'oops\n');
    const arts = (await client.call('artifact.list', { jobId: id })).artifacts;
    assert.deepEqual(arts.map((a) => [a.name, a.kind, a.sha256]).sort(), [
      ['disk.img', 'image', createHash('sha256').update('img').digest('hex')],
      ['hello_1.0_amd64.deb', 'package', createHash('sha256').update('deb').digest('hex')],
    ]);
  });

  it('finishes a job whose connection dropped mid-run with its whole log in order, on the first attempt', async function () {
    rt = await startRuntime(fastRuntimeOptions(slaveDir, farm.mainAddress));
    const id = await submit({ command: { kind: 'script', text: 'i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo "line $i"; sleep 0.03; done' } });
    await waitJob(id, (j) => j.state === 'running');
    await until(async () => (await logText(id)).includes('line 5\n'), 'some output on the master');
    for (const p of farm.master.peersNamed('worker-1')) p.destroy();
    const r = await waitJob(id);
    assert.equal(r.job.state, 'succeeded', r.job.reason ?? '');
    assert.equal(r.job.attempt, 1);
    assert.equal(r.attempts.length, 1);
    assert.equal(await logText(id), Array.from({ length: 40 }, (_, i) => `line ${i + 1}\n`).join(''));
  });

  it('kills the process group when a user cancels the job', async function () {
    rt = await startRuntime(fastRuntimeOptions(slaveDir, farm.mainAddress));
    const pidFile = join(slaveDir, 'job.pid');
    const id = await submit({ command: { kind: 'script', text: `(trap '' TERM; sleep 60) & echo $! > ${pidFile}; wait` } });
    await until(() => existsSync(pidFile), 'the job to start');
    const gpid = Number((await readFile(pidFile, 'utf8')).trim());
    groups.push(gpid);
    await client.call('job.cancel', { id });
    await until(async () => !(await alive(gpid)), 'the grandchild to be killed');
    assert.equal((await waitJob(id)).job.state, 'cancelled');
    await until(() => rt!.attempts().length === 0, 'the slave to forget the attempt');
  });

  it('keeps within its capacity in slots while the master dispatches a queue of mixed weights', async function () {
    rt = await startRuntime(fastRuntimeOptions(slaveDir, farm.mainAddress, { capacity: 3 }));
    const weights = [1, 2, 3, 1, 1, 2, 1, 3, 2, 1];
    const ids: number[] = [];
    for (const w of weights) ids.push(await submit({ slots: w, command: { kind: 'script', text: 'sleep 0.15' } }));
    for (const id of ids) assert.equal((await waitJob(id)).job.state, 'succeeded');
    const rec = await readSlotRecord(slaveDir);
    assert.ok(rec.maxUsed <= 3 && rec.maxReplayed <= 3, JSON.stringify(rec.lines));
    assert.ok(rec.maxReplayed >= 2);
    assert.equal(rec.lines.filter((l) => l.event === 'start').length, weights.length);
  });

  it('on shutdown past the drain deadline, reports the killed job cancelled and the master runs it again', async function () {
    rt = await startRuntime(fastRuntimeOptions(slaveDir, farm.mainAddress, { drainTimeoutMs: 300 }));
    const id = await submit({ maxAttempts: 3, command: { kind: 'script', text: 'echo "attempt $BUILDER_ATTEMPT"; [ "$BUILDER_ATTEMPT" = 2 ] || sleep 60' } });
    await until(async () => (await logText(id)).includes('attempt 1'), 'the first attempt to run');
    const r = await rt.shutdown();
    rt = undefined;
    assert.deepEqual(r.killed, [`${id}-1`]);
    assert.deepEqual(r.kept, []);
    const q = await waitJob(id, (j) => j.state === 'queued' || FINAL.has(j.state));
    // Back in the queue at once (not after the grace period); attempt 2 starts at the next dispatch.
    assert.equal(q.job.state, 'queued', q.job.reason ?? '');
    assert.match(q.job.reason ?? '', /drain timeout/);
    rt = await startRuntime(fastRuntimeOptions(slaveDir, farm.mainAddress));
    const done = await waitJob(id);
    assert.equal(done.job.state, 'succeeded', done.job.reason ?? '');
    assert.equal(done.job.attempt, 2);
    assert.equal(await logText(id, 'stdout', 2), 'attempt 2\n');
  });
});
