import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { RunningBin, runBin } from '../../helpers/procs.js';
import { tempDir } from '../../helpers/farm.js';

/** One clear line (plus an optional hint line), no stack trace, non-zero exit. */
function assertCleanError(r: { code: number | null; stderr: string }, re: RegExp): void {
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'stack trace printed');
  assert.ok(r.stderr.trim().split('\n').length <= 3, r.stderr);
}

describe('the master and slave commands', function () {
  this.timeout(60_000);
  let dir: string;
  const running: RunningBin[] = [];

  beforeEach(async function () {
    dir = await tempDir();
  });
  afterEach(async function () {
    await Promise.all(running.splice(0).map((p) => p.stop('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
  });

  describe('when an operator sets up a farm from the command line', function () {
    it('inits the CA, runs the master, creates a token, enrolls and runs a slave, lists and revokes it, and stops on SIGTERM', async function () {
      const farm = join(dir, 'farm');
      const init = await runBin('master', ['init-ca', '--dir', farm, '--hostname', 'localhost', '--hostname', '127.0.0.1']);
      assert.equal(init.code, 0, init.stderr);
      assert.match(init.stdout, /CA fingerprint \(SHA-256\): [0-9a-f]{64}/);

      const master = new RunningBin('master', ['run', '--dir', farm, '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0']);
      running.push(master);
      const m = await master.waitFor(/"listen":"127\.0\.0\.1:(\d+)","enroll":"127\.0\.0\.1:(\d+)"/);
      const [mainPort, enrollPort] = [m[1]!, m[2]!];

      const tok = await runBin('master', ['token', 'create', '--dir', farm, '--ttl', '10m', '--enroll-address', `127.0.0.1:${enrollPort}`]);
      assert.equal(tok.code, 0, tok.stderr);
      const line = tok.stdout.split('\n').find((l) => l.trim().startsWith('slave enroll'));
      assert.ok(line, tok.stdout);
      // Run the printed command, with our own dir and name.
      const args = line.trim().split(/\s+/).slice(2);
      const dIdx = args.indexOf('--dir');
      args[dIdx + 1] = join(dir, 'slave');
      args[args.indexOf('--name') + 1] = 'worker-7';
      const enroll = await runBin('slave', ['enroll', ...args]);
      assert.equal(enroll.code, 0, enroll.stderr);
      assert.match(enroll.stdout, /enrolled as worker-7/);

      const slave = new RunningBin('slave', ['run', '--dir', join(dir, 'slave'), '--master', `127.0.0.1:${mainPort}`, '--channels', 'main']);
      running.push(slave);
      await slave.waitFor(/connected to master/);
      await master.waitFor(/"conn":"worker-7".*"msg":"peer connected"/);

      const list = await runBin('master', ['slave', 'list', '--dir', farm, '--json']);
      assert.equal(list.code, 0, list.stderr);
      const rows = JSON.parse(list.stdout) as Array<{ name: string; status: string }>;
      assert.deepEqual(rows.map((r) => [r.name, r.status]), [['worker-7', 'valid']]);

      const rev = await runBin('master', ['slave', 'revoke', 'worker-7', '--dir', farm]);
      assert.equal(rev.code, 0, rev.stderr);
      const again = await runBin('master', ['slave', 'revoke', 'worker-7', '--dir', farm]);
      assertCleanError(again, /no live certificate for slave worker-7/);

      assert.deepEqual(await slave.stop('SIGTERM'), { code: 0, signal: null });
      assert.deepEqual(await master.stop('SIGTERM'), { code: 0, signal: null });
      assert.match(master.out, /master stopped/);
      assert.doesNotMatch(master.out + slave.out, /BEGIN (RSA )?PRIVATE KEY/);
    });
  });

  describe('when the input is wrong', function () {
    it('refuses to overwrite a CA without --force, in one clear line', async function () {
      const farm = join(dir, 'farm');
      assert.equal((await runBin('master', ['init-ca', '--dir', farm])).code, 0);
      assertCleanError(await runBin('master', ['init-ca', '--dir', farm]), /Error: a CA already exists/);
    });

    it('explains a missing CA, a bad listen address, a bad ttl, a bad retention and a missing identity', async function () {
      assertCleanError(await runBin('master', ['run', '--dir', join(dir, 'none')]), /Error: no CA in .*\nHint: run: master init-ca/);
      assertCleanError(await runBin('master', ['token', 'create', '--dir', join(dir, 'none')]), /no CA in/);
      const farm = join(dir, 'farm');
      assert.equal((await runBin('master', ['init-ca', '--dir', farm])).code, 0);
      assertCleanError(await runBin('master', ['run', '--dir', farm, '--listen', 'nonsense']), /invalid --listen address "nonsense"/);
      assertCleanError(await runBin('master', ['token', 'create', '--dir', farm, '--ttl', 'forever']), /invalid --ttl "forever"/);
      assertCleanError(await runBin('master', ['run', '--dir', farm, '--image-retention', 'soon']), /invalid --image-retention "soon"/);
      assertCleanError(await runBin('master', ['run', '--dir', farm, '--image-retention', '30d', '--image-keep', 'all']), /invalid --image-keep "all": must be a whole number/);
      assertCleanError(await runBin('master', ['run', '--dir', farm, '--image-keep', '2']), /--image-keep applies to the image retention, which is off\nHint: add --image-retention/);
      assertCleanError(await runBin('slave', ['run', '--dir', join(dir, 'nobody'), '--master', '127.0.0.1:1', '--channels', 'main']), /cannot read identity file/);
      assertCleanError(
        await runBin('slave', ['enroll', '--master', '127.0.0.1:1', '--token', 'x'.repeat(32), '--ca-fingerprint', 'ab'.repeat(32), '--dir', join(dir, 's'), '--name', 'ok']),
        /nothing listens at 127\.0\.0\.1:1/,
      );
      assertCleanError(
        await runBin('slave', ['enroll', '--master', '127.0.0.1:1', '--token', 'x'.repeat(32), '--ca-fingerprint', 'ab'.repeat(32), '--dir', join(dir, 's'), '--name', '../etc']),
        /invalid slave name/,
      );
    });
  });
});
