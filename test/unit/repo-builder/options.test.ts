import assert from 'node:assert/strict';
import { pino } from 'pino';
import { compileRepoBuilderOptions } from '../../../repo-builder/index.js';

describe('repo-builder options', () => {
  const logger = pino({ level: 'silent' });
  describe('when compiled', () => {
    it('applies the documented defaults and makes paths absolute', () => {
      const c = compileRepoBuilderOptions({ incomingDir: 'in', repoDir: 'repo', logger });
      assert.equal(c.keep, 1);
      assert.equal(c.graceMs, 600_000);
      assert.equal(c.debounceMs, 300);
      assert.deepEqual(c.debArchitectures, ['amd64']);
      assert.ok(c.repoDir.startsWith('/') && c.stateDir === `${c.repoDir}/.repo-builder` && c.rejectedDir === `${c.incomingDir}/rejected`);
    });
    it('refuses nested directories, bad numbers, bad arch names and a multi-line origin', () => {
      const bad = (o: Record<string, unknown>, re: RegExp): void =>
        assert.throws(() => compileRepoBuilderOptions({ incomingDir: '/srv/in', repoDir: '/srv/repo', logger, ...o }), re);
      bad({ repoDir: '/srv/in/repo' }, /neither inside the other/);
      bad({ incomingDir: '/srv/repo/incoming' }, /neither inside the other/);
      bad({ keep: 0 }, /keep must be an integer/);
      bad({ graceMs: -1 }, /graceMs must be an integer/);
      bad({ xzPreset: 10 }, /xzPreset/);
      bad({ debArchitectures: ['../x'] }, /invalid arch name/);
      bad({ origin: 'a\nb' }, /origin/);
    });
  });
});
