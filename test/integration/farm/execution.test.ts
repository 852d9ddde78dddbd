import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ProcessFarm, waitFor, type JobDetail } from '../../helpers/process-farm.js';
import { isAlive, sh, slaveTimings, waitForFile } from './setup.js';

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Every file under `dir`, relative, sorted. */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await walk(join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

describe('when real slaves run real job processes', function () {
  this.timeout(90_000);
  let farm: ProcessFarm;

  before(async function () {
    farm = await ProcessFarm.start({ shareCa: true });
    await farm.addSlave({ name: 'runner', capacity: 4, enroll: 'direct', args: slaveTimings({ killGraceMs: 1000 }) });
  });
  after(async function () {
    await farm?.stop();
  });

  /** The stdout (or stderr) text of an attempt's log as the master stored it. */
  async function logText(jobId: number, stream: 'stdout' | 'stderr' = 'stdout', attempt?: number): Promise<string> {
    const records = await farm.readLog(jobId, attempt);
    return Buffer.concat(records.flatMap((r) => (r.kind === 'data' && r.stream === stream ? [Buffer.from(r.data)] : []))).toString();
  }

  /** Downloads an artifact with artifact.read. */
  async function download(id: number, size: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (let off = 0; off < size; ) {
      const r = await farm.call('artifact.read', { id, offset: off, length: Math.min(1 << 20, size - off) });
      parts.push(Buffer.from(r.data));
      off += r.data.length;
      if (r.data.length === 0) break;
    }
    return Buffer.concat(parts);
  }

  it('times out a job on the slave: SIGTERM then SIGKILL to its group, state timed_out', async function () {
    const pidFile = join(farm.root, 'timeout.pid');
    const t0 = Date.now();
    const job = await farm.submitScript(`echo $$ > ${sh(pidFile)}\nexec sleep 60`, { name: 'too-slow', timeoutMs: 1000 });
    const pid = Number(await waitForFile(pidFile));
    const d = await farm.waitJob(job.id, undefined, 20_000);
    assert.equal(d.job.state, 'timed_out');
    assert.ok(Date.now() - t0 < 15_000, 'the timeout took far longer than asked');
    assert.equal(d.job.exitCode, null);
    assert.equal(d.job.signal, 'SIGTERM', 'the signal that ended the job is reported');
    assert.equal(await isAlive(pid), false, `process ${pid} still runs`);
  });

  it('cancels a running job: its process group is killed, the state is cancelled, the output so far is kept', async function () {
    const pidFile = join(farm.root, 'cancel.pid');
    const job = await farm.submitScript(`echo $$ > ${sh(pidFile)}\necho started\nsleep 60 & wait`, { name: 'cancel-me' });
    const pid = Number(await waitForFile(pidFile));
    await farm.waitJob(job.id, ['running']);
    const c = await farm.call('job.cancel', { id: job.id });
    assert.ok(['running', 'cancelled'].includes(c.job.state), c.job.state);
    const d = await farm.waitJob(job.id, undefined, 20_000);
    assert.equal(d.job.state, 'cancelled');
    await waitFor(`process ${pid} gone`, async () => !(await isAlive(pid)), 5000);
    // The output written before the cancel reaches the master, then the log's end record.
    await waitFor(
      'the log of the cancelled attempt',
      async () => {
        const r = await farm.call('log.read', { jobId: job.id, fromSeq: 1 });
        const text = Buffer.concat(r.records.flatMap((x) => (x.kind === 'data' ? [Buffer.from(x.data)] : []))).toString();
        return text === 'started\n' && r.records.at(-1)?.kind === 'end';
      },
      10_000,
    );
    // A finished job cannot be cancelled again into another state.
    await assert.rejects(farm.call('job.cancel', { id: job.id }));
    assert.equal((await farm.getJob(job.id)).job.state, 'cancelled');
  });

  it('does not tell a reader that a cancelled attempt\'s log is complete before the slave has delivered it', async function () {
    const pidFile = join(farm.root, 'cancel-follow.pid');
    const job = await farm.submitScript(`echo $$ > ${sh(pidFile)}\necho started\nsleep 60 & wait`, { name: 'cancel-follow' });
    await waitForFile(pidFile);
    await farm.waitJob(job.id, ['running']);
    await farm.call('job.cancel', { id: job.id });
    // A follower (as `builder observe` does) reads until `ended`: it must get the whole log.
    const records = await farm.readLog(job.id, 1);
    const text = Buffer.concat(records.flatMap((r) => (r.kind === 'data' ? [Buffer.from(r.data)] : []))).toString();
    assert.equal(text, 'started\n', 'log.read said ended before the output written before the cancel was stored');
    assert.equal(records.at(-1)?.kind, 'end');
  });

  it('kills a grandchild that ignores SIGTERM, on timeout and when the script exits first', async function () {
    for (const mode of ['timeout', 'leader-exits'] as const) {
      const gpidFile = join(farm.root, `grandchild-${mode}.pid`);
      // The subshell forks the ignoring shell and exits: the shell is the script's grandchild.
      const grandchild = `( sh -c 'trap "" TERM; echo $$ > ${gpidFile.replaceAll("'", '')}; while :; do sleep 0.1; done' & )`;
      const script = mode === 'timeout' ? `${grandchild}\nsleep 60` : `${grandchild}\nwhile [ ! -s ${sh(gpidFile)} ]; do sleep 0.05; done\nexit 0`;
      const job = await farm.submitScript(script, { name: `grandchild-${mode}`, ...(mode === 'timeout' ? { timeoutMs: 1500 } : {}) });
      const gpid = Number(await waitForFile(gpidFile));
      assert.equal(await isAlive(gpid), true);
      const d = await farm.waitJob(job.id, undefined, 20_000);
      assert.equal(d.job.state, mode === 'timeout' ? 'timed_out' : 'succeeded', `${mode}: ${d.job.state}`);
      assert.equal(await isAlive(gpid), false, `${mode}: grandchild ${gpid} survived`);
    }
  });

  it('carries 100 MiB of stdout to the master intact', async function () {
    const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_-';
    const total = 100 * 1024 * 1024;
    const job = await farm.submitScript(`yes ${sh(line)} | head -c ${total}\necho done >&2`, { name: 'flood' });
    const d = await farm.waitJob(job.id, undefined, 60_000);
    assert.equal(d.job.state, 'succeeded');
    // Expected content: the line and a newline, repeated, cut at `total` bytes.
    const unit = Buffer.from(`${line}\n`);
    const expect = createHash('sha256');
    const block = Buffer.alloc(unit.length * 16384);
    for (let i = 0; i < 16384; i++) unit.copy(block, i * unit.length);
    for (let left = total; left > 0; left -= block.length) expect.update(left >= block.length ? block : block.subarray(0, left));
    // Read the master's log in 4 MiB pieces, hashing as it comes.
    const got = createHash('sha256');
    let bytes = 0;
    let stderr = '';
    let fromSeq = 1;
    let lastSeq = 0;
    for (;;) {
      const r = await farm.call('log.read', { jobId: job.id, fromSeq, maxBytes: 4 * 1024 * 1024 });
      for (const rec of r.records) {
        assert.equal(rec.seq, lastSeq + 1, 'seqs must be contiguous');
        lastSeq = rec.seq;
        assert.notEqual(rec.kind, 'dropped', 'output was dropped');
        if (rec.kind === 'data' && rec.stream === 'stdout') {
          got.update(rec.data);
          bytes += rec.data.length;
        } else if (rec.kind === 'data') stderr += Buffer.from(rec.data).toString();
      }
      fromSeq = r.nextSeq;
      if (r.ended && r.records.length === 0) break;
    }
    assert.equal(bytes, total);
    assert.equal(got.digest('hex'), expect.digest('hex'));
    assert.equal(stderr, 'done\n');
  });

  it('uploads a 200 MiB artifact whose sha256 on the master matches the job\'s', async function () {
    const size = 200 * 1024 * 1024;
    const job = await farm.submitScript(`head -c ${size} /dev/urandom > "$BUILDER_OUTPUT/big.img"\nsha256sum "$BUILDER_OUTPUT/big.img" | cut -d' ' -f1`, { name: 'big-image' });
    const d = await farm.waitJob(job.id, undefined, 60_000);
    assert.equal(d.job.state, 'succeeded');
    const jobSha = (await logText(job.id)).trim();
    assert.match(jobSha, /^[0-9a-f]{64}$/);
    const { artifacts } = await farm.call('artifact.list', { jobId: job.id });
    assert.deepEqual(
      artifacts.map((a) => [a.name, a.size, a.sha256, a.kind]),
      [['big.img', size, jobSha, 'image']],
    );
    // The master's own copy on disk, hashed here.
    const path = join(farm.masterDir, 'images', 'big-image', String(job.id), 'big.img');
    assert.equal(await sha256File(path), jobSha);
  });

  it('refuses and reports artifact paths that escape BUILDER_OUTPUT, and keeps the rest', async function () {
    const job = await farm.submitScript(
      [
        'ln -s /etc/passwd "$BUILDER_OUTPUT/passwd"',
        'ln -s .. "$BUILDER_OUTPUT/up"',
        'mkdir "$BUILDER_OUTPUT/d"',
        'ln -s ../../../.. "$BUILDER_OUTPUT/d/escape"',
        'echo fine > "$BUILDER_OUTPUT/fine.txt"',
      ].join('\n'),
      { name: 'escaper' },
    );
    const d = await farm.waitJob(job.id, undefined, 20_000);
    const { artifacts } = await farm.call('artifact.list', { jobId: job.id });
    assert.deepEqual(
      artifacts.map((a) => a.name),
      ['fine.txt'],
    );
    assert.deepEqual(await walk(join(farm.masterDir, 'images', 'escaper', String(job.id))), ['fine.txt']);
    // Reported to whoever looks at the job: the refused paths and why.
    const shown = reportText(d) + (await logText(job.id, 'stderr')) + (await logText(job.id, 'stdout'));
    for (const p of ['passwd', 'up', 'd/escape']) assert.ok(shown.includes(p), `refused path ${p} is not reported in: ${shown}`);
    assert.match(shown, /symlink/);
  });

  it('collects the artifacts of a failing job', async function () {
    const job = await farm.submitScript(['echo "half a report" > "$BUILDER_OUTPUT/report.txt"', 'mkdir -p "$BUILDER_OUTPUT/sub"', 'printf xyz > "$BUILDER_OUTPUT/sub/x.bin"', 'exit 3'].join('\n'), {
      name: 'broken',
    });
    const d = await farm.waitJob(job.id, undefined, 20_000);
    assert.equal(d.job.state, 'failed');
    assert.equal(d.job.exitCode, 3);
    const { artifacts } = await farm.call('artifact.list', { jobId: job.id });
    assert.deepEqual(artifacts.map((a) => a.name).sort(), ['report.txt', 'sub/x.bin']);
    const report = artifacts.find((a) => a.name === 'report.txt')!;
    assert.equal((await download(report.id, report.size)).toString(), 'half a report\n');
    const x = artifacts.find((a) => a.name === 'sub/x.bin')!;
    assert.equal((await download(x.id, x.size)).toString(), 'xyz');
  });

  it('files a .deb into incoming/ with its listing, and other files as images', async function () {
    const script = [
      'mkdir -p pkg/DEBIAN pkg/usr/share/doc/hello',
      "printf 'Package: hello\\nVersion: 1.0-1\\nArchitecture: amd64\\nMaintainer: Test <test@example.org>\\nDescription: test package\\n' > pkg/DEBIAN/control",
      'echo hi > pkg/usr/share/doc/hello/README',
      'dpkg-deb --root-owner-group --build pkg "$BUILDER_OUTPUT/hello_1.0-1_amd64.deb" >/dev/null',
      'echo "build log" > "$BUILDER_OUTPUT/build.log"',
      'sha256sum "$BUILDER_OUTPUT/hello_1.0-1_amd64.deb" | cut -d" " -f1',
    ].join('\n');
    const job = await farm.submitScript(script, { name: 'hello-deb', channel: 'main' });
    const d = await farm.waitJob(job.id, undefined, 20_000);
    assert.equal(d.job.state, 'succeeded', `${d.job.state} ${await logText(job.id, 'stderr')}`);
    const debSha = (await logText(job.id)).trim();
    const { artifacts } = await farm.call('artifact.list', { jobId: job.id });
    assert.deepEqual(
      artifacts.map((a) => [a.name, a.kind]).sort(),
      [
        ['build.log', 'image'],
        ['hello_1.0-1_amd64.deb', 'package'],
      ],
    );
    const incoming = join(farm.masterDir, 'incoming');
    const listings = await waitFor('a listing in incoming/', async () => {
      const names = (await readdir(incoming).catch(() => [] as string[])).filter((n) => n.endsWith('.listing.json'));
      return names.length > 0 ? names : undefined;
    });
    assert.equal(listings.length, 1);
    const batch = listings[0]!.slice(0, -'.listing.json'.length);
    const listing = JSON.parse(await readFile(join(incoming, listings[0]!), 'utf8')) as {
      version: number;
      batch: string;
      job: string;
      channel: string;
      files: Array<{ name: string; size: number; sha256: string }>;
    };
    assert.equal(listing.version, 1);
    assert.equal(listing.batch, batch);
    assert.equal(listing.job, String(job.id));
    assert.equal(listing.channel, 'main');
    assert.equal(listing.files.length, 1);
    const f = listing.files[0]!;
    assert.equal(f.name, 'hello_1.0-1_amd64.deb');
    assert.equal(f.sha256, debSha);
    const filed = join(incoming, batch, f.name);
    assert.equal(await sha256File(filed), debSha);
    assert.equal((await readFile(filed)).length, f.size);
    assert.deepEqual(await readdir(join(incoming, batch)), [f.name]);
    // The non-package file is an image, not in incoming/.
    assert.deepEqual(await walk(join(farm.masterDir, 'images', 'hello-deb', String(job.id))), ['build.log']);
  });
});

/** Everything the master tells a client about a job and its attempts, as one string. */
function reportText(d: JobDetail): string {
  return JSON.stringify(d);
}
