import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from '../../helpers/procs.js';

/** Runs `node dist/cli/quickstart.js` (what `npm run quickstart` runs after the build), bounded in time. */
function quickstart(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 150_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli', 'quickstart.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Pids of processes whose command line names `dir`. */
async function processesNaming(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(dir)) pids.push(Number(p));
  }
  return pids;
}

describe('npm run quickstart', function () {
  this.timeout(180_000);

  it('runs a whole farm, builds and publishes a .deb, stops everything it started, and exits 0', async function () {
    const r = await quickstart(['--clean', '--step-timeout-ms', '45000']);
    const dir = /^==> farm directory: (\S+)$/m.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    // The sample job's own output, through builder observe: its stdout on stdout, its stderr and the states on stderr.
    assert.match(r.stdout, /^done: builder-hello_1\.0-1_\w+\.deb$/m);
    assert.match(r.stderr, /^dpkg-deb: building package 'builder-hello'/m);
    assert.match(r.stderr, /\[builder\] job \d+ succeeded \(exit 0\)/);
    assert.match(r.stdout, /builder-hello_1\.0-1_\w+\.deb\s+\S+ B\s+sha256 [0-9a-f]{64} ok/);
    assert.match(r.stdout, /^The farm worked end to end\.$/m);
    assert.match(r.stdout, /published APT repository: /);
    assert.match(r.stdout, /^==> stopping the processes the quick start started$/m);
    assert.equal(r.stderr.includes('FAILED'), false, r.stderr);
    assert.deepEqual(await processesNaming(dir), [], 'a process of the quick start is still running');
    assert.equal(existsSync(dir), false, '--clean removes the farm directory');
  });

  it('says in one line which step failed, and exits non-zero', async function () {
    // Without dpkg on the PATH the sample package cannot be built: the first check says so.
    const r = await quickstart([], { PATH: '/nonexistent' }, 30_000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^quickstart: FAILED at "check tools": dpkg and dpkg-deb are needed/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
});
