import assert from 'node:assert/strict';
import { loadBinConfig, withCodeUnitCompare, type BinName } from '../../../cli/run.js';

const BINS: BinName[] = ['master', 'slave', 'builder', 'repo-builder'];

/** String.prototype.localeCompare as it is now (read without binding it). */
const currentCompare = (): unknown => Object.getOwnPropertyDescriptor(String.prototype, 'localeCompare')?.value;

describe('bin config loading (cli/run)', function () {
  this.timeout(30_000);

  for (const bin of BINS) {
    it(`loads the ${bin} commands without calling localeCompare, in localeCompare's order`, async () => {
      // eslint-disable-next-line @typescript-eslint/unbound-method -- put back as it was
      const real = String.prototype.localeCompare;
      let calls = 0;
      String.prototype.localeCompare = function (this: string, that: string, ...rest: []) {
        calls++;
        return real.call(this, that, ...rest);
      };
      let ids: string[];
      try {
        const config = await loadBinConfig(bin);
        ids = config.commands.map((c) => c.id);
        assert.equal(calls, 0, 'a call would have built an ICU collator');
      } finally {
        String.prototype.localeCompare = real;
      }
      assert.ok(ids.includes('run') || ids.includes('schedule'), `commands of ${bin}: ${ids.join(' ')}`);
      // The order help and completion show is the one oclif's own localeCompare sort gives, per plugin.
      const byPlugin = new Map<string, string[]>();
      const config = await loadBinConfig(bin);
      for (const c of config.commands) byPlugin.set(c.pluginName ?? '', [...(byPlugin.get(c.pluginName ?? '') ?? []), c.id]);
      for (const [plugin, list] of byPlugin) assert.deepEqual(list, [...list].sort((a, b) => a.localeCompare(b)), `plugin ${plugin}`);
    });
  }

  it('puts localeCompare back when the loading fails', async () => {
    const before = currentCompare();
    await assert.rejects(
      withCodeUnitCompare(async () => {
        assert.notEqual(currentCompare(), before);
        assert.equal('b'.localeCompare('a'), 1);
        assert.equal('a'.localeCompare('a'), 0);
        assert.equal('a:b'.localeCompare('a-b'), 1);
        throw new Error('load failed');
      }),
      /load failed/,
    );
    assert.equal(currentCompare(), before);
  });
});
