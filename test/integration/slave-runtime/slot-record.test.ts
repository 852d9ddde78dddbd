import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate } from 'node:timers/promises';
import { readSlotRecord as readRecordFile, type SlotRecordLine } from '../../../slave/index.js';
import { fastRuntimeOptions, readSlotRecord, slaveTestBed, startRuntime } from './helpers/setup.js';
import type { SlaveRuntime } from '../../../slave/index.js';
import type { TestMaster } from './helpers/test-master.js';

/**
 * Checks one snapshot of a record written by {@link writerCode}: the start/end lines are an
 * unbroken run (start i, end i, start i+1...), and each rotate line in the middle tells the
 * count the replay has there. Returns the last key number seen.
 */
function checkSnapshot(rec: readonly SlotRecordLine[]): number {
  let expect: { event: 'start' | 'end'; n: number } | undefined;
  let used = 0;
  rec.forEach((l, i) => {
    if (l.event === 'rotate') {
      if (i === 0) used = l.used;
      else assert.equal(l.used, used, `rotate line ${i} says ${l.used} in use, the replay ${used}`);
      return;
    }
    if (l.event !== 'start' && l.event !== 'end') return;
    const n = Number(l.key.split('-')[0]);
    if (expect !== undefined) assert.deepEqual({ event: l.event, n }, expect, `line ${i} breaks the run`);
    expect = l.event === 'start' ? { event: 'end', n } : { event: 'start', n: n + 1 };
    used += l.event === 'start' ? l.slots : -l.slots;
  });
  return expect === undefined ? 0 : expect.event === 'end' ? expect.n : expect.n - 1;
}

/** A slave's slot record in another process: `n` attempts one after the other, as fast as it can, with a 1 KiB bound. */
function writerCode(path: string, n: number): string {
  const mod = new URL('../../../slave/index.js', import.meta.url).href;
  const exec = new URL('../../../slave/executor/index.js', import.meta.url).href;
  return `import { SlotRecordFile } from ${JSON.stringify(mod)};
    import { SlotPool } from ${JSON.stringify(exec)};
    const rec = new SlotRecordFile(${JSON.stringify(path)}, 1, { maxBytes: 1024 });
    const pool = new SlotPool(1, { onEvent: (e) => rec.onSlotEvent(e) });
    for (let i = 1; i <= ${n}; i++) pool.tryAcquire(i + '-1', 1).release();
    rec.close();`;
}

describe('slave slot record, read while it rotates', function () {
  this.timeout(60_000);
  let dir: string;
  let child: ChildProcess | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'slot-rec-it-'));
  });
  afterEach(async () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    child = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('gives a reader in another process an unbroken record at every moment, across thousands of rotations', async () => {
    const path = join(dir, 'slot-record.jsonl');
    const n = 5_000;
    const c = spawn(process.execPath, ['--input-type=module', '-e', writerCode(path, n)], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    let stderr = '';
    c.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => c.on('exit', (code) => resolve(code)));
    let done = false;
    void exited.then(() => (done = true));
    let snapshots = 0;
    let spanning = 0;
    let last = 0;
    while (!done) {
      const rec = await readRecordFile(path);
      const upTo = checkSnapshot(rec);
      assert.ok(upTo >= last, `a later snapshot ends earlier (${upTo} < ${last})`);
      last = upTo;
      snapshots++;
      if (rec.slice(1).some((l) => l.event === 'rotate')) spanning++;
      // The read is synchronous inside: let the child's exit be seen.
      await setImmediate();
    }
    assert.equal(await exited, 0, stderr);
    const final = await readRecordFile(path);
    assert.equal(checkSnapshot(final), n);
    assert.equal(final.at(-1)?.event, 'close');
    // The reads did overlap the writing, and most saw both generations.
    assert.ok(snapshots >= 20 && spanning >= 10, `${snapshots} snapshots, ${spanning} across a rotation`);
  });
});

describe('slave runtime slot record with a small bound (mutual TLS, real processes)', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-rec-');
  let master: TestMaster;
  let rt: SlaveRuntime | undefined;

  beforeEach(async function () {
    master = bed.master;
    await master.listen(0);
  });
  afterEach(async function () {
    if (rt !== undefined) {
      const r = rt;
      rt = undefined;
      await r.shutdown();
    }
    await master.close();
  });

  it('rotates the record, and the capacity check still sees every attempt of both generations', async function () {
    rt = await startRuntime(fastRuntimeOptions(bed.dir, master.address, { capacity: 2, slotRecordMaxBytes: 1024 }));
    // 8 attempts in pairs that run at once: 17 lines of about 90 bytes, one rotation.
    for (let pair = 0; pair < 4; pair++) {
      const ids = [300 + 2 * pair, 301 + 2 * pair];
      for (const jobId of ids) await master.assign({ jobId, command: { kind: 'script', text: 'sleep 0.1' } });
      for (const jobId of ids) await master.waitFinish(jobId);
    }
    assert.ok(existsSync(join(bed.dir, 'slot-record.jsonl.1')), 'the record rotated');
    const rec = await readSlotRecord(bed.dir);
    assert.equal(rec.lines[0]?.event, 'open', 'nothing of this run was dropped');
    assert.equal(rec.lines.filter((l) => l.event === 'rotate').length, 1);
    assert.equal(rec.lines.filter((l) => l.event === 'start').length, 8);
    assert.equal(rec.lines.filter((l) => l.event === 'end').length, 8);
    assert.equal(rec.maxReplayed, 2, 'the pairs ran at once, never more');
    assert.ok(rec.maxUsed <= 2);
  });
});
