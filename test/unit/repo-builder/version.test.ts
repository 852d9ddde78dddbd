import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { compareDebVersions, compareRpmEvr, parseDebVersion, parseRpmEvr, rpmvercmp, verrevcmp } from '../../../repo-builder/version.js';

const execFileP = promisify(execFile);

/** dpkg's own vectors: scripts/t/Dpkg_Version.t __DATA__ (guillemj/dpkg). [a, b, expected] */
const DPKG: [string, string, number][] = [
  ['1.0-1', '2.0-2', -1], ['2.2~rc-4', '2.2-1', -1], ['2.2-1', '2.2~rc-4', 1], ['1.0000-1', '1.0-1', 0],
  ['1', '0:1', 0], ['0', '0:0-0', 0], ['2:2.5', '1:7.5', 1], ['1:0foo', '0foo', 1], ['0:0foo', '0foo', 0],
  ['0foo', '0foo', 0], ['0foo', '0fo', 1], ['0foo~1', '0foo', -1], ['0foo~foo+Bar', '0foo~foo+bar', -1],
  ['0foo~~', '0foo~', -1], ['1~', '1', -1], ['12345+that-really-is-some-ver-0', '12345+that-really-is-some-ver-10', -1],
  ['0foo-0', '0foo-01', -1], ['0foo.bar', '0foobar', 1], ['0foo.bar', '0foo1bar', 1], ['0foo.bar', '0foo0bar', 1],
  ['0foo1bar-1', '0foobar-1', -1], ['0foo2.0', '0foo2', 1], ['0foo2.0.0', '0foo2.10.0', -1], ['0foo2.0', '0foo2.0.0', -1],
  ['0foo2.0', '0foo2.10', -1], ['0foo2.1', '0foo2.10', -1], ['1.09', '1.9', 0], ['1.0.8+nmu1', '1.0.8', 1],
  ['3.11', '3.10+nmu1', 1], ['0.9j-20080306-4', '0.9i-20070324-2', 1], ['1.2.0~b7-1', '1.2.0~b6-1', 1],
  ['1.011-1', '1.06-2', 1], ['0.0.9+dfsg1-1', '0.0.8+dfsg1-3', 1], ['4.6.99+svn6582-1', '4.6.99+svn6496-1', 1],
  ['53', '52', 1], ['0.9.9~pre122-1', '0.9.9~pre111-1', 1], ['2:2.3.2-2+lenny2', '2:2.3.2-2', 1],
  ['1:3.8.1-1', '3.8.GA-1', 1], ['1.0.1+gpl-1', '1.0.1-2', 1], ['1a', '1000a', -1],
];
/** The four vectors of the same table that dpkg 1.21 --compare-versions refuses as syntax errors. */
const DPKG_INVALID = ['0foo-', '-0.6.5'];

/** rpm's own vectors: tests/rpmvercmp.at (rpm-software-management/rpm), incl. the ^ block. */
const RPM: [string, string, number][] = [
  ['1.0', '1.0', 0], ['1.0', '2.0', -1], ['2.0', '1.0', 1], ['2.0.1', '2.0.1', 0], ['2.0', '2.0.1', -1], ['2.0.1', '2.0', 1],
  ['2.0.1a', '2.0.1a', 0], ['2.0.1a', '2.0.1', 1], ['2.0.1', '2.0.1a', -1], ['5.5p1', '5.5p1', 0], ['5.5p1', '5.5p2', -1],
  ['5.5p2', '5.5p1', 1], ['5.5p10', '5.5p10', 0], ['5.5p1', '5.5p10', -1], ['5.5p10', '5.5p1', 1], ['10xyz', '10.1xyz', -1],
  ['10.1xyz', '10xyz', 1], ['xyz10', 'xyz10', 0], ['xyz10', 'xyz10.1', -1], ['xyz10.1', 'xyz10', 1], ['xyz.4', 'xyz.4', 0],
  ['xyz.4', '8', -1], ['8', 'xyz.4', 1], ['xyz.4', '2', -1], ['2', 'xyz.4', 1], ['5.5p2', '5.6p1', -1], ['5.6p1', '5.5p2', 1],
  ['5.6p1', '6.5p1', -1], ['6.5p1', '5.6p1', 1], ['6.0.rc1', '6.0', 1], ['6.0', '6.0.rc1', -1], ['10b2', '10a1', 1],
  ['10a2', '10b2', -1], ['1.0aa', '1.0aa', 0], ['1.0a', '1.0aa', -1], ['1.0aa', '1.0a', 1], ['10.0001', '10.0001', 0],
  ['10.0001', '10.1', 0], ['10.1', '10.0001', 0], ['10.0001', '10.0039', -1], ['10.0039', '10.0001', 1], ['4.999.9', '5.0', -1],
  ['5.0', '4.999.9', 1], ['20101121', '20101121', 0], ['20101121', '20101122', -1], ['20101122', '20101121', 1],
  ['2_0', '2_0', 0], ['2.0', '2_0', 0], ['2_0', '2.0', 0], ['a', 'a', 0], ['a+', 'a+', 0], ['a+', 'a_', 0], ['a_', 'a+', 0],
  ['+a', '+a', 0], ['+a', '_a', 0], ['_a', '+a', 0], ['+_', '+_', 0], ['_+', '+_', 0], ['_+', '_+', 0], ['+', '_', 0],
  ['_', '+', 0], ['1.0~rc1', '1.0~rc1', 0], ['1.0~rc1', '1.0', -1], ['1.0', '1.0~rc1', 1], ['1.0~rc1', '1.0~rc2', -1],
  ['1.0~rc2', '1.0~rc1', 1], ['1.0~rc1~git123', '1.0~rc1~git123', 0], ['1.0~rc1~git123', '1.0~rc1', -1],
  ['1.0~rc1', '1.0~rc1~git123', 1], ['1.0^', '1.0^', 0], ['1.0^', '1.0', 1], ['1.0', '1.0^', -1], ['1.0^git1', '1.0^git1', 0],
  ['1.0^git1', '1.0', 1], ['1.0', '1.0^git1', -1], ['1.0^git1', '1.0^git2', -1], ['1.0^git2', '1.0^git1', 1],
  ['1.0^git1', '1.01', -1], ['1.01', '1.0^git1', 1], ['1.0^20160101', '1.0^20160101', 0], ['1.0^20160101', '1.0.1', -1],
  ['1.0.1', '1.0^20160101', 1], ['1.0^20160101^git1', '1.0^20160101^git1', 0], ['1.0^20160102', '1.0^20160101^git1', 1],
  ['1.0^20160101^git1', '1.0^20160102', -1], ['1.0~rc1^git1', '1.0~rc1^git1', 0], ['1.0~rc1^git1', '1.0~rc1', 1],
  ['1.0~rc1', '1.0~rc1^git1', -1], ['1.0^git1~pre', '1.0^git1~pre', 0], ['1.0^git1', '1.0^git1~pre', 1],
  ['1.0^git1~pre', '1.0^git1', -1],
  // The "oddities" rpmvercmp.at keeps commented out (RhBug:811992); rpm really returns these.
  ['1b.fc17', '1b.fc17', 0], ['1b.fc17', '1.fc17', -1], ['1.fc17', '1b.fc17', 1], ['1g.fc17', '1g.fc17', 0],
  ['1g.fc17', '1.fc17', 1], ['1.fc17', '1g.fc17', -1],
];

async function dpkgCompare(a: string, b: string): Promise<number> {
  for (const [op, r] of [['lt', -1], ['eq', 0], ['gt', 1]] as const) {
    try {
      await execFileP('dpkg', ['--compare-versions', a, op, b]);
      return r;
    } catch (e) {
      if ((e as { code?: number }).code !== 1) throw e;
    }
  }
  throw new Error('no relation');
}

/** rpm's own comparison for many pairs in ONE process (rpm.vercmp, as rpmvercmp.at calls it). */
async function rpmCompareMany(pairs: [string, string][]): Promise<number[]> {
  // rpm's Lua print() adds no newline inside one %{lua:} block.
  const lua = pairs.map(([a, b]) => `print(rpm.vercmp(${JSON.stringify(a)}, ${JSON.stringify(b)}) .. "\\n")`).join(' ');
  const { stdout } = await execFileP('rpm', ['--eval', `%{lua: ${lua}}`], { maxBuffer: 1 << 24 });
  return stdout.trim().split('\n').map(Number);
}

describe('version order', function () {
  this.timeout(60_000);

  describe('when comparing with dpkg rules', () => {
    it('gives the result of every vector in dpkg\'s own test table', () => {
      for (const [a, b, r] of DPKG) assert.equal(compareDebVersions(a, b), r, `${a} vs ${b}`);
    });
    it('agrees with dpkg --compare-versions on each vector', async () => {
      for (const [a, b] of DPKG) assert.equal(compareDebVersions(a, b), await dpkgCompare(a, b), `${a} vs ${b}`);
    });
    it('refuses what dpkg refuses, with a clear error', () => {
      for (const v of [...DPKG_INVALID, '', '  ', '0:', '0:0 0-1', '-1:0-1', '999999999999999999999999:0-1', 'a:0-0', 'A:0-0', '-0', '0:-0', '0:abc3-0']) {
        assert.throws(() => parseDebVersion(v), { code: 'BUILDER_ERR_INVALID_INPUT' }, JSON.stringify(v));
      }
    });
    it('parses as dpkg does: epoch before the first colon, revision after the last hyphen', () => {
      assert.deepEqual(parseDebVersion('0:0-0-0'), { epoch: 0, upstream: '0-0', revision: '0' });
      assert.deepEqual(parseDebVersion('0:09azAZ.-+~:-0'), { epoch: 0, upstream: '09azAZ.-+~:', revision: '0' });
      assert.deepEqual(parseDebVersion(' 1:2.3-4 '), { epoch: 1, upstream: '2.3', revision: '4' });
      assert.equal(verrevcmp('00', '0'), 0);
      assert.equal(verrevcmp('a', 'b'), -1);
    });
    it('agrees with dpkg on random versions', async () => {
      const part = fc.stringMatching(/^[0-9][0-9a-z.+~]{0,6}$/);
      const ver = fc.tuple(fc.option(fc.integer({ min: 0, max: 3 })), part, fc.option(fc.stringMatching(/^[0-9a-z.+~]{1,4}$/))).map(([e, u, r]) => `${e === null ? '' : `${e}:`}${u}${r === null ? '' : `-${r}`}`);
      const pairs = fc.sample(fc.tuple(ver, ver), { numRuns: 60, seed: 42 });
      for (const [a, b] of pairs) assert.equal(compareDebVersions(a, b), await dpkgCompare(a, b), `${a} vs ${b}`);
    });
  });

  describe('when comparing with rpm rules', () => {
    it('gives the result of every vector in rpm\'s own rpmvercmp.at', () => {
      for (const [a, b, r] of RPM) assert.equal(rpmvercmp(a, b), r, `${a} vs ${b}`);
    });
    it('agrees with rpm.vercmp on each vector and on random versions', async () => {
      const seg = fc.stringMatching(/^[0-9a-z._+~^]{1,8}$/);
      const random = fc.sample(fc.tuple(seg, seg), { numRuns: 300, seed: 7 });
      const pairs: [string, string][] = [...RPM.map(([a, b]) => [a, b] as [string, string]), ...random];
      const theirs = await rpmCompareMany(pairs);
      pairs.forEach(([a, b], k) => assert.equal(rpmvercmp(a, b), theirs[k], `${a} vs ${b}`));
    });
    it('orders epoch, version, release as rpm does', async () => {
      const evrs = ['1:0.5-1', '9.0-1', '1.0-1', '1.0-2', '1.0~rc1-1', '1.0^git1-1', '0:1.0-10'];
      const pairs: [string, string][] = [];
      for (const a of evrs) for (const b of evrs) pairs.push([a, b]);
      const theirs = await rpmCompareMany(pairs);
      pairs.forEach(([a, b], k) => assert.equal(compareRpmEvr(parseRpmEvr(a), parseRpmEvr(b)), theirs[k], `${a} vs ${b}`));
    });
  });
});
