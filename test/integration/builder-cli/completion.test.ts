import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../../helpers/procs.js';

describe('shell completion', function () {
  this.timeout(60_000);
  let cache: string;

  beforeEach(async function () {
    cache = await mkdtemp(join(tmpdir(), 'builder-ac-'));
  });
  afterEach(async function () {
    await rm(cache, { recursive: true, force: true });
  });

  it('builder autocomplete writes bash and zsh completions that know every command and its flags', async function () {
    const r = await runBin('builder', ['autocomplete', 'bash'], { env: { XDG_CACHE_HOME: cache } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /builder autocomplete script bash/);
    const bash = await readFile(join(cache, 'builder', 'autocomplete', 'functions', 'bash', 'builder.bash'), 'utf8');
    for (const c of ['schedule', 'observe', 'jobs', 'job', 'cancel', 'retry', 'schedules', 'unschedule', 'slaves', 'artifacts', 'download', 'images', 'promote', 'drain', 'undrain']) {
      assert.match(bash, new RegExp(`^${c} --master --identity`, 'm'), c);
    }
    assert.match(bash, /^schedule .*--cron .*--script .*--observe/m);
    const zsh = await readFile(join(cache, 'builder', 'autocomplete', 'functions', 'zsh', '_builder'), 'utf8');
    assert.match(zsh, /observe/);
  });

  it('the other bins have it too', async function () {
    const r = await runBin('master', ['autocomplete', '--refresh-cache'], { env: { XDG_CACHE_HOME: cache } });
    assert.equal(r.code, 0, r.stderr);
    const bash = await readFile(join(cache, 'builder-master', 'autocomplete', 'functions', 'bash', 'master.bash'), 'utf8');
    assert.match(bash, /^client:create --dir --out --admin/m);
  });
});
