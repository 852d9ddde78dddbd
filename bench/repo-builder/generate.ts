/**
 * Makes the benchmark's synthetic packages once (reused by later runs):
 *   <data>/debs/  N .deb files: N/3 names x 3 versions (1.0-1, 1.1~rc1-1, 1:0.9-2), 10% Architecture: all
 *   <data>/rpms/  N .rpm files: N/3 names x 3 versions (1.0-1, 1.1~rc1-1, 1:0.9-2), 10% noarch
 * .debs come from the in-process writer (real format, checked by dpkg-deb in the tests); .rpms
 * from rpmbuild, 500 subpackages per run.
 *
 *   node dist/bench/repo-builder/generate.js [--count 10000] [--data /tmp/rb-bench-data]
 */
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { debFileName, makeDeb } from '../../test/integration/repo-builder/helpers/synth-deb.js';
import { buildRpms } from '../../test/integration/repo-builder/helpers/tools.js';

const { values } = parseArgs({ options: { count: { type: 'string', default: '10000' }, data: { type: 'string', default: '/tmp/rb-bench-data' } } });
const count = Number(values.count);
const data = values.data;
const names = Math.ceil(count / 3);
const VERSIONS = [
  { deb: '1.0-1', epoch: undefined, version: '1.0', release: '1' },
  { deb: '1.1~rc1-1', epoch: undefined, version: '1.1~rc1', release: '1' },
  { deb: '1:0.9-2', epoch: 1, version: '0.9', release: '2' },
];

async function debs(): Promise<void> {
  const dir = join(data, 'debs');
  await mkdir(dir, { recursive: true });
  const have = new Set(await readdir(dir));
  let made = 0;
  for (let v = 0; v < 3; v++) {
    for (let k = 0; k < names && made < count; k++, made++) {
      const d = {
        name: `bench-pkg${k}`,
        version: VERSIONS[v]!.deb,
        arch: k % 10 === 0 ? 'all' : 'amd64',
        extra: [`Depends: libc6 (>= 2.36), bench-pkg${(k + 1) % names}`, 'Homepage: https://builder.invalid/'],
      };
      const f = debFileName(d);
      if (!have.has(f)) await writeFile(join(dir, f), await makeDeb(d));
    }
  }
  console.log(`debs: ${(await readdir(dir)).length} in ${dir}`);
}

async function rpms(): Promise<void> {
  const dir = join(data, 'rpms');
  await mkdir(dir, { recursive: true });
  if ((await readdir(dir)).length >= count) {
    console.log(`rpms: already ${count} in ${dir}`);
    return;
  }
  let made = 0;
  for (let v = 0; v < 3; v++) {
    for (let start = 0; start < names && made < count; start += 500) {
      const list = [];
      for (let k = start; k < Math.min(names, start + 500) && made < count; k++, made++) {
        list.push({ name: `bench-rpm${k}`, version: VERSIONS[v]!.version, release: VERSIONS[v]!.release, epoch: VERSIONS[v]!.epoch, arch: k % 10 === 0 ? 'noarch' : 'x86_64' });
      }
      const work = join(data, `rpmwork-${v}-${start}`);
      const out = await buildRpms(work, list);
      for (const f of out.keys()) {
        if (f.startsWith('rbtestmain')) continue;
        const a = f.endsWith('.noarch.rpm') ? 'noarch' : 'x86_64';
        await rename(join(work, 'rpmbuild/RPMS', a, f), join(dir, f));
      }
      await rm(work, { recursive: true, force: true });
      process.stdout.write(`\rrpms: ${made}/${count}`);
    }
  }
  console.log(`\nrpms: ${(await readdir(dir)).length} in ${dir}`);
}

await debs();
await rpms();
