import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { lookUpUserName, nameFromPasswdLines, userNameOf } from '../../../slave/executor/index.js';

const execFileP = promisify(execFile);

describe('slave/executor user names (USER and LOGNAME of a job)', () => {
  describe('when a passwd text is read', () => {
    const text = [
      '# a comment:x:1000:1000::/:/bin/sh',
      '1000:x:2000:2000:a user named like a uid:/home/n:/bin/sh',
      'alice:x:1000:1000:Alice:/home/alice:/bin/bash',
      'alice2:x:1000:1000:same uid, later line:/home/alice2:/bin/bash',
      '+::::::',
      'short:x:1001',
      '',
    ].join('\n');

    it('takes the first line whose uid field matches, not a user named like the uid', () => {
      assert.equal(nameFromPasswdLines(text, 1000), 'alice');
      assert.equal(nameFromPasswdLines(text, 2000), '1000');
    });

    it('finds nothing for an unknown uid, a line with too few fields, or an empty name', () => {
      assert.equal(nameFromPasswdLines(text, 4242), undefined);
      assert.equal(nameFromPasswdLines(text, 1001), undefined);
      assert.equal(nameFromPasswdLines(':x:7:7::/:/bin/sh\n', 7), undefined);
    });
  });

  describe('when the system is asked', () => {
    it('gives our own name for our own uid', async () => {
      assert.equal(await userNameOf(process.getuid?.() ?? 0), userInfo().username);
    });

    it('gives the name getent gives for another uid, and the same answer (one lookup) the second time', async () => {
      const uid = process.getuid?.() === 65534 ? 0 : 65534;
      const { stdout } = await execFileP('getent', ['passwd', String(uid)]);
      const want = stdout.split(':')[0];
      const first = userNameOf(uid);
      assert.equal(userNameOf(uid), first, 'the lookup is cached per uid');
      assert.equal(await first, want);
    });

    it('gives no name for a uid the user database does not know', async () => {
      const uid = 1_999_999_011;
      await assert.rejects(execFileP('getent', ['passwd', String(uid)]), (e) => (e as { code?: unknown }).code === 2);
      assert.equal(await userNameOf(uid), undefined);
    });
  });

  describe('when getent cannot run', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'builder-user-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('reads the passwd file instead, and finds no name when that cannot be read either', async () => {
      const passwdFile = join(dir, 'passwd');
      await writeFile(passwdFile, 'root:x:0:0::/root:/bin/sh\nbuildbot:x:4321:4321::/home/b:/bin/sh\n');
      const getent = join(dir, 'no-such-getent');
      assert.equal(await lookUpUserName(4321, { getent, passwdFile }), 'buildbot');
      assert.equal(await lookUpUserName(4322, { getent, passwdFile }), undefined);
      assert.equal(await lookUpUserName(4321, { getent, passwdFile: join(dir, 'missing') }), undefined);
    });

    it('trusts a getent that ran and said "no such uid" (exit 2) over the passwd file', async () => {
      const passwdFile = join(dir, 'passwd');
      await writeFile(passwdFile, 'stale:x:4321:4321::/:/bin/sh\n');
      const getent = join(dir, 'getent');
      await writeFile(getent, '#!/bin/sh\nexit 2\n', { mode: 0o755 });
      assert.equal(await lookUpUserName(4321, { getent, passwdFile }), undefined);
      await writeFile(getent, '#!/bin/sh\nexit 1\n', { mode: 0o755 });
      assert.equal(await lookUpUserName(4321, { getent, passwdFile }), 'stale', 'any other failure falls back');
    });
  });
});
