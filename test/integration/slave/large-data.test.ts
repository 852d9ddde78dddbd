import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArtifactReceiver, uploadArtifact, type UploadTarget } from '../../../slave/artifacts/index.js';
import { compileExecutorOptions, runAttempt, type AttemptHandle } from '../../../slave/executor/index.js';
import { LogSpool, SpoolSender, type SpoolRecord } from '../../../slave/spool/index.js';
import { ProcessReaper } from './helpers.js';

const MiB = 1024 * 1024;
const LINE = 'builder log line 0123456789abcdef\n';

/** sha256 of `total` bytes of LINE repeated (what `yes ... | head -c total` prints), streamed. */
function expectedYesHash(total: number): string {
  const block = Buffer.from(LINE.repeat(Math.floor(MiB / LINE.length)));
  const h = createHash('sha256');
  let left = total;
  while (left > 0) {
    const n = Math.min(left, block.length);
    h.update(block.subarray(0, n));
    left -= n;
  }
  return h.digest('hex');
}

/** A fake master end of the log stream: keeps the first copy of each seq, hashes stdout, never holds the log. */
class LogReceiver {
  nextSeq = 1;
  stdoutBytes = 0;
  stderr = '';
  ended = false;
  outOfOrder = 0;
  private hash = createHash('sha256');
  connected = true;
  /** The connection drops once this many stdout bytes have arrived (once). */
  dropAfterBytes = Infinity;
  receive(recs: readonly SpoolRecord[]): void {
    if (this.stdoutBytes >= this.dropAfterBytes) {
      this.dropAfterBytes = Infinity;
      this.connected = false;
    }
    if (!this.connected) throw new Error('connection lost');
    for (const r of recs) {
      if (r.seq < this.nextSeq) continue; // a resend after a reconnect
      if (r.seq !== this.nextSeq) this.outOfOrder++;
      this.nextSeq = r.seq + 1;
      if (r.kind === 'data' && r.stream === 'stdout') {
        this.hash.update(r.data);
        this.stdoutBytes += r.data.length;
      } else if (r.kind === 'data') {
        this.stderr += r.data.toString();
      } else if (r.kind === 'end') {
        this.ended = true;
      } else {
        this.outOfOrder++;
      }
    }
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

describe('slave large data (real processes)', function () {
  this.timeout(90_000);
  let root: string;
  const reaper = new ProcessReaper();
  const handles: AttemptHandle[] = [];
  const spools: LogSpool[] = [];

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-large-'));
  });
  afterEach(async () => {
    for (const h of handles.splice(0)) reaper.addGroup(h.pid);
    await reaper.reap();
    for (const s of spools.splice(0)) await s.close();
    await rm(root, { recursive: true, force: true });
  });

  describe('when a job writes 100 MiB to stdout and the master is unreachable for a while mid-job', () => {
    it('delivers the log complete and in order (hash checked) with bounded slave memory', async () => {
      const total = 100 * MiB;
      const o = compileExecutorOptions({ dataDir: join(root, 'data'), killGraceMs: 500 });
      const spool = await LogSpool.open(join(root, 'data', 'spool', 'big-1'));
      spools.push(spool);
      const master = new LogReceiver();
      master.dropAfterBytes = 10 * MiB;
      let disconnects = 0;
      let jobEnded = false;
      let disconnectedWhileRunning = false;
      let jobDone!: () => void;
      const jobDonePromise = new Promise<void>((res) => (jobDone = res));
      const sender = new SpoolSender(spool, async (recs) => master.receive(recs), {
        onError: () => {
          disconnects++;
          disconnectedWhileRunning = !jobEnded;
          // Reconnect once the job has gone on writing (into the spool only) for a while, or has ended.
          void Promise.race([spool.waitFor(spool.lastSeq + 40), jobDonePromise]).then(() => {
            master.connected = true;
            sender.start(master.nextSeq);
          });
        },
      });
      sender.start();
      const rssBase = process.memoryUsage().rss;
      let rssMax = rssBase;
      const sampler = setInterval(() => {
        rssMax = Math.max(rssMax, process.memoryUsage().rss);
      }, 5);
      const t0 = process.hrtime.bigint();
      const h = runAttempt(
        { jobId: 'big', attempt: 1, name: 'big', channel: 'c', arch: 'x86_64', script: `echo start >&2; yes '${LINE.trimEnd()}' | head -c ${total}; echo done >&2` },
        spool,
        o,
      );
      handles.push(h);
      void h.result.then(() => {
        jobEnded = true;
        jobDone();
      });
      const r = await h.result;
      await spool.end();
      await sender.done;
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      clearInterval(sampler);
      assert.equal(r.outcome, 'succeeded');
      assert.equal(r.stdoutBytes, total);
      assert.equal(disconnects, 1, 'the master was unreachable once, mid-job');
      assert.ok(disconnectedWhileRunning, 'the disconnect happened mid-job');
      assert.equal(master.outOfOrder, 0, 'no gap and no reordering');
      assert.equal(master.stdoutBytes, total);
      assert.equal(master.digest(), expectedYesHash(total));
      assert.equal(master.stderr, 'start\ndone\n');
      assert.equal(master.ended, true);
      assert.equal(spool.bytes, 0, 'acknowledged log is gone from disk');
      const growth = (rssMax - rssBase) / MiB;
      // Sanity bound: 100 MiB of output must not be held in memory.
      assert.ok(growth < 80, `slave RSS grew by ${growth.toFixed(1)} MiB`);
      console.log(`      100 MiB stdout: ${(total / MiB / secs).toFixed(0)} MiB/s end to end, RSS growth ${growth.toFixed(1)} MiB, ${r.lastSeq} seqs`);
    });
  });

  describe('when a job leaves a 200 MiB artifact and the upload is cut mid-way', () => {
    it('resumes at the receiver offset and the stored file has the collected sha256', async () => {
      const o = compileExecutorOptions({ dataDir: join(root, 'data') });
      const spool = await LogSpool.open(join(root, 'data', 'spool', 'art-1'));
      spools.push(spool);
      const h = runAttempt(
        { jobId: 'art', attempt: 1, name: 'img', channel: 'c', arch: 'x86_64', script: 'head -c 209715200 /dev/urandom > "$BUILDER_OUTPUT/disk.img"; exit 2' },
        spool,
        o,
      );
      handles.push(h);
      const r = await h.result;
      assert.equal(r.outcome, 'failed');
      const art = r.artifacts?.artifacts[0];
      assert.ok(art);
      assert.equal(art.size, 200 * MiB);
      const sourceSum = execFileSync('sha256sum', [art.absPath], { encoding: 'utf8' }).split(' ')[0];
      assert.equal(art.sha256, sourceSum, 'collection hashed the file correctly');

      const store = join(root, 'master-store');
      await mkdir(store);
      let receiver: ArtifactReceiver | undefined;
      let chunks = 0;
      let cutAt = 300;
      const target: UploadTarget = {
        async begin(info) {
          // A new receiver each time, as after a master restart: it resumes from the .part on disk.
          receiver = await ArtifactReceiver.open(store, info.path, { size: info.size, sha256: info.sha256 });
          return { offset: receiver.offset };
        },
        async sendChunk(offset, data) {
          if (++chunks === cutAt) throw new Error('connection lost');
          await receiver!.write(offset, data);
        },
        finish: () => receiver!.finish(),
      };
      const t0 = process.hrtime.bigint();
      await assert.rejects(uploadArtifact(art, target), /connection lost/);
      await receiver!.abort(true);
      cutAt = -1;
      const res = await uploadArtifact(art, target);
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      assert.ok(res.resumedAt > 0 && res.resumedAt < art.size, `resumed at ${res.resumedAt}`);
      assert.equal(res.bytesSent, art.size - res.resumedAt);
      const storedSum = execFileSync('sha256sum', [join(store, 'disk.img')], { encoding: 'utf8' }).split(' ')[0];
      assert.equal(storedSum, art.sha256);
      console.log(`      200 MiB artifact: uploaded with one resume in ${secs.toFixed(2)} s`);
    });
  });
});
