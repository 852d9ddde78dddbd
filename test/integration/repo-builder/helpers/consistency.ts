import { createHash } from 'node:crypto';
import { access, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function readOrUndefined(p: string): Promise<Buffer | undefined> {
  try {
    return await readFile(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * Reads the published tree the way a client or mirror does, starting from each top file, and
 * returns every problem: a file the top file (or an index it names) refers to that is missing,
 * or whose content does not match the hash it is named with. Empty means consistent.
 * `pauseMs` makes it a slow client: it waits that long after reading each top file and index.
 */
export async function checkPublishedTree(repo: string, pauseMs = 0): Promise<{ problems: string[]; debPackages: Map<string, string[]>; rpmPackages: Map<string, string[]> }> {
  const problems: string[] = [];
  const debPackages = new Map<string, string[]>();
  const rpmPackages = new Map<string, string[]>();
  const dists = join(repo, 'deb/dists');
  for (const channel of await readdir(dists).catch(() => [] as string[])) {
    const release = await readOrUndefined(join(dists, channel, 'Release'));
    if (release === undefined) {
      problems.push(`deb/${channel}: no Release`);
      continue;
    }
    if (pauseMs > 0) await sleep(pauseMs);
    const entries = [...release.toString().matchAll(/^ ([0-9a-f]{64}) +(\d+) (\S+)$/gm)].map((m) => ({ sha: m[1]!, size: Number(m[2]), path: m[3]! }));
    for (const e of entries) {
      const dir = e.path.slice(0, e.path.lastIndexOf('/'));
      const byHash = join(dists, channel, dir, 'by-hash/SHA256', e.sha);
      const data = await readOrUndefined(byHash);
      if (data === undefined) {
        problems.push(`deb/${channel}: Release names ${e.path} by hash ${e.sha.slice(0, 12)}, which is missing`);
        continue;
      }
      if (sha(data) !== e.sha || data.length !== e.size) problems.push(`deb/${channel}: by-hash file ${e.sha.slice(0, 12)} has other content`);
      if ((await readOrUndefined(join(dists, channel, e.path))) === undefined) problems.push(`deb/${channel}: ${e.path} is missing`);
      if (e.path.endsWith('/Packages')) {
        if (pauseMs > 0) await sleep(pauseMs);
        const names: string[] = [];
        for (const stanza of data.toString().split('\n\n')) {
          const file = /^Filename: (.*)$/m.exec(stanza)?.[1];
          if (file === undefined) continue;
          names.push(`${/^Package: (.*)$/m.exec(stanza)?.[1]}=${/^Version: (.*)$/m.exec(stanza)?.[1]}`);
          try {
            await access(join(repo, 'deb', file));
          } catch {
            problems.push(`deb/${channel}: Packages names ${file}, which is missing`);
          }
        }
        debPackages.set(`${channel}/${dir}`, names);
      }
    }
  }
  const rpmRoot = join(repo, 'rpm');
  for (const channel of await readdir(rpmRoot).catch(() => [] as string[])) {
    const base = join(rpmRoot, channel);
    const repomd = await readOrUndefined(join(base, 'repodata/repomd.xml'));
    if (repomd === undefined) {
      problems.push(`rpm/${channel}: no repomd.xml`);
      continue;
    }
    if (pauseMs > 0) await sleep(pauseMs);
    for (const m of repomd.toString().matchAll(/<data type="(\w+)">\s*<checksum type="sha256">([0-9a-f]{64})<\/checksum>[\s\S]*?<location href="([^"]+)"/g)) {
      const [, type, sum, href] = m as unknown as [string, string, string, string];
      const data = await readOrUndefined(join(base, href));
      if (data === undefined) {
        problems.push(`rpm/${channel}: repomd names ${href}, which is missing`);
        continue;
      }
      if (sha(data) !== sum) problems.push(`rpm/${channel}: ${href} has other content`);
      if (type === 'primary') {
        if (pauseMs > 0) await sleep(pauseMs);
        const xml = gunzipSync(data).toString();
        const names: string[] = [];
        for (const p of xml.split('<package type="rpm">').slice(1)) {
          const href2 = /<location href="([^"]+)"/.exec(p)![1]!;
          names.push(`${/<name>([^<]*)<\/name>/.exec(p)![1]}=${/<version epoch="(\d+)" ver="([^"]*)" rel="([^"]*)"/.exec(p)!.slice(1).join(':')}`);
          try {
            await access(join(base, href2));
          } catch {
            problems.push(`rpm/${channel}: primary names ${href2}, which is missing`);
          }
        }
        rpmPackages.set(channel, names);
      }
    }
  }
  return { problems, debPackages, rpmPackages };
}
