import assert from 'node:assert/strict';
import { isBuilderError } from '../../../protocol/errors.js';
import { checkAttemptSpec, compileExecutorOptions, OutputBatcher, type AttemptSpec } from '../../../slave/executor/index.js';
import type { LogChunk } from '../../../slave/spool/index.js';

const o = compileExecutorOptions({ dataDir: '/tmp/builder-unused', maxScriptBytes: 100, maxEnvBytes: 50 });
const base: AttemptSpec = { jobId: 'j', attempt: 1, name: 'n', channel: 'c', arch: 'x86_64', script: 'true' };
const invalid = (e: unknown): boolean => isBuilderError(e, 'BUILDER_ERR_INVALID_INPUT');

describe('slave/executor attempt spec', () => {
  it('accepts a plain spec and fills the defaults', () => {
    const c = checkAttemptSpec(base, o);
    assert.equal(c.jobId, 'j');
    assert.equal(c.slots, 1);
    assert.equal(c.firstSeq, 1);
    assert.equal(c.timeoutMs, o.defaultTimeoutMs);
    assert.deepEqual(c.command, { kind: 'script', text: 'true' });
  });

  it('needs exactly one of script and argv', () => {
    assert.throws(() => checkAttemptSpec({ ...base, script: undefined }, o), invalid);
    assert.throws(() => checkAttemptSpec({ ...base, argv: ['true'] }, o), invalid);
    assert.throws(() => checkAttemptSpec({ ...base, script: undefined, argv: [] }, o), invalid);
    assert.deepEqual(checkAttemptSpec({ ...base, script: undefined, argv: ['make', '-j2'] }, o).command, { kind: 'argv', argv: ['make', '-j2'] });
  });

  it('enforces maxScriptBytes and maxEnvBytes', () => {
    assert.throws(() => checkAttemptSpec({ ...base, script: 'x'.repeat(101) }, o), invalid);
    checkAttemptSpec({ ...base, script: 'x'.repeat(100) }, o);
    assert.throws(() => checkAttemptSpec({ ...base, env: { A: 'x'.repeat(48) } }, o), invalid);
    checkAttemptSpec({ ...base, env: { A: 'x'.repeat(47) } }, o);
  });

  it('refuses BUILDER_* variables, bad names and NUL in the job env', () => {
    assert.throws(() => checkAttemptSpec({ ...base, env: { BUILDER_JOB_ID: 'other' } }, o), (e) => invalid(e) && /BUILDER_JOB_ID/.test((e as Error).message));
    assert.throws(() => checkAttemptSpec({ ...base, env: { 'A-B': '1' } }, o), invalid);
    assert.throws(() => checkAttemptSpec({ ...base, env: { A: 'x\0y' } }, o), invalid);
  });

  it('refuses names that would become unsafe paths, and bad numbers', () => {
    assert.throws(() => checkAttemptSpec({ ...base, jobId: 'a/b' }, o), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'));
    assert.throws(() => checkAttemptSpec({ ...base, channel: '..' }, o), (e) => isBuilderError(e, 'BUILDER_ERR_INVALID_NAME'));
    assert.throws(() => checkAttemptSpec({ ...base, attempt: 0 }, o), invalid);
    assert.throws(() => checkAttemptSpec({ ...base, slots: 0 }, o), invalid);
    assert.throws(() => checkAttemptSpec({ ...base, timeoutMs: -1 }, o), invalid);
  });

  it('compiles options once and refuses nonsense', () => {
    assert.throws(() => compileExecutorOptions({ dataDir: '' }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    assert.throws(() => compileExecutorOptions({ dataDir: '/x', capacity: 0 }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    assert.throws(() => compileExecutorOptions({ dataDir: '/x', shell: 'sh' }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    assert.equal(compileExecutorOptions({ dataDir: '/x/./y' }).workRoot, '/x/y/work');
  });
});

describe('slave/executor OutputBatcher', () => {
  function make(batchBytes: number, maxChunkBytes: number): { b: OutputBatcher; got: LogChunk[][] } {
    const got: LogChunk[][] = [];
    const b = new OutputBatcher({ append: async (c) => void got.push([...c]) }, { batchBytes, flushIntervalMs: 3_600_000, maxChunkBytes }, 7, () => undefined, () => undefined);
    return { b, got };
  }

  it('holds small output until the batch is full or flushed, merging runs of one stream', async () => {
    const { b, got } = make(10, 100);
    b.push('stdout', Buffer.from('ab'));
    b.push('stdout', Buffer.from('cd'));
    b.push('stderr', Buffer.from('E'));
    b.push('stdout', Buffer.from('f'));
    assert.equal(got.length, 0, 'nothing is sent before the batch fills or the interval passes');
    await b.flush();
    assert.deepEqual(got.flat().map((c) => [c.seq, c.stream, c.data.toString()]), [[7, 'stdout', 'abcd'], [8, 'stderr', 'E'], [9, 'stdout', 'f']]);
    assert.equal(b.lastSeq, 9);
  });

  it('writes a batch as soon as it reaches batchBytes, and splits chunks at maxChunkBytes', async () => {
    const { b, got } = make(8, 4);
    b.push('stdout', Buffer.from('0123456789'));
    await new Promise((r) => setImmediate(r));
    assert.equal(got.length, 1, 'a full batch goes without waiting for the interval');
    assert.deepEqual(got[0]!.map((c) => c.data.toString()), ['0123', '4567', '89']);
    await b.flush();
  });
});
