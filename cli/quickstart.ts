/**
 * `npm run quickstart`: the whole farm on this machine, through the real bins, in a minute.
 *
 * Makes a temporary farm directory, inits the CA, starts a master, enrolls and starts a slave,
 * starts the repo-builder, schedules a sample job that builds a real .deb with dpkg-deb,
 * observes it, waits until the repo-builder has published it, downloads its artifact, prints
 * where everything is, and stops every process it started (by pid). Exit 0 when all of it
 * worked; otherwise one line naming the step that failed (and the tail of that process's
 * log), exit 1.
 *
 * Flags: --clean removes the farm directory at the end; --step-timeout-ms bounds every step
 * (default 60000).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

type Bin = 'master' | 'slave' | 'builder' | 'repo-builder';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const binPath = (b: Bin) => join(ROOT, 'bin', `${b}.js`);

/** A step that failed: its name and what went wrong, printed as one line. */
class StepError extends Error {
  constructor(
    readonly step: string,
    message: string,
    readonly tail?: string,
  ) {
    super(message);
  }
}

/** A long-running bin, its output in a log file and scanned for lines. */
class Daemon {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  private text = '';
  private readonly log: WriteStream;

  constructor(
    readonly label: string,
    bin: Bin,
    args: string[],
    logPath: string,
  ) {
    this.log = createWriteStream(logPath);
    this.child = spawn(process.execPath, [binPath(bin), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BUILDER_LOG_LEVEL: 'info' } });
    const onData = (d: Buffer) => {
      this.log.write(d);
      // Keep a bounded tail for matching and error messages.
      this.text = (this.text + d.toString()).slice(-64 * 1024);
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.exited.then(() => this.log.end(), () => undefined);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(lines = 15): string {
    return this.text.split('\n').slice(-lines - 1).join('\n');
  }

  async waitFor(re: RegExp, step: string, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.text.match(re);
      if (m) return m;
      if (!this.running) throw new StepError(step, `${this.label} exited (code ${String(this.child.exitCode)})`, this.tail());
      if (Date.now() > deadline) throw new StepError(step, `${this.label} did not get there within ${timeoutMs} ms`, this.tail());
      await sleep(50);
    }
  }

  /** SIGTERM by pid, SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running || this.child.pid === undefined) return;
    const pid = this.child.pid;
    const t = setTimeout(() => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, graceMs);
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await this.exited;
    clearTimeout(t);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs a bin to completion; its output captured (or shown, for `builder observe`). */
function runBin(bin: Bin, args: string[], timeoutMs: number, show = false): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [binPath(bin), ...args], { stdio: ['ignore', show ? 'inherit' : 'pipe', show ? 'inherit' : 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

const indent = (s: string) => (s.trim() === '' ? '' : `${s.trimEnd().replace(/^/gm, '    ')}\n`);
const say = (s: string) => process.stdout.write(`==> ${s}\n`);
const cmdLine = (bin: Bin, args: string[]) => process.stdout.write(`    $ ${bin} ${args.map((a) => (/^[\w./:=,@%+-]+$/.test(a) ? a : `'${a}'`)).join(' ')}\n`);

async function must(step: string, bin: Bin, args: string[], timeoutMs: number): Promise<string> {
  cmdLine(bin, args);
  const r = await runBin(bin, args, timeoutMs);
  if (r.code !== 0) throw new StepError(step, `${bin} ${args[0] ?? ''} exited with ${String(r.code)}`, (r.stderr || r.stdout).trim());
  return r.stdout;
}

/** The sample job: a real Debian package, built by dpkg-deb into $BUILDER_OUTPUT. */
function sampleScript(arch: string): string {
  return `#!/bin/sh
set -eu
echo "building builder-hello for $BUILDER_ARCH in job $BUILDER_JOB_ID on $(uname -n)"
mkdir -p pkg/DEBIAN pkg/usr/bin
cat > pkg/usr/bin/builder-hello <<'EOF'
#!/bin/sh
echo "hello from a package built by Builder"
EOF
chmod 0755 pkg/usr/bin/builder-hello
cat > pkg/DEBIAN/control <<EOF
Package: builder-hello
Version: 1.0-1
Architecture: ${arch}
Maintainer: Builder quick start <quickstart@example.invalid>
Description: hello from the Builder quick start
 A tiny package built by the quick start's sample job.
EOF
echo "dpkg-deb writes to stderr what it builds:" >&2
dpkg-deb --root-owner-group --build pkg "$BUILDER_OUTPUT/builder-hello_1.0-1_${arch}.deb" >&2
echo "done: $(ls "$BUILDER_OUTPUT")"
`;
}

async function main(argv: string[]): Promise<number> {
  const clean = argv.includes('--clean');
  const ti = argv.indexOf('--step-timeout-ms');
  const stepMs = ti >= 0 ? Number(argv[ti + 1]) : 60_000;
  if (!Number.isFinite(stepMs) || stepMs <= 0) {
    process.stderr.write('quickstart: --step-timeout-ms needs a positive number\n');
    return 2;
  }
  let arch: string;
  try {
    arch = execFileSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).trim();
    execFileSync('dpkg-deb', ['--version'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('quickstart: FAILED at "check tools": dpkg and dpkg-deb are needed (Debian/Ubuntu: apt-get install dpkg)\n');
    return 1;
  }

  const dir = await mkdtemp(join(tmpdir(), 'builder-quickstart-'));
  const masterDir = join(dir, 'master');
  const slaveDir = join(dir, 'slave');
  const repoDir = join(dir, 'repo');
  const logs = join(dir, 'logs');
  const outDir = join(dir, 'artifacts');
  await mkdir(logs, { recursive: true });
  const daemons: Daemon[] = [];
  let stopping = false;
  const stopAll = async () => {
    stopping = true;
    // Reverse order: the repo-builder and the slave first, the master last.
    for (const d of [...daemons].reverse()) await d.stop();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    process.stderr.write(`\nquickstart: ${sig}; stopping what it started\n`);
    stopAll().then(
      () => process.exit(130),
      () => process.exit(130),
    );
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let ok = false;
  try {
    say(`farm directory: ${dir}`);
    say('1. init the CA (and an admin identity for the builder CLI)');
    await must('init the CA', 'master', ['init-ca', '--dir', masterDir, '--hostname', '127.0.0.1', '--hostname', 'localhost'], stepMs);

    say('2. start the master (ports picked by the OS)');
    const listen = ['run', '--dir', masterDir, '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0'];
    cmdLine('master', listen);
    const master = new Daemon('master', 'master', listen, join(logs, 'master.log'));
    daemons.push(master);
    const m = await master.waitFor(/"listen":"127\.0\.0\.1:(\d+)","enroll":"127\.0\.0\.1:(\d+)"/, 'start the master', stepMs);
    const mainAddr = `127.0.0.1:${m[1]!}`;
    const enrollAddr = `127.0.0.1:${m[2]!}`;
    say(`   master listening on ${mainAddr} (mutual TLS) and ${enrollAddr} (enrollment)`);

    say('3. a one-time token, and enroll a slave with it');
    const tok = JSON.parse(await must('create a token', 'master', ['token', 'create', '--dir', masterDir, '--ttl', '10m', '--enroll-address', enrollAddr, '--json'], stepMs)) as {
      token: string;
      caFingerprint: string;
    };
    await must('enroll the slave', 'slave', ['enroll', '--master', enrollAddr, '--token', tok.token, '--ca-fingerprint', tok.caFingerprint, '--dir', slaveDir, '--name', 'quickstart-1'], stepMs);

    say(`4. start the slave: channel demo, arches ${arch},all, 2 slots`);
    const slaveArgs = ['run', '--dir', slaveDir, '--master', mainAddr, '--channels', 'demo', '--arch', `${arch},all`, '--capacity', '2'];
    cmdLine('slave', slaveArgs);
    const slave = new Daemon('slave', 'slave', slaveArgs, join(logs, 'slave.log'));
    daemons.push(slave);
    await slave.waitFor(/connected to master/, 'start the slave', stepMs);

    say("5. start the repo-builder on the master's incoming directory");
    const incoming = join(masterDir, 'incoming');
    await mkdir(incoming, { recursive: true });
    const rbArgs = ['run', '--incoming', incoming, '--repo', repoDir, '--deb-arch', arch, '--debounce-ms', '100'];
    cmdLine('repo-builder', rbArgs);
    const rb = new Daemon('repo-builder', 'repo-builder', rbArgs, join(logs, 'repo-builder.log'));
    daemons.push(rb);
    await sleep(300);
    if (!rb.running) throw new StepError('start the repo-builder', `repo-builder exited (code ${String(rb.child.exitCode)})`, rb.tail());

    const conn = ['--master', mainAddr, '--identity', join(masterDir, 'admin')];
    say('6. wait until the master lists the slave as connected');
    const deadline = Date.now() + stepMs;
    for (;;) {
      const r = await runBin('builder', ['slaves', '--json', ...conn], stepMs);
      const rows = r.code === 0 ? (JSON.parse(r.stdout) as Array<{ name: string; connected: boolean }>) : [];
      if (rows.some((s) => s.name === 'quickstart-1' && s.connected)) break;
      if (Date.now() > deadline) throw new StepError('list the slave', r.code === 0 ? 'the slave never showed as connected' : `builder slaves exited with ${String(r.code)}`, (r.stderr || r.stdout).trim());
      await sleep(200);
    }
    cmdLine('builder', ['slaves', ...conn]);
    process.stdout.write(indent((await runBin('builder', ['slaves', ...conn], stepMs)).stdout));

    say('7. schedule the sample job: a shell script that builds a .deb with dpkg-deb');
    const script = join(dir, 'build-hello.sh');
    await writeFile(script, sampleScript(arch), { mode: 0o755 });
    const jobId = (await must('schedule the job', 'builder', ['schedule', '--name', 'builder-hello', '--channel', 'demo', '--arch', arch, '--timeout', '2m', '--script', script, ...conn], stepMs)).trim();
    if (!/^\d+$/.test(jobId)) throw new StepError('schedule the job', `expected a job id, got ${JSON.stringify(jobId)}`);
    say(`   job ${jobId} queued`);

    say(`8. observe job ${jobId} (its stdout, its stderr, and state changes)`);
    cmdLine('builder', ['observe', jobId, ...conn]);
    const obs = await runBin('builder', ['observe', jobId, ...conn], stepMs, true);
    if (obs.code !== 0) throw new StepError('observe the job', `job ${jobId} did not succeed (builder observe exited with ${String(obs.code)})`, slave.tail());

    say('9. download its artifact (sha256 checked)');
    process.stdout.write(indent(await must('download the artifact', 'builder', ['download', jobId, '--out', outDir, ...conn], stepMs)));

    say('10. wait until the repo-builder has published it');
    const packages = join(repoDir, 'deb', 'dists', 'demo', 'main', `binary-${arch}`, 'Packages');
    const until = Date.now() + stepMs;
    for (;;) {
      const text = await readFile(packages, 'utf8').catch(() => '');
      if (/^Package: builder-hello$/m.test(text)) break;
      if (!rb.running) throw new StepError('publish the package', 'the repo-builder exited', rb.tail());
      if (Date.now() > until) throw new StepError('publish the package', `${packages} does not name builder-hello after ${stepMs} ms`, rb.tail());
      await sleep(100);
    }

    process.stdout.write(`
The farm worked end to end.
  artifacts downloaded to:   ${outDir}
  published APT repository:  ${join(repoDir, 'deb')}
      index:                 ${packages}
      apt source line:       deb [trusted=yes] file:${join(repoDir, 'deb')} demo main
  process logs:              ${logs}
  the master's data:         ${masterDir} (admin identity in ${join(masterDir, 'admin')})
`);
    ok = true;
  } catch (e) {
    const se = e instanceof StepError ? e : new StepError('quickstart', e instanceof Error ? e.message : String(e));
    process.stderr.write(`quickstart: FAILED at "${se.step}": ${se.message}\n`);
    if (se.tail) process.stderr.write(`${se.tail.replace(/^/gm, '    | ')}\n`);
    process.stderr.write(`quickstart: logs are in ${logs}\n`);
  } finally {
    say('stopping the processes the quick start started');
    await stopAll();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  if (clean) await rm(dir, { recursive: true, force: true });
  else if (ok) say(`done; remove the farm with: rm -rf ${dir}`);
  return ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`quickstart: FAILED: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
