import assert from 'node:assert/strict';
import { clip } from '../../../master/jobs/job-service.js';

describe('master/jobs clip (a reason cut to its length limit)', () => {
  it('keeps a short text, and cuts a long one to the limit with an ellipsis', () => {
    assert.equal(clip('abc', 5), 'abc');
    assert.equal(clip('abcdefgh', 5), 'abcd…');
    assert.equal(clip('abcdefgh', 5).length, 5);
    assert.equal(clip('abcdefgh', 1), '…');
    assert.equal(clip('abcdefgh', 0), '');
  });

  it('never cuts between the two halves of a surrogate pair', () => {
    // The pair would straddle the cut at 4: 'abc' + high + low + ...
    const s = 'abc\u{1F680}defgh';
    const c = clip(s, 5);
    assert.equal(c, 'abc…');
    assert.ok(c.isWellFormed());
    for (let n = 2; n < s.length; n++) assert.ok(clip(s, n).isWellFormed(), `cut at ${n}`);
  });
});
