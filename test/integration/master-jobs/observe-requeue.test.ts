import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { observeJob } from '../../../cli/builder/lib/observe.js';
import { TestSlave, job, jobFarm, waitJob } from '../master-jobs/helpers.js';

/**
 * observe follows attempt 1; while its output is being written (a slow reader: a pipe into
 * less), attempt 1's slave is lost, the job is requeued and attempt 2 runs to success. The
 * observer must show attempt 2's log, not stop at "succeeded" with attempt 1's only.
 */
describe('builder observe (observeJob) across a requeue that ends the job while it writes', function () {
  this.timeout(60_000);
  let f: Awaited<ReturnType<typeof jobFarm>>;
  before(async () => {
    f = await jobFarm();
  });
  after(async () => {
    f?.client.destroy();
    await f?.farm.close();
  });

  it('prints the log of the attempt that ended the job after the one it was following', async () => {
    const a = await TestSlave.enroll(f.farm, 'wa');
    await a.connect();
    await a.subscribe({ capacity: 1 });
    const submitted = await f.client.call('job.submit', { job: job({ maxAttempts: 3 }) });
    const id = submitted.job.id;
    const as1 = await a.nextAssign(id);
    await waitJob(f.client, id, (j) => j.state === 'running', 'running');
    await a.log(id, as1.attempt, [{ kind: 'data', seq: 1, stream: 'stdout', data: Buffer.from('attempt one\n') as unknown as Uint8Array<ArrayBuffer> }]);

    // A reader that takes the first write and then stalls until released.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let out = '';
    const stdout = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, cb) {
        out += chunk.toString();
        void released.then(() => cb());
      },
    });
    let err = '';
    const stderr = new Writable({
      write(chunk: Buffer, _enc, cb) {
        err += chunk.toString();
        cb();
      },
    });
    const done = observeJob({ peer: f.client, jobId: id, stdout, stderr, waitMs: 2_000 });
    while (!out.includes('attempt one')) await new Promise((r) => setTimeout(r, 20));

    // Attempt 1's slave is lost; after the grace period the job goes to slave wb.
    a.peer.destroy();
    const b = await TestSlave.enroll(f.farm, 'wb');
    await b.connect();
    await b.subscribe({ capacity: 1 });
    const as2 = await b.nextAssign(id, 15_000);
    assert.equal(as2.attempt, 2);
    await waitJob(f.client, id, (j) => j.state === 'running' && j.attempt === 2, 'attempt 2 running');
    await b.log(id, 2, [{ kind: 'data', seq: 1, stream: 'stdout', data: Buffer.from('attempt two\n') as unknown as Uint8Array<ArrayBuffer> }]);
    await b.finish(id, 2, { logEnd: 2 });
    await waitJob(f.client, id, (j) => j.state === 'succeeded', 'succeeded');

    release();
    const r = await done;
    assert.equal(r.job.state, 'succeeded');
    assert.equal(out, 'attempt one\nattempt two\n', `stderr: ${err}`);
    assert.match(err, /attempt 2/);
  });
});
