import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// V8's own view of a function's tier (%GetOptimizationStatus bits, V8 11 as in Node 20).
const INTERPRETED = 1 << 7;
const TURBOFANNED = 1 << 6;
const BASELINE = 1 << 15;

const MODULE = fileURLToPath(new URL('../../../protocol/v8-optimizer.js', import.meta.url));

/**
 * Runs, in a fresh node with natives syntax, a function made while the compilers are held and
 * called 3 million times, then one made after `release` (an export of protocol/v8-optimizer) and
 * called until it reaches the tier `want` (V8 may compile in the background), for at most as
 * long; returns both tiers.
 */
function tiers(release: string, want: number): Promise<{ before: number; after: number }> {
  const script = `
    const m = await import(${JSON.stringify(MODULE)});
    m.holdOptimizer();
    const make = () => new Function('a', 'let s = 0; for (let i = 0; i < 10; i++) s += a * i; return s;');
    const warm = async (fn, bit) => {
      for (let round = 0; round < 30; round++) {
        for (let i = 0; i < 100000; i++) fn(i);
        if (%GetOptimizationStatus(fn) & bit) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      return %GetOptimizationStatus(fn);
    };
    const before = await warm(make(), 0);
    m.${release}();
    const after = await warm(make(), ${want});
    console.log(JSON.stringify({ before, after }));`;
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', script], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${err.message}\n${stderr}`));
      resolve(JSON.parse(stdout) as { before: number; after: number });
    });
    child.stdin?.end();
  });
}

describe('V8 compilers held at start (protocol/v8-optimizer)', function () {
  this.timeout(30_000);

  it('keeps a warm function interpreted while held; the baseline compiler alone, once let go, gives it baseline code but no TurboFan', async () => {
    const { before, after } = await tiers('releaseBaselineCompiler', BASELINE);
    assert.ok(before & INTERPRETED && !(before & BASELINE) && !(before & TURBOFANNED), `held: status ${before.toString(2)}`);
    assert.ok(after & BASELINE && !(after & INTERPRETED) && !(after & TURBOFANNED), `baseline let go: status ${after.toString(2)}`);
  });

  it('optimizes a hot function once the optimizer is let go', async () => {
    const { before, after } = await tiers('releaseOptimizer', TURBOFANNED);
    assert.ok(before & INTERPRETED && !(before & TURBOFANNED), `held: status ${before.toString(2)}`);
    assert.ok(after & TURBOFANNED, `let go: status ${after.toString(2)}`);
  });
});
