import assert from 'node:assert/strict';
import { renderCliDoc } from '../../../cli/builder/docs/render-cli-doc.js';
import { ROOT } from '../../helpers/procs.js';

describe('docs/cli.md', function () {
  this.timeout(30_000);

  it('holds the --help of every command of the four bins as they are now (npm run docs:cli)', async function () {
    const { current, fresh } = await renderCliDoc(ROOT);
    if (current !== fresh) {
      // Name the first line that differs: the diff of a whole document is not readable in a test report.
      const a = current.split('\n');
      const b = fresh.split('\n');
      const i = a.findIndex((l, n) => l !== b[n]);
      assert.fail(`docs/cli.md is out of date (line ${i + 1}: ${JSON.stringify(a[i])} should be ${JSON.stringify(b[i])}); run: npm run docs:cli`);
    }
  });

  it('documents every builder command the issue names', async function () {
    const { current } = await renderCliDoc(ROOT);
    for (const c of ['schedule', 'observe', 'jobs', 'job', 'cancel', 'retry', 'schedules', 'pause-schedule', 'resume-schedule', 'unschedule', 'slaves', 'artifacts', 'download', 'images', 'promote', 'drain', 'undrain']) {
      assert.match(current, new RegExp(`^#### \`builder ${c}\`$`, 'm'), c);
      // An example on every command.
      const section = current.split(`#### \`builder ${c}\``)[1]?.split('#### ')[0] ?? '';
      assert.match(section, /^EXAMPLES$/m, `builder ${c} has no example`);
    }
    assert.match(current, /^#### `master client create`$/m);
  });
});
