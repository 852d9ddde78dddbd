import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readlinkSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuilderError, ErrorCodes, RpcCallError } from '../../../protocol/index.js';
import type { SlaveRuntime } from '../../../slave/index.js';
import { alive, attemptDirs, fastRuntimeOptions, readSlotRecord, slaveTestBed, startRuntime, stopRuntime, until } from './helpers/setup.js';
import type { TestMaster } from './helpers/test-master.js';

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

describe('slave runtime against a real RPC master (mutual TLS, real processes)', function () {
  this.timeout(60_000);
  const bed = slaveTestBed('slave-rt-');
  let root: string;
  let dir: string;
  let master: TestMaster;
  let n: number;
  let rt: SlaveRuntime | undefined;
  const pids: number[] = [];

  beforeEach(async function () {
    ({ root, dir, master, n } = bed);
    await master.listen(0);
  });
  afterEach(async function () {
    const r = rt;
    rt = undefined;
    await stopRuntime(r, pids);
    await master.close();
  });

  describe('when an attempt ends', function () {
    it('sends the log end inside attempt.finish: a silent job makes no attempt.log call, a chatty one sends its output first', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      await master.assign({ jobId: 40, command: { kind: 'argv', argv: ['true'] } });
      const quiet = await master.waitFinish(40);
      assert.equal(quiet.logCalls, 0);
      assert.equal(quiet.finishCalls, 1);
      assert.equal(quiet.finish!.logEnd, 1);
      assert.deepEqual(quiet.records, [{ kind: 'end', seq: 1 }]);
      assert.equal(quiet.finish!.state, 'succeeded');

      await master.assign({ jobId: 41, command: { kind: 'script', text: 'echo out; echo err >&2' } });
      const chatty = await master.waitFinish(41);
      assert.ok(chatty.logCalls >= 1);
      const last = chatty.records[chatty.records.length - 1]!;
      assert.equal(last.kind, 'end');
      assert.equal(chatty.finish!.logEnd, last.seq);
      assert.equal(master.text(41), 'out\n');
      assert.equal(master.text(41, 'stderr'), 'err\n');
      await until(() => rt!.attempts().length === 0, 'the attempts to be forgotten');
      assert.deepEqual(await attemptDirs(dir), []);
    });

    it('sends the log end through attempt.log and then finishes when the master refuses logEnd (an older master)', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      master.refuseLogEnd = true;
      await master.assign({ jobId: 42, command: { kind: 'script', text: 'echo one; echo two' } });
      const a = await master.waitFinish(42);
      assert.equal(a.finishCalls, 2, 'refused once with logEnd, then taken without');
      assert.equal(a.finish!.logEnd, undefined);
      assert.equal(a.finish!.state, 'succeeded');
      assert.equal(a.records[a.records.length - 1]?.kind, 'end');
      assert.equal(master.text(42), 'one\ntwo\n');
      assert.equal(a.duplicates, 0);
    });
  });

  describe('when the master assigns an attempt', function () {
    it('fetches inputs, streams both streams in order, uploads artifacts (also refusing a symlink), and reports the finish after the log end', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      const input = Buffer.from('hello input\n'.repeat(1000));
      const inp = master.addInput(input);
      const res = await master.assign({
        jobId: 7,
        name: 'build-foo',
        inputs: [{ name: 'src/foo.txt', ...inp }],
        env: { GREETING: 'hi' },
        command: {
          kind: 'script',
          text: [
            'set -e',
            'echo "start $BUILDER_JOB_ID $BUILDER_JOB_NAME $GREETING"',
            'echo "to stderr" >&2',
            'cat "$BUILDER_INPUT/src/foo.txt" | wc -l',
            'mkdir -p "$BUILDER_OUTPUT/sub"',
            'printf "deb-bytes" > "$BUILDER_OUTPUT/foo_1.0_amd64.deb"',
            'head -c 3000000 /dev/urandom > "$BUILDER_OUTPUT/sub/image.bin"',
            'ln -s /etc/passwd "$BUILDER_OUTPUT/passwd"',
            'cp "$BUILDER_INPUT/src/foo.txt" "$BUILDER_OUTPUT/copy.txt"',
            'echo done',
          ].join('\n'),
        },
      });
      assert.deepEqual(res, { accepted: true });
      const a = await master.waitFinish(7);
      const f = a.finish!;
      assert.equal(f.state, 'succeeded');
      assert.equal(f.exitCode, 0);
      assert.equal(f.signal, null);
      assert.equal(f.setupFailure, false);
      assert.equal(master.text(7), 'start 7 build-foo hi\n1000\ndone\n');
      assert.equal(master.text(7, 'stderr'), 'to stderr\n');
      // Seqs strictly increase across both streams, and the end record is last.
      const seqs = a.records.map((r) => r.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
      assert.equal(new Set(seqs).size, seqs.length);
      assert.equal(a.records[a.records.length - 1]?.kind, 'end');
      // Every artifact the finish names was committed on the master with the same sha256.
      assert.deepEqual(f.artifacts.map((x) => x.path).sort(), ['copy.txt', 'foo_1.0_amd64.deb', 'sub/image.bin']);
      for (const x of f.artifacts) {
        const stored = a.artifacts.get(x.path);
        assert.ok(stored, x.path);
        assert.equal(stored.sha256, x.sha256);
        assert.equal(sha(await readFile(stored.absPath)), x.sha256);
      }
      assert.equal(a.artifacts.get('copy.txt')?.sha256, inp.sha256);
      assert.deepEqual(f.refused.map((r) => [r.path, r.reason]), [['passwd', 'symlink']]);
      assert.deepEqual(f.conflicts, []);
      // The slave forgets the attempt once the master has it.
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
      assert.deepEqual(await attemptDirs(dir), []);
      assert.equal(existsSync(join(dir, 'work', '7-1')), false);
      const rec = await readSlotRecord(dir);
      assert.deepEqual(
        rec.lines.filter((l) => l.event === 'start' || l.event === 'end').map((l) => [l.event, 'key' in l ? l.key : '', 'usedAfter' in l ? l.usedAfter : -1]),
        [
          ['start', '7-1', 1],
          ['end', '7-1', 0],
        ],
      );
    });

    it('delivers the artifacts of a failing job, its exit code, and an artifact that shadows an input with other content', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      const inp = master.addInput(Buffer.from('original'));
      await master.assign({
        jobId: 8,
        inputs: [{ name: 'data.txt', ...inp }],
        command: { kind: 'script', text: 'echo partial > "$BUILDER_OUTPUT/partial.log"; echo changed > "$BUILDER_OUTPUT/data.txt"; echo failing; exit 3' },
      });
      const f = (await master.waitFinish(8)).finish!;
      assert.equal(f.state, 'failed');
      assert.equal(f.exitCode, 3);
      assert.equal(f.setupFailure, false);
      assert.match(f.reason ?? '', /exit code 3/);
      assert.deepEqual(f.artifacts.map((x) => x.path).sort(), ['data.txt', 'partial.log']);
      assert.deepEqual(f.conflicts, [{ path: 'data.txt', inputSha256: inp.sha256, artifactSha256: sha('changed\n') }]);
      assert.equal(master.text(8), 'failing\n');
    });

    it('reports an input whose bytes do not match their sha256 as a setup failure, and never runs the job', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      const inp = master.addInput(Buffer.from('good bytes'));
      // The master's store is corrupt: same key, other bytes.
      master.inputs.set(inp.sha256, Buffer.from('evil bytes'));
      const marker = join(root, `ran-${n}`);
      await master.assign({ jobId: 9, inputs: [{ name: 'in.txt', ...inp }], command: { kind: 'script', text: `touch ${marker}` } });
      const f = (await master.waitFinish(9)).finish!;
      assert.equal(f.state, 'failed');
      assert.equal(f.setupFailure, true);
      assert.equal(f.exitCode, null);
      assert.match(f.reason ?? '', /setup failed: input in\.txt: sha256/);
      assert.equal(existsSync(marker), false);
    });

    it('reports a slave that cannot make the attempt files as a setup failure, without running the job', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      // DIR/attempts is a file: every attempt dir fails with ENOTDIR, as a broken disk would.
      await writeFile(join(dir, 'attempts'), 'not a directory');
      const marker = join(root, `ran-${n}`);
      assert.deepEqual(await master.assign({ jobId: 13, command: { kind: 'script', text: `touch ${marker}` } }), { accepted: true });
      const a = await master.waitFinish(13);
      assert.equal(a.finish!.state, 'failed');
      assert.equal(a.finish!.setupFailure, true);
      assert.match(a.finish!.reason ?? '', /cannot make the attempt's files: ENOTDIR/);
      assert.deepEqual(a.records, [{ kind: 'end', seq: 1 }]);
      assert.equal(existsSync(marker), false);
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
    });

    it('reports a job that names a missing program as a failure of the job, not of the slave', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      await master.assign({ jobId: 10, command: { kind: 'argv', argv: ['/nonexistent/program'] } });
      const f = (await master.waitFinish(10)).finish!;
      assert.equal(f.state, 'failed');
      assert.equal(f.setupFailure, false);
      assert.match(f.reason ?? '', /could not run/);
    });

    it('times a job out on its own timeout, and fails a job whose input list is wrong without blaming the slave', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      await master.assign({ jobId: 11, timeoutMs: 300, command: { kind: 'script', text: 'echo start; sleep 30' } });
      const t = (await master.waitFinish(11)).finish!;
      assert.equal(t.state, 'timed_out');
      assert.equal(t.signal, 'SIGTERM');
      assert.match(t.reason ?? '', /timed out after 300 ms/);
      const inp = master.addInput(Buffer.from('x'));
      await master.assign({ jobId: 12, inputs: [{ name: 'a', ...inp }, { name: 'a', ...inp }], command: { kind: 'script', text: 'true' } });
      const f = (await master.waitFinish(12)).finish!;
      assert.equal(f.state, 'failed');
      assert.equal(f.setupFailure, false);
      assert.match(f.reason ?? '', /listed twice/);
    });

    it('refuses an attempt beyond its free slots, a job heavier than its capacity, a foreign channel or arch, and anything while draining', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 2 }));
      await master.assign({ jobId: 20, slots: 2, command: { kind: 'script', text: 'sleep 30' } });
      const refused = async (p: Parameters<TestMaster['assign']>[0], code: number, re: RegExp): Promise<void> => {
        await assert.rejects(master.assign(p), (e: unknown) => {
          assert.ok(e instanceof RpcCallError);
          assert.equal(e.rpcCode, code, e.message);
          assert.match(e.message, re);
          return true;
        });
      };
      await refused({ jobId: 21, command: { kind: 'script', text: 'true' } }, ErrorCodes.UNAVAILABLE, /not enough free slots: 0 free of 2, the job needs 1/);
      await refused({ jobId: 22, slots: 3, command: { kind: 'script', text: 'true' } }, ErrorCodes.INVALID_INPUT, /a job of 3 slots cannot run on this slave of 2/);
      await refused({ jobId: 23, channel: 'other', command: { kind: 'script', text: 'true' } }, ErrorCodes.INVALID_INPUT, /channel other is not one of this slave's channels/);
      await refused({ jobId: 24, arch: 'arm64', command: { kind: 'script', text: 'true' } }, ErrorCodes.INVALID_INPUT, /arch arm64 is not one/);
      await refused({ jobId: 20, attempt: 2, command: { kind: 'script', text: 'true' } }, ErrorCodes.CONFLICT, /job 20 already runs here/);
      // The same attempt again (a lost reply) is accepted, not run twice.
      assert.deepEqual(await master.slave!.call('attempt.assign', { jobId: 20, attempt: 1, name: 'job-20', channel: 'main', arch: 'x86_64', slots: 2, command: { kind: 'script', text: 'sleep 30' }, env: {}, timeoutMs: 0, inputs: [] }), {
        accepted: true,
      });
      assert.equal(rt.attempts().length, 1);
      await master.cancel(20, 1, 'cancelled');
      await master.waitFinish(20);
      await until(() => rt!.executor.freeSlots === 2, 'the slots to be free');
      await rt.setDraining(true);
      assert.deepEqual(master.drainingCalls, [true]);
      await refused({ jobId: 25, command: { kind: 'script', text: 'true' } }, ErrorCodes.UNAVAILABLE, /draining/);
      await rt.setDraining(false);
      assert.deepEqual(await master.assign({ jobId: 25, command: { kind: 'script', text: 'true' } }), { accepted: true });
      await master.waitFinish(25);
      const rec = await readSlotRecord(dir);
      assert.ok(rec.maxUsed <= 2 && rec.maxReplayed <= 2, JSON.stringify(rec));
    });

    it('never runs more than its capacity in slots when the master assigns as fast as it can', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 3 }));
      let accepted = 0;
      let refusedCount = 0;
      const weights = [1, 2, 1, 3, 1, 1, 2, 1, 2, 1, 1, 3, 1, 2, 1, 1];
      for (let i = 0; i < weights.length; i++) {
        const jobId = 100 + i;
        try {
          // Jobs of random length, assigned back to back while earlier ones run.
          await master.assign({ jobId, slots: weights[i], command: { kind: 'script', text: `sleep 0.${(i % 3) + 1}` } });
          accepted++;
        } catch (e) {
          assert.ok(e instanceof RpcCallError && e.rpcCode === ErrorCodes.UNAVAILABLE, String(e));
          refusedCount++;
          master.attempts.delete(`${jobId}-1`);
          await sleep(60);
        }
      }
      await until(() => [...master.attempts.values()].every((a) => a.finish !== undefined), 'every accepted attempt to finish');
      assert.ok(accepted >= 4 && refusedCount >= 1, `accepted ${accepted}, refused ${refusedCount}`);
      const rec = await readSlotRecord(dir);
      assert.ok(rec.maxReplayed <= 3 && rec.maxUsed <= 3, JSON.stringify(rec.lines));
      assert.ok(rec.maxReplayed >= 2, 'the test did run attempts concurrently');
      assert.equal(rec.lines.filter((l) => l.event === 'start').length, accepted);
    });
  });

  describe('when the connection to the master drops mid-job', function () {
    it('spools the log while the master is unreachable, resends from nextSeq, loses and repeats nothing, and does not rerun the job', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      const runs = join(root, `runs-${n}`);
      await master.assign({
        jobId: 30,
        command: {
          kind: 'script',
          text: `echo run >> ${runs}; i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo "line $i"; echo "err $i" >&2; sleep 0.04; done; head -c 2000000 /dev/urandom > "$BUILDER_OUTPUT/big.bin"`,
        },
      });
      await until(() => master.text(30).includes('line 5\n'), 'some output');
      // The master goes away entirely (listener closed) while the job prints on.
      await master.close();
      await sleep(1000);
      await master.listen();
      const f = (await master.waitFinish(30)).finish!;
      assert.equal(f.state, 'succeeded');
      const lines = Array.from({ length: 60 }, (_, i) => `line ${i + 1}\n`).join('');
      assert.equal(master.text(30), lines);
      assert.equal(master.text(30, 'stderr'), Array.from({ length: 60 }, (_, i) => `err ${i + 1}\n`).join(''));
      const seqs = master.get(30).records.map((r) => r.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
      assert.equal((await readFile(runs, 'utf8')).trim(), 'run');
      // The reconnect's subscribe carried the attempt, and the master kept it.
      assert.ok(master.subscribes.length >= 2);
      assert.deepEqual(master.subscribes[master.subscribes.length - 1]!.running, [{ jobId: 30, attempt: 1, slots: 1 }]);
      assert.equal(f.artifacts.length, 1);
    });

    it('resumes an artifact upload cut mid-way at the offset the master holds', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { uploadChunkBytes: 64 * 1024, uploadWindow: 2 }));
      await master.assign({ jobId: 31, command: { kind: 'script', text: 'head -c 8000000 /dev/urandom > "$BUILDER_OUTPUT/blob.bin"' } });
      await until(() => (master.attempts.get('31-1')?.chunkCalls ?? 0) >= 20, 'part of the upload');
      master.dropConnections();
      const a = await master.waitFinish(31);
      const x = a.finish!.artifacts[0]!;
      assert.equal(x.size, 8_000_000);
      assert.equal(sha(await readFile(a.artifacts.get('blob.bin')!.absPath)), x.sha256);
      // Resumed, not restarted: one upload's chunks plus at most the window lost in flight.
      assert.ok(a.chunkCalls <= Math.ceil(8_000_000 / (64 * 1024)) + 2, `chunk calls ${a.chunkCalls}`);
    });

    it('sends attempt.finish again after the connection dropped during it', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      master.dropOnFinishOnce = true;
      await master.assign({ jobId: 34, command: { kind: 'script', text: 'echo a > "$BUILDER_OUTPUT/a"; echo ok' } });
      const a = await master.waitFinish(34);
      assert.equal(a.finishCalls, 2);
      assert.equal(a.finish!.state, 'succeeded');
      assert.deepEqual(a.finish!.artifacts.map((x) => x.path), ['a']);
      assert.equal(master.text(34), 'ok\n');
      assert.ok(master.subscribes.length >= 2);
    });

    it('resends a log batch the master did not fully store', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      master.shortStoreOnce = true;
      await master.assign({ jobId: 32, command: { kind: 'script', text: 'echo one; sleep 0.2; echo two' } });
      await master.waitFinish(32);
      assert.equal(master.text(32), 'one\ntwo\n');
    });

    it('kills and forgets an attempt the master abandoned while it was away, sending it nothing more', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      const pidFile = join(root, `pid-${n}`);
      await master.assign({ jobId: 33, command: { kind: 'script', text: `echo $$ > ${pidFile}; exec sleep 30` } });
      await until(() => existsSync(pidFile) && rt!.attempts()[0]?.pid !== undefined, 'the job to start');
      const pid = rt.attempts()[0]!.pid!;
      master.abandonAll = true;
      master.dropConnections();
      await until(async () => !(await alive(pid)), 'the job to be killed');
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
      assert.equal(master.get(33).finish, undefined);
      assert.deepEqual(await attemptDirs(dir), []);
    });
  });

  describe('when it starts with attempts left on disk', function () {
    it('sets aside an attempt dir it cannot read, and starts anyway', async function () {
      const bad = join(dir, 'attempts', '77-1');
      await mkdir(bad, { recursive: true });
      const journal = [
        { t: 'accepted', jobId: 77, attempt: 1, slots: 1, name: 'x', acceptedAt: 0 },
        { t: 'outcome', outcome: { state: 'succeeded', exitCode: 0, signal: null, reason: null, setupFailure: false, refused: [], conflicts: [], artifacts: [], lastSeq: 0 } },
      ];
      await writeFile(join(bad, 'attempt.jsonl'), journal.map((l) => JSON.stringify(l) + '\n').join(''));
      // The spool's segment should be a file.
      await mkdir(join(bad, 'seg-0000000001.log'));
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      assert.deepEqual(master.subscribes[0]!.running, []);
      const left = await attemptDirs(dir);
      assert.equal(left.length, 1);
      assert.match(left[0]!, /^77-1\.unreadable-\d+$/);
      // The journal was reopened before the spool failed: its descriptor (a raw fd, which no
      // garbage collector closes) is closed again.
      const held = (await readdir('/proc/self/fd')).flatMap((f) => {
        try {
          return [readlinkSync(join('/proc/self/fd', f))];
        } catch {
          return [];
        }
      });
      assert.deepEqual(held.filter((t) => t.startsWith(bad)), []);
    });
  });

  describe('when the master abandons an attempt whose group takes a while to die', function () {
    it('waits for its slots before accepting the next assignment into them, instead of refusing', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 1 }));
      await master.assign({ jobId: 50, command: { kind: 'script', text: `trap '' TERM; echo up; while true; do sleep 0.05; done` } });
      await until(() => master.text(50).includes('up') && rt!.attempts()[0]?.pid !== undefined, 'the job to start');
      const pid = rt.attempts()[0]!.pid!;
      pids.push(pid);
      master.abandonAll = true;
      master.dropConnections();
      await until(() => master.subscribes.length >= 2 && master.slave !== undefined, 'the resubscribe');
      master.abandonAll = false;
      // The master counts the abandoned attempt's slot free; the group ignores SIGTERM for the kill grace (500 ms).
      assert.deepEqual(await master.assign({ jobId: 51, command: { kind: 'script', text: 'echo next' } }), { accepted: true });
      assert.equal(await alive(pid), false);
      await master.waitFinish(51);
      const rec = await readSlotRecord(dir);
      assert.ok(rec.maxUsed <= 1 && rec.maxReplayed <= 1, JSON.stringify(rec.lines));
    });
  });

  describe('when the master cancels', function () {
    it('kills the whole process group (a grandchild that ignores SIGTERM too) and reports cancelled', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      const gc = join(root, `gc-${n}`);
      await master.assign({
        jobId: 40,
        command: { kind: 'script', text: `(trap '' TERM; sleep 60) & echo $! > ${gc}; echo started; wait` },
      });
      await until(() => existsSync(gc) && master.text(40).includes('started'), 'the job to start');
      const gpid = Number((await readFile(gc, 'utf8')).trim());
      pids.push(gpid);
      assert.ok(await alive(gpid));
      assert.deepEqual(await master.cancel(40, 1, 'cancelled'), { found: true });
      // The answer comes once the group is gone and the slots are free (the master reuses them at once).
      assert.equal(await alive(gpid), false);
      assert.equal(rt.executor.freeSlots, 2);
      const f = (await master.waitFinish(40)).finish!;
      assert.equal(f.state, 'cancelled');
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
      assert.deepEqual(await master.cancel(40, 1, 'cancelled'), { found: false });
    });

    it('kills an attempt cancelled as abandoned and sends nothing more for it', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      await master.assign({ jobId: 42, command: { kind: 'script', text: 'echo go; exec sleep 30' } });
      await until(() => master.text(42).includes('go') && rt!.attempts()[0]?.pid !== undefined, 'the job to start');
      const pid = rt.attempts()[0]!.pid!;
      assert.deepEqual(await master.cancel(42, 1, 'abandoned'), { found: true });
      assert.equal(await alive(pid), false);
      assert.equal(rt.executor.freeSlots, 2);
      await until(() => rt!.attempts().length === 0, 'the attempt to be forgotten');
      await sleep(200);
      assert.equal(master.get(42).finish, undefined);
      assert.equal(master.get(42).finishCalls, 0);
    });

    it('reports a cancel for timeout as timed_out, and an unknown attempt as not found', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address));
      assert.deepEqual(await master.cancel(999, 1, 'cancelled'), { found: false });
      await master.assign({ jobId: 41, command: { kind: 'script', text: 'echo go; sleep 30' } });
      await until(() => master.text(41).includes('go'), 'the job to start');
      await master.cancel(41, 1, 'timed_out');
      const f = (await master.waitFinish(41)).finish!;
      assert.equal(f.state, 'timed_out');
      assert.match(f.reason ?? '', /timed out \(the master ended it\)/);
    });
  });

  describe('when an attempt ends while the next one arrives', function () {
    it('accepts the next attempt of a job whose abandoned attempt is still dying (the master dispatches right after the subscribe)', async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 2 }));
      await master.assign({ jobId: 50, command: { kind: 'script', text: "trap 'sleep 0.3; exit 1' TERM; sleep 30 & wait" } });
      await until(() => rt!.attempts()[0]?.pid !== undefined, 'the job to start');
      await sleep(100);
      master.abandonAll = true;
      const n = master.subscribes.length;
      master.dropConnections();
      await until(() => master.subscribes.length > n && master.slave !== undefined, 'the re-subscribe');
      // Refused ("already runs here"), it would count as a setup failure of this slave and use up an attempt.
      assert.deepEqual(await master.assign({ jobId: 50, attempt: 2, command: { kind: 'argv', argv: ['true'] } }), { accepted: true });
      assert.equal((await master.waitFinish(50, 2)).finish?.state, 'succeeded');
    });

    it("a cancel during the input fetch leaves no file of the old attempt in the next attempt's input dir", async function () {
      rt = await startRuntime(fastRuntimeOptions(dir, master.address, { capacity: 1 }));
      const a = master.addInput(Buffer.from('aaaaaaaaaa'));
      const b = master.addInput(Buffer.from('bbbbbbbbbbbb'));
      master.on('peer', (peer) =>
        setImmediate(() =>
          peer.handle('input.read', async (p) => {
            if (p.sha256 === a.sha256) await sleep(600);
            const buf = master.inputs.get(p.sha256);
            if (buf === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', 'no such input');
            return { data: buf.subarray(p.offset, p.offset + p.length) as Uint8Array<ArrayBuffer> };
          }),
        ),
      );
      master.dropConnections();
      await until(() => master.slave !== undefined && master.subscribes.length >= 2, 'reconnect');
      await sleep(50);
      await master.assign({ jobId: 60, command: { kind: 'argv', argv: ['true'] }, inputs: [{ name: 'a.txt', ...a }, { name: 'sub/b.txt', ...b }] });
      await sleep(150);
      const c = await master.cancel(60, 1, 'cancelled');
      assert.deepEqual(c, { found: true });
      await master.assign({ jobId: 61, command: { kind: 'script', text: 'sleep 1; cd "$BUILDER_INPUT" && find . -mindepth 1 | sort' } });
      await master.waitFinish(61);
      assert.equal(master.text(61), '');
    });
  });
});
