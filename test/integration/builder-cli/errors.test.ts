import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PkiRegistry, caPaths, issueIdentity, loadCa } from '../../../pki/index.js';
import { ProcessFarm } from '../../helpers/process-farm.js';
import { runBin } from '../../helpers/procs.js';
import { assertCleanError, builderCli } from './cli-helpers.js';

/** A port nothing listens on: bound by the OS, then closed. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('the builder CLI when something is wrong', function () {
  this.timeout(60_000);
  let farm: ProcessFarm;
  let tmp: string;
  let configDir: string;
  const cli = builderCli(
    () => ['--master', farm.masterAddress, '--identity', farm.adminDir],
    () => ({ BUILDER_CONFIG_DIR: configDir }),
  );
  /** builder without connection flags: only the environment and the config file count. */
  const bare = (args: string[], env: NodeJS.ProcessEnv = {}) => runBin('builder', args, { env: { BUILDER_CONFIG_DIR: configDir, BUILDER_MASTER: '', BUILDER_IDENTITY: '', ...env } });
  const job = ['--name', 'x', '--channel', 'demo', '--arch', 'x86_64'];

  before(async function () {
    farm = await ProcessFarm.start();
    tmp = await mkdtemp(join(tmpdir(), 'builder-cli-err-'));
  });
  beforeEach(async function () {
    configDir = await mkdtemp(join(tmp, 'config-'));
  });
  after(async function () {
    await farm?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  describe('when the master cannot be reached or refuses us', function () {
    it('a wrong master address: one line, exit 3', async function () {
      const port = await closedPort();
      assertCleanError(await cli(['jobs'], { conn: ['--master', `127.0.0.1:${port}`, '--identity', farm.adminDir] }), new RegExp(`^Error: nothing listens at 127\\.0\\.0\\.1:${port}$`, 'm'), 3);
    });

    it('a master address that is not HOST:PORT: one line, exit 2', async function () {
      assertCleanError(await cli(['jobs'], { conn: ['--master', 'localhost', '--identity', farm.adminDir] }), /invalid master address \(--master\) "localhost"/, 2);
    });

    it('an identity directory that cannot be read: one line, exit 2', async function () {
      assertCleanError(await cli(['jobs'], { conn: ['--master', farm.masterAddress, '--identity', join(tmp, 'missing')] }), /cannot read identity file .*missing\/(ca|cert|key)\.pem \(ENOENT\)/, 2);
      const broken = join(tmp, 'broken');
      await mkdir(broken, { recursive: true });
      for (const f of ['ca.pem', 'cert.pem', 'key.pem']) await writeFile(join(broken, f), 'not a PEM file\n');
      assertCleanError(await cli(['jobs'], { conn: ['--master', farm.masterAddress, '--identity', broken] }), /the identity in .*broken is not usable/, 2);
    });

    it('a certificate the master revoked: one line, exit 4', async function () {
      const dir = join(tmp, 'bob');
      assert.equal((await runBin('master', ['client', 'create', 'bob', '--dir', farm.masterDir, '--out', dir])).code, 0);
      const conn = ['--master', farm.masterAddress, '--identity', dir];
      assert.equal((await cli(['jobs'], { conn })).code, 0, 'bob works before the revocation');
      const rev = await runBin('master', ['client', 'revoke', 'bob', '--dir', farm.masterDir]);
      assert.equal(rev.code, 0, rev.stderr);
      assert.match(rev.stdout, /revoked 1 certificate\(s\) of bob/);
      assertCleanError(await cli(['jobs'], { conn }), /refused the certificate|dropped the connection|handshake/, 4);
    });

    it('an expired certificate or one not valid yet: one line with its date, exit 4, without connecting', async function () {
      const ca = await loadCa(farm.masterDir);
      const reg = await PkiRegistry.open(caPaths(farm.masterDir).registry);
      const DAY = 86_400_000;
      const old = join(tmp, 'carol-old');
      const early = join(tmp, 'carol-early');
      try {
        await issueIdentity(ca, reg, { name: 'carol', role: 'client', outDir: old, notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.UTC(2026, 0, 2)) });
        await issueIdentity(ca, reg, { name: 'dave', role: 'client', outDir: early, notBefore: new Date(Date.now() + 10 * DAY), notAfter: new Date(Date.now() + 90 * DAY) });
      } finally {
        await reg.close();
      }
      // A wrong port too: the dates are checked before any connection is tried.
      const port = await closedPort();
      const r = await cli(['jobs'], { conn: ['--master', `127.0.0.1:${port}`, '--identity', old] });
      assertCleanError(r, /^Error: the certificate in .*carol-old expired on 2026-01-02T00:00:00\.000Z, so the master refuses it$/m, 4);
      assert.match(r.stderr, /master client create/);
      assertCleanError(await cli(['jobs'], { conn: ['--master', farm.masterAddress, '--identity', early] }), /the certificate in .*carol-early is not valid before .*\n.*clock/, 4);
    });

    it('a certificate from another CA: one line, exit 4', async function () {
      const other = join(tmp, 'other-ca');
      assert.equal((await runBin('master', ['init-ca', '--dir', other])).code, 0);
      assertCleanError(await cli(['jobs'], { conn: ['--master', farm.masterAddress, '--identity', join(other, 'admin')] }), /./, 4);
    });
  });

  describe('when the job or schedule does not exist', function () {
    for (const args of [['job', '999999'], ['observe', '999999'], ['cancel', '999999'], ['retry', '999999'], ['artifacts', '999999'], ['download', '999999']]) {
      it(`builder ${args.join(' ')}: one line, exit 5`, async function () {
        const r = await cli(args[0] === 'download' ? [...args, '--out', join(tmp, 'dl')] : args);
        if (args[0] === 'artifacts' && r.code === 0) {
          // A master may answer an unknown job's artifacts with an empty list; it must say so.
          assert.match(r.stdout, /job 999999 has no artifacts/);
          return;
        }
        assertCleanError(r, /999999|not found|no job/i, 5);
      });
    }

    it('a job id that is not a positive integer: one line, exit 2', async function () {
      assertCleanError(await cli(['job', 'abc']), /^Error: invalid job id "abc"$/m, 2);
      assertCleanError(await cli(['observe', '0']), /^Error: invalid job id "0"$/m, 2);
    });

    it('unschedule of an unknown schedule: one line, exit 5', async function () {
      assertCleanError(await cli(['unschedule', 'no-such-schedule']), /./, 5);
    });
  });

  describe('when schedule gets bad input (checked before anything is sent)', function () {
    const cases: Array<[string, string[], RegExp]> = [
      ['an invalid cron expression', ['--cron', 'every day at noon', '--', 'true'], /^Error: cron expression "every day at noon" has 4 fields; expected 5/m],
      ['a cron expression cron-parser refuses', ['--cron', '61 * * * *', '--', 'true'], /^Error: invalid cron expression "61 \* \* \* \*"/m],
      ['an unknown time zone', ['--cron', '0 3 * * *', '--tz', 'Mars/Olympus', '--', 'true'], /unknown time zone "Mars\/Olympus"/],
      ['a missing script file', ['--script', '/nonexistent/build.sh'], /^Error: cannot read script file \/nonexistent\/build\.sh \(ENOENT\)$/m],
      ['a missing input file', ['--input', '/nonexistent/in.tar', '--', 'true'], /cannot read input file \/nonexistent\/in\.tar \(ENOENT\)/],
      ['nothing to run', [], /^Error: nothing to run$/m],
      ['both --script and a command', ['--script', '/etc/hostname', '--', 'true'], /either --script FILE or a command after --, not both/],
      ['a stray argument without --', ['make'], /unexpected argument "make"/],
      ['an --env without =', ['--env', 'NOVALUE', '--', 'true'], /invalid --env "NOVALUE"/],
      ['an invalid --timeout', ['--timeout', 'soon', '--', 'true'], /invalid --timeout "soon"/],
    ];
    for (const [what, extra, re] of cases) {
      it(`${what}: one line, exit 2`, async function () {
        assertCleanError(await cli(['schedule', ...job, ...extra]), re, 2);
      });
    }

    it('an invalid job name: one line, exit 2', async function () {
      assertCleanError(await cli(['schedule', '--name', '../etc', '--channel', 'demo', '--arch', 'x86_64', '--', 'true']), /invalid job name "..\/etc"/, 2);
    });

    it('two inputs with the same name: one line, exit 2', async function () {
      await mkdir(join(tmp, 'a'), { recursive: true });
      await mkdir(join(tmp, 'b'), { recursive: true });
      await writeFile(join(tmp, 'a', 'in.txt'), 'a');
      await writeFile(join(tmp, 'b', 'in.txt'), 'b');
      assertCleanError(await cli(['schedule', ...job, '--input', join(tmp, 'a', 'in.txt'), '--input', join(tmp, 'b', 'in.txt'), '--', 'true']), /have the same name in\.txt/, 2);
    });

    it('nothing was queued by any of them', async function () {
      const jobs = JSON.parse((await cli(['jobs', '--json'])).stdout) as unknown[];
      assert.equal(jobs.length, 0);
    });
  });

  describe('when the connection settings come from the environment or the config file', function () {
    it('with none: one line naming the flag, the variable and the config file, exit 2', async function () {
      assertCleanError(await bare(['jobs']), new RegExp(`^Hint: pass --master HOST:PORT, set BUILDER_MASTER, or put \\{"master": "HOST:PORT"\\} in ${configDir}/config\\.json$`, 'm'), 2);
      assertCleanError(await bare(['jobs', '--master', farm.masterAddress]), /^Error: no identity directory$/m, 2);
    });

    it('BUILDER_MASTER and BUILDER_IDENTITY are used when no flag is given, and a flag wins over them', async function () {
      const env = { BUILDER_MASTER: farm.masterAddress, BUILDER_IDENTITY: farm.adminDir };
      const r = await bare(['jobs', '--json'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), []);
      const port = await closedPort();
      assert.equal((await bare(['jobs', '--master', farm.masterAddress], { ...env, BUILDER_MASTER: `127.0.0.1:${port}` })).code, 0);
      assertCleanError(await bare(['jobs'], { ...env, BUILDER_MASTER: `127.0.0.1:${port}` }), /nothing listens/, 3);
    });

    it('the config file in the per-user config dir is the last fallback; a relative identity is taken from its directory', async function () {
      await writeFile(join(configDir, 'config.json'), JSON.stringify({ master: farm.masterAddress, identity: 'me' }));
      const me = join(configDir, 'me');
      await mkdir(me);
      for (const f of ['ca.pem', 'cert.pem', 'key.pem']) await writeFile(join(me, f), await readFile(join(farm.adminDir, f)));
      const r = await bare(['slaves', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), []);
      // The environment wins over the file.
      assertCleanError(await bare(['jobs'], { BUILDER_IDENTITY: join(tmp, 'missing') }), /cannot read identity file/, 2);
    });

    it('a config file that is not valid JSON: one line, exit 2', async function () {
      await writeFile(join(configDir, 'config.json'), '{ master: ');
      assertCleanError(await bare(['jobs']), /config\.json is not valid JSON/, 2);
      await writeFile(join(configDir, 'config.json'), JSON.stringify({ master: 7400 }));
      assertCleanError(await bare(['jobs']), /"master" in .*config\.json must be a string/, 2);
    });
  });

  describe('when master client create is misused', function () {
    it('refuses to overwrite an identity, and a name that has a live certificate', async function () {
      const out = join(tmp, 'carol');
      const r = await runBin('master', ['client', 'create', 'carol', '--dir', farm.masterDir, '--out', out, '--admin', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(Object.keys(JSON.parse(r.stdout)).sort(), ['dir', 'name', 'role', 'serial']);
      assert.equal(JSON.parse(r.stdout).role, 'admin');
      assert.equal((await stat(join(out, 'key.pem'))).mode & 0o777, 0o600);
      assertCleanError(await runBin('master', ['client', 'create', 'dave', '--dir', farm.masterDir, '--out', out]), /already holds an identity/);
      assertCleanError(await runBin('master', ['client', 'create', 'carol', '--dir', farm.masterDir, '--out', join(tmp, 'carol2')]), /a live certificate named carol exists/);
      assertCleanError(await runBin('master', ['client', 'create', 'no/slash', '--dir', farm.masterDir, '--out', join(tmp, 'x')]), /invalid client name/, 2);
      assertCleanError(await runBin('master', ['client', 'revoke', 'nobody', '--dir', farm.masterDir]), /no live client or admin certificate named nobody/, 5);
    });
  });
});
