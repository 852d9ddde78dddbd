import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { isAbsolute, join, relative } from 'node:path';
import { isBuilderError } from '../../../protocol/errors.js';
import { compileExecutorOptions, runAttempt, type AttemptHandle, type AttemptResult, type AttemptSpec } from '../../../slave/executor/index.js';
import { nativeSpawn, nativeSpawnUnavailable } from '../../../slave/executor/native-spawn.js';
import { MemorySink, ProcessReaper, waitUntil } from './helpers.js';

/**
 * The native spawner (native/spawn.c) must give a job the same process as child_process.spawn:
 * each case runs with both and compares what the job sees of itself.
 */
describe('slave/executor spawners: the job sees the same process from both', function () {
  this.timeout(30_000);
  let root: string;
  const reaper = new ProcessReaper();
  const handles: AttemptHandle[] = [];

  before(function () {
    // CI builds the addon (npm ci runs build:native); a machine without it must say why, not pass quietly.
    assert.equal(nativeSpawnUnavailable(), undefined, 'the native spawner must be built for these tests');
  });
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'builder-spawners-'));
  });
  afterEach(async () => {
    for (const h of handles) reaper.addGroup(h.pid);
    handles.splice(0);
    await reaper.reap();
    await rm(root, { recursive: true, force: true });
  });

  async function both(spec: Partial<AttemptSpec> & ({ script: string } | { argv: string[] }), extra: { path?: string; runAs?: { uid: number; gid: number }; maxInlineScriptBytes?: number } = {}): Promise<Record<'native' | 'node', { r: AttemptResult; out: string; err: string }>> {
    const res: Partial<Record<'native' | 'node', { r: AttemptResult; out: string; err: string }>> = {};
    for (const spawner of ['native', 'node'] as const) {
      const o = compileExecutorOptions({ dataDir: join(root, spawner), spawner, killGraceMs: 300, pipeCloseTimeoutMs: 1000, flushIntervalMs: 20, ...extra });
      const sink = new MemorySink();
      const h = runAttempt({ jobId: 'sp', attempt: 1, name: 'n', channel: 'c', arch: 'a', ...spec }, sink, o);
      handles.push(h);
      const r = await h.result;
      res[spawner] = { r, out: sink.text('stdout'), err: sink.text('stderr') };
    }
    return res as Record<'native' | 'node', { r: AttemptResult; out: string; err: string }>;
  }

  it('leads its own session and process group, with stdin /dev/null and no descriptor but 0, 1 and 2', async () => {
    // /proc/PID/stat: pid (comm) state ppid pgrp session ...; ls holds one more descriptor: its own listing of /proc/self/fd.
    const script = 'set -- $(cat /proc/$$/stat); echo "$1 $5 $6"; readlink /proc/self/fd/0; ls /proc/self/fd | tr "\\n" " "';
    const res = await both({ script });
    for (const [name, { r, out }] of Object.entries(res)) {
      assert.equal(r.outcome, 'succeeded', name);
      const [ids, stdin, fds] = out.split('\n');
      const [pid, pgrp, sid] = (ids ?? '').split(' ').map(Number);
      assert.equal(pid, r.pid, `${name}: ${out}`);
      assert.equal(pgrp, pid, `${name}: its own process group`);
      assert.equal(sid, pid, `${name}: its own session`);
      assert.equal(stdin, '/dev/null', name);
      // child_process passes on what the slave inherited without close-on-exec (a test runner's
      // descriptors, say); the native spawner closes everything above 2.
      if (name === 'native') assert.equal(fds, '0 1 2 3 ', `${name}: no descriptor of the slave leaks into the job`);
    }
  });

  it('starts with every signal at its default and none blocked (Node ignores SIGPIPE; a job must not)', async () => {
    const res = await both({ script: 'grep -E "^Sig(Ign|Blk)" /proc/self/status; yes | head -c 3' });
    for (const [name, { r, out, err }] of Object.entries(res)) {
      assert.equal(r.outcome, 'succeeded', name);
      assert.equal(out, 'SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\ny\ny', name);
      // With SIGPIPE ignored, `yes` would complain of a broken pipe instead of dying quietly.
      assert.equal(err, '', name);
    }
  });

  it("finds a bare command in the job's PATH (not the slave's), and runs a file without #! under /bin/sh", async () => {
    const bin = join(root, 'bin');
    await mkdir(bin);
    await writeFile(join(bin, 'only-here'), '#!/bin/sh\necho found "$@"\n');
    await writeFile(join(bin, 'no-shebang'), 'echo plain "$0"\n');
    await chmod(join(bin, 'only-here'), 0o755);
    await chmod(join(bin, 'no-shebang'), 0o755);
    const found = await both({ argv: ['only-here', 'a b'] }, { path: `/nonexistent:${bin}` });
    const plain = await both({ argv: ['no-shebang'] }, { path: bin });
    for (const name of ['native', 'node'] as const) {
      assert.equal(found[name].out, 'found a b\n', name);
      assert.equal(plain[name].r.outcome, 'succeeded', `${name}: ${plain[name].err}`);
      assert.equal(plain[name].out, `plain ${join(bin, 'no-shebang')}\n`, name);
    }
  });

  it('looks a bare command up in the job: relative PATH entries from its cwd (also a relative cwd)', async () => {
    const bin = join(root, 'work', 'bin');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'rel-tool'), '#!/bin/sh\necho "rel $0"\n');
    await chmod(join(bin, 'rel-tool'), 0o755);
    await writeFile(join(root, 'work', 'here-tool'), '#!/bin/sh\necho "here $0"\n');
    await chmod(join(root, 'work', 'here-tool'), 0o755);
    // cwd relative to the slave's own cwd; PATH entries relative to the job's cwd, and an empty one (the cwd).
    const cwd = relative(process.cwd(), join(root, 'work'));
    assert.ok(!isAbsolute(cwd));
    for (const [file, path, want] of [
      ['rel-tool', 'bin', 'rel bin/rel-tool\n'],
      ['here-tool', '/nonexistent:', 'here here-tool\n'],
    ] as const) {
      const c = nativeSpawn(file, [], { cwd, env: { PATH: path } });
      reaper.addGroup(c.pid);
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.resume();
      const [code] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => c.on('exit', (...a) => res(a)));
      await waitUntil(() => c.stdout.closed);
      assert.equal(code, 0, `${file}: ${out}`);
      assert.equal(out, want, file);
    }
  });

  it("looks a bare command up as the runAs user: a file only root may run is skipped, as execvp skips it", async function () {
    if (process.getuid?.() !== 0) this.skip();
    await chmod(root, 0o711);
    const [a, b] = [join(root, 'a'), join(root, 'b')];
    for (const d of [a, b]) await mkdir(d, { mode: 0o755 });
    await writeFile(join(a, 'two-of-me'), '#!/bin/sh\necho a\n', { mode: 0o700 });
    await writeFile(join(b, 'two-of-me'), '#!/bin/sh\necho b\n', { mode: 0o755 });
    const res = await both({ argv: ['two-of-me'] }, { path: `${a}:${b}`, runAs: { uid: 65534, gid: 65534 } });
    for (const name of ['native', 'node'] as const) {
      assert.equal(res[name].r.outcome, 'succeeded', `${name}: ${JSON.stringify(res[name].r.error)}`);
      assert.equal(res[name].out, 'b\n', name);
    }
  });

  it('reports the same error for a command that is missing, not executable, or a directory', async () => {
    const dir = join(root, 'd');
    await mkdir(dir);
    await writeFile(join(root, 'noexec'), 'echo x\n');
    for (const [argv, code] of [
      [['no-such-command-anywhere'], 'ENOENT'],
      [[join(root, 'noexec')], 'EACCES'],
      [[dir], 'EACCES'],
    ] as const) {
      const res = await both({ argv: [...argv] });
      for (const name of ['native', 'node'] as const) {
        const { r } = res[name];
        assert.equal(r.outcome, 'failed', name);
        assert.equal(r.error?.code, code, `${name} ${argv[0]}: ${JSON.stringify(r.error)}`);
        assert.equal(r.pid, undefined, name);
        assert.equal(r.error?.message, `spawn ${argv[0]} ${code}`, name);
      }
    }
  });

  it('refuses NUL bytes and wrong argument types with a TypeError (the addon checks its own input)', () => {
    const cwd = tmpdir();
    assert.throws(() => nativeSpawn('/bin/true', ['a\0b'], { cwd, env: {} }), (e: unknown) => e instanceof TypeError && /without NUL/.test(e.message));
    assert.throws(() => nativeSpawn('/bin/true', [], { cwd, env: { A: 'x\0y' } }), TypeError);
    assert.throws(() => nativeSpawn('/bin/true', [], { cwd: `${cwd}\0x`, env: {} }), TypeError);
    assert.throws(() => nativeSpawn('/bin/tr\0ue', [], { cwd, env: {} }), TypeError);
  });

  it('refuses a uid or gid that is not an integer id (NaN, Infinity, a fraction), never running the job as root', () => {
    const cwd = tmpdir();
    // napi_get_value_int64 reads NaN and Infinity as 0: the job would have run as root.
    for (const id of [NaN, Infinity, -Infinity, 1.5, -0.5, -2, 2 ** 31]) {
      assert.throws(
        () => nativeSpawn('/bin/true', [], { cwd, env: {}, uid: id, gid: id }),
        (e: unknown) => e instanceof TypeError && /uid and gid/.test(e.message),
        String(id),
      );
    }
    assert.throws(() => nativeSpawn('/bin/true', [], { cwd, env: {}, uid: 65534, gid: NaN }), TypeError);
  });

  it('runs nothing of the dynamic linker in the vfork child (every function it calls is bound before)', async () => {
    // A fresh node (the addon loaded lazily, as the slave loads it) with LD_DEBUG: the dynamic
    // linker logs each binding with the pid of the process that makes it (the job's env has no
    // LD_DEBUG, so /bin/true adds nothing after the exec).
    const mod = new URL('../../../slave/executor/native-spawn.js', import.meta.url).href;
    // First a start that fails in the child (execve: ENOENT, so errno is read there), then one that runs.
    const script = `import { nativeSpawn } from ${JSON.stringify(mod)};
      try { nativeSpawn('no-such-command-here', [], { cwd: '/', env: { PATH: '/nonexistent' } }); } catch {}
      const c = nativeSpawn('/bin/true', [], { cwd: '/', env: {} });
      c.stdout.resume(); c.stderr.resume();
      c.on('exit', (code) => console.log(c.pid, code));`;
    const ld = join(root, 'ld');
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, LD_DEBUG: 'bindings', LD_DEBUG_OUTPUT: ld }, timeout: 20_000 });
    const [pid, code] = stdout.trim().split(' ').map(Number);
    assert.equal(code, 0, stdout);
    // The child writes to the debug file of the process it was vforked from, lines prefixed with its own pid.
    const files = (await readdir(root)).filter((f) => f.startsWith('ld.'));
    assert.ok(files.length > 0, 'LD_DEBUG_OUTPUT wrote nothing');
    const text = (await Promise.all(files.map((f) => readFile(join(root, f), 'utf8')))).join('');
    assert.match(text, /builder_spawn/, 'the bindings of the addon are in the output');
    const childs = text.split('\n').filter((l) => l.trimStart().startsWith(`${pid}:`) && l.includes('builder_spawn'));
    assert.deepEqual(childs, [], "the job's process ran the dynamic linker for the addon");
  });

  /** Runs `script` (an ES module, with `mod` the native-spawn module's URL) in a fresh node under strace with `inject` (strace -e inject=...). */
  async function underStrace(inject: string[], script: string): Promise<string> {
    const mod = new URL('../../../slave/executor/native-spawn.js', import.meta.url).href;
    const opts = new URL('../../../slave/executor/executor-options.js', import.meta.url).href;
    const code = `const mod = ${JSON.stringify(mod)}; const optsMod = ${JSON.stringify(opts)};\n${script}`;
    const args = ['-f', '-qq', '-o', '/dev/null', ...inject.flatMap((i) => ['-e', `inject=${i}`]), process.execPath, '--input-type=module', '-e', code];
    const { stdout } = await promisify(execFile)('strace', args, { timeout: 20_000 });
    return stdout.trim();
  }

  it('is not used on a kernel without pidfd_open, waitid on a pidfd or close_range: auto falls back to child_process and says why', async () => {
    const script = `const { nativeSpawnUnavailable } = await import(mod); const { compileExecutorOptions } = await import(optsMod);
      const o = compileExecutorOptions({ dataDir: '/nonexistent-builder-test' });
      console.log(JSON.stringify({ why: nativeSpawnUnavailable(), spawner: o.spawner, note: o.spawnerNote }));`;
    for (const [inject, want] of [
      ['pidfd_open:error=ENOSYS', /pidfd_open is not available/],
      ['waitid:error=EINVAL', /waitid cannot wait on a pidfd/],
      ['close_range:error=ENOSYS', /close_range is not available/],
    ] as const) {
      const r = JSON.parse(await underStrace([inject], script)) as { why?: string; spawner: string; note?: string };
      assert.match(r.why ?? '', want, inject);
      assert.equal(r.spawner, 'node', inject);
      assert.match(r.note ?? '', want, inject);
    }
  });

  it('reads the exit with waitpid when waitid cannot use the pidfd, and reports a lost status as neither code nor signal', async () => {
    const script = `const { nativeSpawn } = await import(mod);
      const run = (args) => new Promise((resolve) => { const c = nativeSpawn('/bin/sh', args, { cwd: '/', env: {} }); c.stdout.resume(); c.stderr.resume(); c.on('exit', (code, sig) => resolve([code, sig])); });
      console.log(JSON.stringify([await run(['-c', 'exit 7']), await run(['-c', 'kill -TERM $$'])]));`;
    // The first waitid is the probe's, at load: the later ones (the exits) fail.
    assert.deepEqual(JSON.parse(await underStrace(['waitid:error=EINVAL:when=2+'], script)), [
      [7, null],
      [null, 'SIGTERM'],
    ]);
    assert.deepEqual(JSON.parse(await underStrace(['waitid:error=ECHILD:when=2+'], script)), [
      [null, null],
      [null, null],
    ]);
  });

  it("gives the job /dev/null as stdin also when the slave's own descriptor 0 is closed", async () => {
    const mod = new URL('../../../slave/executor/native-spawn.js', import.meta.url).href;
    const script = `import { closeSync } from 'node:fs'; import { nativeSpawn } from ${JSON.stringify(mod)};
      closeSync(0);
      const c = nativeSpawn('/bin/sh', ['-c', 'readlink /proc/self/fd/0; echo ok'], { cwd: '/', env: { PATH: '/usr/bin:/bin' } });
      let out = ''; c.stdout.on('data', (d) => (out += d)); c.stderr.resume();
      c.stdout.on('close', () => process.stdout.write(out));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 });
    assert.equal(stdout, '/dev/null\nok\n');
  });

  it('reports exit codes and signals, and a child that exits at once is not missed', async () => {
    const results: Array<[number | null, NodeJS.Signals | null]> = [];
    const children = [nativeSpawn('/bin/sh', ['-c', 'exit 0'], { cwd: tmpdir(), env: {} }), nativeSpawn('/bin/sh', ['-c', 'exit 200'], { cwd: tmpdir(), env: {} }), nativeSpawn('/bin/sh', ['-c', 'kill -TERM $$'], { cwd: tmpdir(), env: {} })];
    for (const c of children) {
      reaper.addGroup(c.pid);
      c.stdout.resume();
      c.stderr.resume();
      c.on('exit', (code, sig) => results.push([code, sig]));
    }
    await waitUntil(() => results.length === 3);
    assert.deepEqual(
      results.sort((a, b) => String(a).localeCompare(String(b))),
      [
        [0, null],
        [200, null],
        [null, 'SIGTERM'],
      ].sort((a, b) => String(a).localeCompare(String(b))),
    );
  });

  it('starts a runAs job as that user and group, with no supplementary group', async function () {
    if (process.getuid?.() !== 0) this.skip();
    const { chmod: chmodP } = await import('node:fs/promises');
    await chmodP(root, 0o711);
    const res = await both({ script: 'id -u; id -g; id -G; grep -E "^(Uid|Gid)" /proc/self/status' }, { runAs: { uid: 65534, gid: 65533 }, maxInlineScriptBytes: 4096 });
    for (const [name, { r, out, err }] of Object.entries(res)) {
      assert.equal(r.outcome, 'succeeded', `${name}: ${err} ${JSON.stringify(r.error)}`);
      assert.equal(out, '65534\n65533\n65533\nUid:\t65534\t65534\t65534\t65534\nGid:\t65533\t65533\t65533\t65533\n', name);
    }
  });

  it('is chosen when built, and a bad choice is a configuration error', () => {
    assert.equal(compileExecutorOptions({ dataDir: root }).spawner, 'native');
    assert.equal(compileExecutorOptions({ dataDir: root, runAs: { uid: 65534, gid: 65534 } }).spawner, 'native');
    assert.equal(compileExecutorOptions({ dataDir: root, spawner: 'node' }).spawner, 'node');
    assert.throws(() => compileExecutorOptions({ dataDir: root, spawner: 'fork' as 'node' }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && /auto, native or node/.test((e as Error).message));
  });
});
