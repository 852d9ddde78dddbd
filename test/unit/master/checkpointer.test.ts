import assert from 'node:assert/strict';
import { Checkpointer } from '../../../master/store/checkpointer.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The SQLite side is covered by the store's integration tests (a real WAL). Here the two ways of
// running a checkpoint are plain functions, so that one can fail on purpose.
describe('master/store Checkpointer when a checkpoint fails', function () {
  this.timeout(10_000);

  it('reports the error, and retries without another commit, on the writer queue next', async () => {
    const calls: string[] = [];
    const errors: unknown[] = [];
    const cp = new Checkpointer(
      () => {
        calls.push('background');
        return Promise.reject(new Error('database is locked'));
      },
      () => {
        calls.push('writer');
        return Promise.resolve({ busy: 0, log: 10, checkpointed: 10 });
      },
      { everyCommits: 1, maxDelayMs: 50, idleMs: 0, maxWalFrames: 1000 },
      (e) => errors.push(e),
    );
    try {
      cp.committed();
      const end = Date.now() + 2000;
      while (calls.length < 2 && Date.now() < end) await sleep(10);
      assert.deepEqual(calls, ['background', 'writer']);
      assert.equal(errors.length, 1);
      assert.match((errors[0] as Error).message, /locked/);
      assert.equal(cp.writerRuns, 1);
      // Done: nothing more runs until the next commit.
      await sleep(200);
      assert.deepEqual(calls, ['background', 'writer']);
    } finally {
      await cp.close();
    }
  });
});
