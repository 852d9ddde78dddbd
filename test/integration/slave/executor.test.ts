import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { isBuilderError } from '../../../protocol/errors.js';
import { Executor, type AttemptHandle } from '../../../slave/executor/index.js';
import { isAlive, MemorySink, ProcessReaper } from './helpers.js';

describe('slave/executor Executor (real processes)', function () {
  this.timeout(60_000);
  let root: string;
  const reaper = new ProcessReaper();
  const handles: AttemptHandle[] = [];
  const spec = (jobId: string, script: string, slots = 1): Parameters<Executor['start']>[0] => ({ jobId, attempt: 1, name: 'n', channel: 'c', arch: 'x86_64', script, slots });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-executor-'));
  });
  afterEach(async () => {
    for (const h of handles.splice(0)) reaper.addGroup(h.pid);
    await reaper.reap();
    await rm(root, { recursive: true, force: true });
  });

  describe('when a random mix of weighted jobs arrives faster than they finish', () => {
    it('never runs more slots at once than its capacity (by its own record), and runs them all', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 4 }),
          fc.array(fc.record({ slots: fc.integer({ min: 1, max: 4 }), work: fc.constantFrom('true', 'sleep 0.02', 'sleep 0.05', 'exit 1') }), { minLength: 1, maxLength: 10 }),
          async (capacity, jobs) => {
            const ex = new Executor({ dataDir: join(root, `cap${capacity}-${Math.random().toString(36).slice(2)}`), capacity, killGraceMs: 200 });
            const results: Array<Promise<unknown>> = [];
            for (let i = 0; i < jobs.length; i++) {
              const j = jobs[i]!;
              const slots = Math.min(j.slots, capacity);
              for (;;) {
                try {
                  const h = ex.start(spec(`job${i}`, j.work, slots), new MemorySink());
                  handles.push(h);
                  results.push(h.result);
                  break;
                } catch (e) {
                  assert.ok(isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE'), String(e));
                  // Wait for any attempt to end, as the master waits for a freed slot.
                  await Promise.race(ex.running().map((r) => ex.get(r.jobId)!.result));
                }
              }
            }
            await Promise.all(results);
            const rec = ex.record();
            assert.ok(rec.maxConcurrentSlots <= capacity, `ran ${rec.maxConcurrentSlots} slots on a capacity of ${capacity}`);
            assert.equal(rec.events.filter((e) => e.event === 'end').length, jobs.length);
            let used = 0;
            for (const e of rec.events) {
              used += e.event === 'start' ? e.slots : -e.slots;
              assert.ok(used <= capacity);
            }
            assert.equal(used, 0);
          },
        ),
        { numRuns: 6 },
      );
    });
  });

  describe('when drained', () => {
    it('refuses new jobs, lets the running one finish, and takes jobs again when undrained', async () => {
      const ex = new Executor({ dataDir: root, capacity: 2, killGraceMs: 200 });
      const sink = new MemorySink();
      const h = ex.start(spec('long', 'echo up; while [ ! -e "$BUILDER_WORKDIR/done" ]; do sleep 0.01; done; echo finished'), sink);
      handles.push(h);
      await sink.waitFor('up');
      ex.drain();
      assert.throws(() => ex.start(spec('other', 'true'), new MemorySink()), (e) => isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE'));
      assert.deepEqual(await ex.drainAndWait(0), { drained: false, running: ['long-1'] });
      const waiting = ex.drainAndWait(60_000);
      await writeFile(join(h.workDir, 'done'), '');
      assert.deepEqual(await waiting, { drained: true, running: [] });
      const r = await h.result;
      assert.equal(r.outcome, 'succeeded', 'draining does not disturb the running job');
      assert.ok(sink.text().includes('finished'));
      ex.undrain();
      const h2 = ex.start(spec('other', 'true'), new MemorySink());
      handles.push(h2);
      assert.equal((await h2.result).outcome, 'succeeded');
    });

    it('on shutdown waits up to the deadline, then cancels what still runs and waits for it to end', async () => {
      const ex = new Executor({ dataDir: root, capacity: 2, killGraceMs: 200 });
      const quick = new MemorySink();
      const stuck = new MemorySink();
      const hq = ex.start(spec('quick', 'echo up; while [ ! -e "$BUILDER_WORKDIR/done" ]; do sleep 0.01; done'), quick);
      const hs = ex.start(spec('stuck', 'echo up; trap "" TERM; while :; do sleep 0.05; done'), stuck);
      handles.push(hq, hs);
      await quick.waitFor('up');
      await stuck.waitFor('up');
      await writeFile(join(hq.workDir, 'done'), '');
      assert.equal((await hq.result).outcome, 'succeeded');
      const res = await ex.shutdown(300);
      assert.equal(res.drained, false);
      assert.deepEqual(res.cancelled, ['stuck']);
      const rs = await hs.result;
      assert.equal(rs.outcome, 'cancelled');
      assert.equal(rs.signal, 'SIGKILL', 'a job that ignores SIGTERM is killed after the grace');
      assert.equal(await isAlive(rs.pid!), false);
      assert.equal(ex.running().length, 0);
    });

    it('cancel(jobId) finds the running attempt', async () => {
      const ex = new Executor({ dataDir: root, capacity: 1, killGraceMs: 200 });
      const sink = new MemorySink();
      const h = ex.start(spec('c1', 'echo up; sleep 1000'), sink);
      handles.push(h);
      await sink.waitFor('up');
      assert.throws(() => ex.start(spec('c1', 'true'), new MemorySink()), (e) => isBuilderError(e, 'BUILDER_ERR_CONFLICT'));
      assert.equal(ex.cancel('nope'), false);
      assert.equal(ex.cancel('c1'), true);
      assert.equal((await h.result).outcome, 'cancelled');
      assert.equal(ex.freeSlots, 1);
      // The slot's work dir stays, emptied for the next attempt; nothing of the attempt is kept.
      assert.deepEqual((await readdir(h.workDir)).sort(), ['build', 'home', 'input', 'output', 'tmp']);
      assert.equal((await h.result).keptDir, undefined);
      await ex.removeWorkDir('c1', 1);
    });
  });
});
