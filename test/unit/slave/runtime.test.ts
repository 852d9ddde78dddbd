import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import type { AttemptResult } from '../../../slave/executor/index.js';
import { buildOutcome, checkInputList, compileSlaveRuntimeOptions, SlotRecordFile } from '../../../slave/index.js';
import { capRefused } from '../../../slave/runtime/outcome.js';
import { SlotPool } from '../../../slave/executor/index.js';

function result(over: Partial<AttemptResult> = {}): AttemptResult {
  return {
    jobId: '1',
    attempt: 1,
    outcome: 'succeeded',
    exitCode: 0,
    signal: null,
    timedOut: false,
    cancelled: false,
    leftoversKilled: false,
    pipesForcedClosed: false,
    pid: 1234,
    workDir: '/w',
    keptDir: undefined,
    lastSeq: 3,
    stdoutBytes: 10,
    stderrBytes: 0,
    logLostBytes: 0,
    logError: undefined,
    error: undefined,
    artifacts: { artifacts: [], refused: [], conflicts: [] },
    artifactsError: undefined,
    startedAt: 0,
    endedAt: 1,
    durations: { setupMs: 0, runMs: 1, collectMs: 0, totalMs: 1 },
    ...over,
  };
}

const ctx = { cancelReason: undefined, fetch: 'ok' as const, jobChoosesProgram: false, timeoutMs: 5000 };

function configError(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && re.test(e.message) && e.hint !== undefined);
}

describe('slave/runtime', () => {
  describe('when the executor result becomes the attempt.finish outcome', () => {
    it('reports a clean success with no reason', () => {
      const o = buildOutcome(result(), ctx);
      assert.equal(o.state, 'succeeded');
      assert.equal(o.reason, null);
      assert.equal(o.setupFailure, false);
    });

    it('names the exit code or the signal, never 128+n', () => {
      assert.match(buildOutcome(result({ outcome: 'failed', exitCode: 3 }), ctx).reason ?? '', /^exit code 3$/);
      const s = buildOutcome(result({ outcome: 'failed', exitCode: null, signal: 'SIGSEGV' }), ctx);
      assert.equal(s.signal, 'SIGSEGV');
      assert.match(s.reason ?? '', /ended by SIGSEGV/);
    });

    it('turns a cancel for timeout into timed_out and keeps a user cancel as cancelled', () => {
      const r = result({ outcome: 'cancelled', cancelled: true, exitCode: null, signal: 'SIGTERM' });
      assert.equal(buildOutcome(r, { ...ctx, cancelReason: 'timed_out' }).state, 'timed_out');
      assert.equal(buildOutcome(r, { ...ctx, cancelReason: 'cancelled' }).state, 'cancelled');
      assert.match(buildOutcome(result({ outcome: 'timed_out', timedOut: true, exitCode: null, signal: 'SIGTERM' }), ctx).reason ?? '', /timed out after 5000 ms/);
    });

    it('calls a failed input fetch, a missing work dir or a missing slave shell a setup failure, and a bad job command or input list the job failure', () => {
      const noRun = (code: string) => result({ outcome: 'failed', exitCode: null, pid: undefined, error: { code, message: `${code} happened` } });
      assert.equal(buildOutcome(noRun('BUILDER_ERR_CHECKSUM'), { ...ctx, fetch: 'setup-failed' }).setupFailure, true);
      assert.equal(buildOutcome(noRun('ENOSPC'), { ...ctx, fetch: 'none' }).setupFailure, true);
      assert.equal(buildOutcome(noRun('ENOENT'), { ...ctx, fetch: 'ok', jobChoosesProgram: false }).setupFailure, true);
      assert.equal(buildOutcome(noRun('ENOENT'), { ...ctx, fetch: 'ok', jobChoosesProgram: true }).setupFailure, false);
      assert.equal(buildOutcome(noRun('BUILDER_ERR_INVALID_INPUT'), { ...ctx, fetch: 'job-failed' }).setupFailure, false);
      assert.match(buildOutcome(noRun('BUILDER_ERR_CHECKSUM'), { ...ctx, fetch: 'setup-failed' }).reason ?? '', /^setup failed: BUILDER_ERR_CHECKSUM happened/);
      // A cancel during the fetch is a cancel, not a setup failure.
      const cancelled = result({ outcome: 'cancelled', cancelled: true, exitCode: null, pid: undefined, error: { code: 'BUILDER_ERR_BAD_STATE', message: 'attempt cancelled' } });
      const c = buildOutcome(cancelled, { ...ctx, fetch: 'setup-failed', cancelReason: 'cancelled' });
      assert.equal(c.setupFailure, false);
      assert.equal(c.reason, 'cancelled');
    });

    it('carries refusals and conflicts, and caps the refused list at 1,000 with a count of the rest', () => {
      const refused = Array.from({ length: 1500 }, (_, i) => ({ path: `l${i}`, reason: 'symlink' as const }));
      const o = buildOutcome(result({ artifacts: { artifacts: [], refused, conflicts: [{ path: 'a', inputSha256: 'a'.repeat(64), artifactSha256: 'b'.repeat(64) }] } }), ctx);
      assert.equal(o.refused.length, 1500);
      assert.equal(o.conflicts.length, 1);
      const capped = capRefused(o.refused);
      assert.equal(capped.length, 1000);
      assert.deepEqual(capped[999], { path: '…', reason: 'too-many-refusals', detail: '501 more entries not listed' });
    });
  });

  describe('when an input list is checked', () => {
    it('accepts nested names and refuses escapes, duplicates and a file that is also a directory', () => {
      const f = (name: string) => ({ name, sha256: 'a'.repeat(64), size: 1 });
      checkInputList([f('a.txt'), f('src/b.c')]);
      assert.throws(() => checkInputList([f('../x')]), /input file name refused/);
      assert.throws(() => checkInputList([f('/etc/passwd')]), /input file name refused/);
      assert.throws(() => checkInputList([f('a'), f('a')]), /listed twice/);
      assert.throws(() => checkInputList([f('a'), f('a/b')]), /also a directory/);
    });
  });

  describe('when the options are compiled', () => {
    const ok = { dir: '/tmp/s', master: '127.0.0.1:7400', channels: ['main'], arches: ['x86_64'] };
    it('fills the defaults and de-duplicates the lists', () => {
      const o = compileSlaveRuntimeOptions({ ...ok, channels: ['main', ' main ', 'updates'] });
      assert.deepEqual(o.channels, ['main', 'updates']);
      assert.equal(o.capacity, 1);
      assert.equal(o.logWindow, 1);
      assert.equal(o.slotRecordFile, '/tmp/s/slot-record.jsonl');
      assert.equal(compileSlaveRuntimeOptions({ ...ok, slotRecordFile: false }).slotRecordFile, undefined);
    });
    it('refuses each bad value with a clear error and a hint', () => {
      configError(() => compileSlaveRuntimeOptions({ ...ok, channels: [] }), /no channels given/);
      configError(() => compileSlaveRuntimeOptions({ ...ok, arches: [' '] }), /no architectures given/);
      configError(() => compileSlaveRuntimeOptions({ ...ok, capacity: 0 }), /invalid --capacity 0/);
      configError(() => compileSlaveRuntimeOptions({ ...ok, capacity: 4097 }), /from 1 to 4096/);
      configError(() => compileSlaveRuntimeOptions({ ...ok, capacity: 1.5 }), /invalid --capacity 1.5/);
      configError(() => compileSlaveRuntimeOptions({ ...ok, master: 'x' }), /invalid --master address/);
      configError(() => compileSlaveRuntimeOptions({ ...ok, dir: '' }), /no slave data dir/);
      assert.throws(() => compileSlaveRuntimeOptions({ ...ok, channels: ['a/b'] }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'));
      assert.throws(() => compileSlaveRuntimeOptions({ ...ok, logWindow: 0 }), /logWindow/);
    });
  });

  describe('when the slot pool reports to the slot record file', () => {
    it('writes every start and end as it happens, after an open line', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'slot-rec-'));
      try {
        const path = join(dir, 'sub', 'slot-record.jsonl');
        const rec = new SlotRecordFile(path, 3);
        const pool = new SlotPool(3, { onEvent: (e) => rec.onSlotEvent(e) });
        const a = pool.tryAcquire('1-1', 2)!;
        assert.equal(pool.tryAcquire('2-1', 2), undefined);
        const lines = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
        assert.deepEqual(lines.map((l) => l.event), ['open', 'start']);
        a.release();
        rec.close();
        const all = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
        assert.deepEqual(all.map((l) => [l.event, l.usedAfter]), [['open', undefined], ['start', 2], ['end', 0], ['close', undefined]]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
