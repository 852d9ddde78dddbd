import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import { compileExecutorOptions, Executor, prepareWorkDir, runAttempt, slotWorkDir, WORK_SUBDIRS, type AttemptHandle, type AttemptSpec } from '../../../slave/executor/index.js';
import { MemorySink, ProcessReaper } from './helpers.js';

/** What a job sees of its work dir: every entry under it (find), and the mode of each of its dirs. */
const LOOK = 'cd "$BUILDER_WORKDIR" && find . -mindepth 1 | sort | tr "\\n" " "; echo; stat -c "%n %a %F" build home input output tmp';

/** A job that leaves a mess: files everywhere, a dir it cannot read, a subdir swapped for a symlink, a chmod on the work dir's subdirs. */
function messyScript(outside: string): string {
  return [
    'echo junk > "$HOME/.dotfile"',
    'mkdir -p build/deep/er && echo x > build/deep/er/f && chmod 000 build/deep/er build/deep',
    'echo t > "$TMPDIR/t"',
    'echo out > "$BUILDER_OUTPUT/art.txt"',
    `rmdir input && ln -s ${outside} input`,
    `rm -rf tmp && ln -s ${outside} tmp`,
    'chmod 755 output',
    'chmod 000 build',
    'echo done',
  ].join('\n');
}

describe('slave/executor per-slot work dirs (real processes)', function () {
  this.timeout(30_000);
  let root: string;
  let outside: string;
  const reaper = new ProcessReaper();
  const handles: AttemptHandle[] = [];
  const spec = (jobId: string, script: string, slots = 1): AttemptSpec => ({ jobId, attempt: 1, name: 'n', channel: 'c', arch: 'x86_64', script, slots });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-workdir-'));
    outside = join(root, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'canary'), 'must survive');
  });
  afterEach(async () => {
    for (const h of handles.splice(0)) reaper.addGroup(h.pid);
    await reaper.reap();
    // The messy job leaves 000 dirs only inside the work dir, which the executor empties; be safe anyway.
    await rm(root, { recursive: true, force: true });
  });

  describe('when a job fills, chmods and symlinks its work dir', () => {
    it('gives the next attempt in that slot the same dirs, empty and fresh, and touches nothing outside', async () => {
      const ex = new Executor({ dataDir: root, capacity: 1, killGraceMs: 200 });
      const first = ex.start(spec('messy', messyScript(outside)), new MemorySink());
      handles.push(first);
      const r1 = await first.result;
      assert.equal(r1.outcome, 'succeeded', r1.error?.message);
      // The artifact left the slot with its output dir, before the slot was emptied.
      assert.deepEqual(r1.artifacts?.artifacts.map((a) => a.path), ['art.txt']);
      assert.equal(r1.artifacts?.artifacts[0]?.absPath, join(root, 'work', 'messy-1', 'art.txt'));
      assert.equal(await readFile(join(r1.keptDir!, 'art.txt'), 'utf8'), 'out\n');
      assert.deepEqual(await readdir(outside), ['canary'], 'nothing outside the work dir was removed');

      const sink = new MemorySink();
      const second = ex.start(spec('next', LOOK), sink);
      handles.push(second);
      const r2 = await second.result;
      assert.equal(r2.outcome, 'succeeded', sink.text());
      assert.equal(r2.workDir, r1.workDir, 'the slot reuses its work dir');
      assert.equal(r2.workDir, slotWorkDir(join(root, 'work'), 0));
      const [entries, ...modes] = sink.text('stdout').split('\n');
      // Scripts are files by default (maxInlineScriptBytes 0): this attempt's own script is the only file.
      assert.equal(entries, './build ./home ./input ./output ./script ./tmp ', 'nothing but the five empty dirs and this attempt\'s script');
      assert.deepEqual(modes.filter((l) => l !== ''), ['build 700 directory', 'home 700 directory', 'input 700 directory', 'output 700 directory', 'tmp 700 directory']);
      assert.equal(await readFile(join(outside, 'canary'), 'utf8'), 'must survive');
      // And it is emptied again once the attempt is over.
      for (const d of WORK_SUBDIRS) assert.deepEqual(await readdir(join(r2.workDir, d)), []);
    });
  });

  describe('when attempts run at once', () => {
    it('gives each its own slot dir (a 2-slot job takes two slots and runs in the first), and a freed slot is reused', async () => {
      const ex = new Executor({ dataDir: root, capacity: 3, killGraceMs: 200 });
      const go = join(root, 'go');
      const wait = `while [ ! -e ${go} ]; do sleep 0.01; done; echo "$BUILDER_WORKDIR"`;
      const a = ex.start(spec('a', wait), new MemorySink());
      const b = ex.start(spec('b', wait, 2), new MemorySink());
      handles.push(a, b);
      assert.equal(a.workDir, slotWorkDir(join(root, 'work'), 0));
      assert.equal(b.workDir, slotWorkDir(join(root, 'work'), 1));
      assert.throws(() => ex.start(spec('c', 'true'), new MemorySink()), (e) => isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE'));
      await writeFile(go, '');
      await Promise.all([a.result, b.result]);
      const c = ex.start(spec('c', 'true', 3), new MemorySink());
      handles.push(c);
      assert.equal((await c.result).outcome, 'succeeded');
      assert.equal(c.workDir, slotWorkDir(join(root, 'work'), 0));
    });
  });

  describe('when a slot dir was damaged between attempts (or by a crash)', () => {
    it('replaces a symlink, a file or a wrong mode in place of a dir, and removes strays', async () => {
      const work = join(root, 'work');
      const dir = slotWorkDir(work, 0);
      await mkdir(join(root, 'work', 'slots'), { recursive: true });
      // The slot dir itself is a symlink to a dir outside.
      await symlink(outside, dir);
      await prepareWorkDir(work, dir, { runAs: undefined });
      assert.ok((await lstat(dir)).isDirectory());
      assert.deepEqual(await readdir(outside), ['canary']);
      // A file where build/ should be, output/ with mode 0777, a stray file, a leftover script.
      await rm(join(dir, 'build'), { recursive: true });
      await writeFile(join(dir, 'build'), 'x');
      await chmod(join(dir, 'output'), 0o777);
      await writeFile(join(dir, 'output', 'old'), 'x');
      await writeFile(join(dir, 'script'), 'x');
      await prepareWorkDir(work, dir, { runAs: undefined });
      assert.deepEqual((await readdir(dir)).sort(), ['build', 'home', 'input', 'output', 'tmp']);
      for (const d of WORK_SUBDIRS) {
        const st = await lstat(join(dir, d));
        assert.ok(st.isDirectory());
        assert.equal(st.mode & 0o7777, 0o700, d);
        assert.deepEqual(await readdir(join(dir, d)), []);
      }
    });

    it('sets every slot dir aside at start-up (a leftover process keeps only the old inodes) and removes it', async () => {
      const work = join(root, 'work');
      for (const i of [0, 5]) {
        await prepareWorkDir(work, slotWorkDir(work, i), { runAs: undefined });
        await writeFile(join(slotWorkDir(work, i), 'build', 'left'), 'x');
      }
      // A process of the dead slave's job that still sits in build/ (its cwd): modelled by a descriptor.
      const held = await open(join(slotWorkDir(work, 0), 'build'), 'r');
      // A trash an earlier start could not finish removing.
      await mkdir(join(work, '.trash-3-1'), { recursive: true });
      const ex = new Executor({ dataDir: root, capacity: 2 });
      assert.deepEqual(await ex.resetWorkDirs(), []);
      assert.deepEqual(await readdir(join(work, 'slots')), []);
      assert.deepEqual((await readdir(work)).filter((n) => n.startsWith('.trash-')), [], 'the dirs set aside are removed');
      try {
        const sink = new MemorySink();
        const h = ex.start(spec('after', 'sleep 0.3; ls -A'), sink);
        handles.push(h);
        // The leftover process writes into its old cwd while the next job runs in the slot.
        await new Promise((r) => setTimeout(r, 100));
        await assert.rejects(writeFile(join('/proc/self/fd', String(held.fd), 'planted'), 'x'), /ENOENT/, 'the old build/ is gone, not emptied and reused');
        assert.equal((await h.result).outcome, 'succeeded');
        assert.equal(sink.text('stdout'), '', 'the next job sees nothing of the old one');
      } finally {
        await held.close();
      }
    });

    it('sets a slot dir it cannot empty aside and makes a new one, so the slot stays usable', async () => {
      // A tree deeper than the descriptors the slave may open (ulimit -n 64 in a child process):
      // emptying it fails with EMFILE; the slot must still come back fresh.
      const work = join(root, 'work');
      const dir = slotWorkDir(work, 0);
      await prepareWorkDir(work, dir, { runAs: undefined });
      await mkdir(join(dir, 'build', ...Array.from({ length: 120 }, () => 'd')), { recursive: true });
      const mod = new URL('../../../slave/executor/work-dir.js', import.meta.url).href;
      const code = `import { resetWorkDir, prepareWorkDir } from ${JSON.stringify(mod)};
        import { readdirSync } from 'node:fs';
        let emptied = true;
        try { await prepareWorkDir(${JSON.stringify(work)}, ${JSON.stringify(dir)}, { runAs: undefined }); } catch (e) { emptied = e.code; }
        const trashErrors = [];
        await resetWorkDir(${JSON.stringify(work)}, ${JSON.stringify(dir)}, { runAs: undefined }, (p, e) => trashErrors.push(e.code));
        await new Promise((r) => setTimeout(r, 200));
        console.log(JSON.stringify({ emptied, entries: readdirSync(${JSON.stringify(dir)}).sort(), build: readdirSync(${JSON.stringify(join(dir, 'build'))}) }));`;
      const out = execFileSync('sh', ['-c', 'ulimit -n 64 && exec "$0" --input-type=module -e "$1"', process.execPath, code], { encoding: 'utf8', timeout: 20_000 });
      const r = JSON.parse(out) as { emptied: true | string; entries: string[]; build: string[] };
      assert.equal(r.emptied, 'EMFILE', 'the plain emptying fails on that tree');
      assert.deepEqual(r.entries, ['build', 'home', 'input', 'output', 'tmp']);
      assert.deepEqual(r.build, []);
    });
  });

  describe('when the job runs as its own user (runAs)', () => {
    it('hands the reused dirs to that user again after it chmodded and swapped them', async function () {
      if (process.getuid?.() !== 0) this.skip();
      await chmod(root, 0o711);
      const o = compileExecutorOptions({ dataDir: root, runAs: { uid: 65534, gid: 65534 }, killGraceMs: 200 });
      const first = runAttempt(spec('ra', messyScript(outside)), new MemorySink(), o);
      handles.push(first);
      await first.result;
      const sink = new MemorySink();
      // The job's user may enter its work dir (0711) but not list it, nor rename what is in it: a
      // leftover process of an earlier job cannot swap input/ for a symlink before the slave
      // fetches the next job's inputs into it.
      const look = 'cd "$BUILDER_WORKDIR" && stat -c "%n %a %F" build home input output tmp; find build home input output tmp -mindepth 1 | wc -l; ls . >/dev/null 2>&1 && echo LISTED || echo NOT-LISTED; mv input x 2>/dev/null && echo RENAMED || echo REFUSED';
      const second = runAttempt(spec('rb', look), sink, o);
      handles.push(second);
      const r2 = await second.result;
      assert.equal(r2.outcome, 'succeeded', sink.text());
      assert.deepEqual(sink.text('stdout').split('\n').filter((l) => l !== ''), [
        'build 700 directory', 'home 700 directory', 'input 755 directory', 'output 700 directory', 'tmp 700 directory', '0', 'NOT-LISTED', 'REFUSED',
      ]);
      const wd = r2.workDir;
      const top = await stat(wd);
      assert.deepEqual([top.uid, top.mode & 0o7777], [0, 0o711], 'the work dir stays the slave\'s');
      for (const d of ['build', 'home', 'output', 'tmp']) assert.equal((await stat(join(wd, d))).uid, 65534, `${d} is the job user's`);
      assert.equal((await stat(join(wd, 'input'))).uid, 0, 'input/ stays the slave\'s');
      assert.equal(await readFile(join(outside, 'canary'), 'utf8'), 'must survive');
    });
  });

  describe('when a script is short and has no #! line', () => {
    it('runs it as <shell> -c without writing a file, and a longer one from a file', async () => {
      const o = compileExecutorOptions({ dataDir: root, maxInlineScriptBytes: 200 });
      const short = new MemorySink();
      const h1 = runAttempt(spec('s1', 'ls -A "$BUILDER_WORKDIR"; echo "argc=$#"'), short, o);
      handles.push(h1);
      assert.equal((await h1.result).outcome, 'succeeded');
      assert.equal(short.text('stdout'), 'build\nhome\ninput\noutput\ntmp\nargc=0\n');
      const long = new MemorySink();
      const h2 = runAttempt(spec('s2', `ls -A "$BUILDER_WORKDIR"\n#${'x'.repeat(300)}`), long, o);
      handles.push(h2);
      assert.equal((await h2.result).outcome, 'succeeded');
      assert.equal(long.text('stdout'), 'build\nhome\ninput\noutput\nscript\ntmp\n');
      const shebang = new MemorySink();
      const h3 = runAttempt(spec('s3', '#!/bin/sh\necho "$0"'), shebang, o);
      handles.push(h3);
      assert.equal((await h3.result).outcome, 'succeeded');
      assert.equal(shebang.text('stdout'), `${join(h3.workDir, 'script')}\n`);
    });

    it('refuses an inline limit at or above what one argument may hold', () => {
      assert.throws(() => compileExecutorOptions({ dataDir: root, maxInlineScriptBytes: 128 * 1024 }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && /maxInlineScriptBytes/.test(e.message));
      assert.equal(compileExecutorOptions({ dataDir: root, maxInlineScriptBytes: 0 }).maxInlineScriptBytes, 0);
    });
  });

  describe('when keepWorkDirs is set', () => {
    it('moves the whole work dir aside for debugging and the slot gets a new one', async () => {
      const o = compileExecutorOptions({ dataDir: root, keepWorkDirs: true });
      const h = runAttempt(spec('kw', 'echo b > b; echo a > "$BUILDER_OUTPUT/a"'), new MemorySink(), o);
      handles.push(h);
      const r = await h.result;
      assert.equal(r.keptDir, join(root, 'work', 'kw-1'));
      assert.equal(await readFile(join(r.keptDir, 'build', 'b'), 'utf8'), 'b\n');
      assert.equal(r.artifacts?.artifacts[0]?.absPath, join(r.keptDir, 'output', 'a'));
      const h2 = runAttempt(spec('kx', LOOK), new MemorySink(), o);
      handles.push(h2);
      assert.equal((await h2.result).outcome, 'succeeded');
    });
  });
});
