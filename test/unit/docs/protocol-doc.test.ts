import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { catalogue, type MethodName } from '../../../protocol/index.js';
import { ROOT } from '../../helpers/procs.js';

describe('docs/protocol.md', function () {
  it('lists every catalogue method with the roles that may call it, and nothing else', async function () {
    const doc = await readFile(`${ROOT}docs/protocol.md`, 'utf8');
    const table = doc.split('<!-- catalogue:start -->')[1]?.split('<!-- catalogue:end -->')[0] ?? '';
    const rows = new Map<string, string>();
    for (const line of table.split('\n')) {
      const m = /^\| `([a-z.]+)` \| [^|]+ \| ([^|]+) \|/.exec(line);
      if (m) rows.set(m[1]!, m[2]!.trim());
    }
    const names = Object.keys(catalogue) as MethodName[];
    assert.deepEqual([...rows.keys()].sort(), [...names].sort());
    for (const n of names) {
      const roles = catalogue[n].roles;
      const cell = rows.get(n)!;
      if (cell === 'anyone') continue;
      assert.deepEqual(cell.split(', ').sort(), [...roles].sort(), `roles of ${n}`);
    }
  });
});
