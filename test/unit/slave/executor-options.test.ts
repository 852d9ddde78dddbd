import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { isBuilderError } from '../../../protocol/errors.js';
import { compileExecutorOptions } from '../../../slave/executor/index.js';

/** The largest id Node's child_process.spawn takes for uid/gid (an int32). */
const SPAWN_MAX_ID = 2 ** 31 - 1;
const dataDir = '/tmp/builder-unused';

function refusedAs(field: 'uid' | 'gid', value: number): (e: unknown) => boolean {
  return (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && e.message.includes(`runAs.${field}`) && e.message.includes(String(value)) && e.message.includes(String(SPAWN_MAX_ID));
}

describe('slave/executor options', () => {
  describe('when runAs is given', () => {
    it('accepts a uid and gid of 2^31-1, the largest spawn takes', () => {
      const o = compileExecutorOptions({ dataDir, runAs: { uid: SPAWN_MAX_ID, gid: SPAWN_MAX_ID } });
      assert.deepEqual(o.runAs, { uid: SPAWN_MAX_ID, gid: SPAWN_MAX_ID });
    });

    it('refuses a uid of 2^31 when the options are compiled, naming the field, the value and the limit', () => {
      assert.throws(() => compileExecutorOptions({ dataDir, runAs: { uid: SPAWN_MAX_ID + 1, gid: 1000 } }), refusedAs('uid', SPAWN_MAX_ID + 1));
    });

    it('refuses a gid of 2^31 the same way', () => {
      assert.throws(() => compileExecutorOptions({ dataDir, runAs: { uid: 1000, gid: SPAWN_MAX_ID + 1 } }), refusedAs('gid', SPAWN_MAX_ID + 1));
    });

    it('refuses 2^32-1, negative and non-integer ids', () => {
      for (const [uid, gid, field, bad] of [
        [2 ** 32 - 1, 1000, 'uid', 2 ** 32 - 1],
        [1000, -1, 'gid', -1],
        [1.5, 1000, 'uid', 1.5],
        [1000, Number.NaN, 'gid', Number.NaN],
      ] as const) {
        assert.throws(() => compileExecutorOptions({ dataDir, runAs: { uid, gid } }), refusedAs(field, bad), `${uid}/${gid}`);
      }
    });

    it('refuses root', () => {
      assert.throws(() => compileExecutorOptions({ dataDir, runAs: { uid: 0, gid: 0 } }), (e) => isBuilderError(e, 'BUILDER_ERR_CONFIG') && e.message.includes('root'));
    });
  });

  describe('when the limit is checked against this Node', () => {
    // Ties the limit to spawn's real argument check: 2^31 must be refused by spawn itself (so
    // letting it through would fail every job), 2^31-1 must pass it (so refusing it would be a
    // needless restriction). As root the child really runs as that id; otherwise setuid fails
    // with EPERM after the argument check, which is not an argument error.
    for (const field of ['uid', 'gid'] as const) {
      it(`spawn takes ${field} 2^31-1 and refuses 2^31 as an invalid argument`, () => {
        assert.throws(() => spawnSync('/bin/true', [], { [field]: SPAWN_MAX_ID + 1 }), (e) => (e as NodeJS.ErrnoException).code === 'ERR_INVALID_ARG_TYPE');
        const r = spawnSync('/bin/sh', ['-c', field === 'uid' ? 'id -u' : 'id -g'], { [field]: SPAWN_MAX_ID, encoding: 'utf8', timeout: 10_000 });
        if (process.getuid?.() === 0) {
          assert.equal(r.error, undefined);
          assert.equal(r.stdout, `${SPAWN_MAX_ID}\n`);
        } else {
          assert.ok(r.error !== undefined && 'code' in r.error && r.error.code === 'EPERM', String(r.error));
        }
      });
    }
  });
});
