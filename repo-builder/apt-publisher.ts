import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { buildCompressedIndex, type ChunkCache, type OutCodec } from './compress.js';
import { atomicWrite, sha256Hex, writeIfAbsent } from './fs-util.js';
import type { RepoBuilderConfig } from './repo-builder-options.js';
import type { Signer } from './signer.js';
import type { PublishedRow } from './state-store.js';
import { compareDebVersions } from './version.js';

/** What a publish left live: the top file's sha256 and every file the top file names. */
export interface PublishResult {
  topSha256: string;
  /** Paths relative to the repository root that must outlive this generation's grace period. */
  files: string[];
}

/** RFC 2822 date in UTC with a numeric zone, as apt expects in Release. */
export function releaseDate(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/** The path of a channel's dists directory relative to the repository root. */
export const aptDistsDir = (channel: string): string => `deb/dists/${channel}`;

/**
 * Writes a channel's APT indexes (dists layout, one component "main"): for each architecture a
 * Packages file with .gz and .xz, every variant also under by-hash/SHA256/, then Release,
 * Release.gpg and InRelease last. Every file Release names exists before Release does; old
 * by-hash files stay until the grace period ends, so apt never meets a missing or changed index.
 */
export async function publishApt(
  cfg: RepoBuilderConfig,
  channel: string,
  rows: PublishedRow[],
  cache: ChunkCache,
  signer: Signer | undefined,
): Promise<PublishResult> {
  const distsRel = aptDistsDir(channel);
  const dists = join(cfg.repoDir, distsRel);
  const arches = [...new Set([...cfg.debArchitectures, ...rows.map((r) => r.arch).filter((a) => a !== 'all')])].sort();
  const codecs: OutCodec[] = cfg.xz ? ['gz', 'xz'] : ['gz'];
  const sums: { path: string; size: number; sha256: string }[] = [];
  const files: string[] = [];
  const sorted = [...rows].sort((a, b) => (a.name !== b.name ? (a.name < b.name ? -1 : 1) : a.arch !== b.arch ? (a.arch < b.arch ? -1 : 1) : compareDebVersions(a.version, b.version)));
  for (const arch of arches) {
    // Release does not list "all", so apt reads Architecture: all packages from each binary-<arch>.
    const entries = sorted.filter((r) => r.arch === arch || r.arch === 'all').map((r) => ({ key: `${r.name}\0${r.arch}\0${r.version}`, text: `${r.entry}\n` }));
    const idx = await buildCompressedIndex('', entries, '', codecs, cache, {
      gzipLevel: cfg.gzipLevel,
      xzPreset: cfg.xzPreset,
      chunkEntries: cfg.chunkEntries,
      concurrency: cfg.concurrency,
    });
    const relDir = `main/binary-${arch}`;
    const variants: [string, Buffer][] = [['Packages', idx.plain], ['Packages.gz', idx.gz]];
    if (idx.xz !== undefined) variants.push(['Packages.xz', idx.xz]);
    const byHash: [string, Buffer][] = [];
    for (const [name, data] of variants) {
      const sha = sha256Hex(data);
      sums.push({ path: `${relDir}/${name}`, size: data.length, sha256: sha });
      byHash.push([`${relDir}/by-hash/SHA256/${sha}`, data]);
      files.push(`${distsRel}/${relDir}/by-hash/SHA256/${sha}`);
    }
    await Promise.all(byHash.map(([rel, data]) => writeIfAbsent(join(dists, rel), data, cfg.fsync)));
    // The plain names are for clients without by-hash; by-hash copies are already in place.
    await Promise.all(variants.map(([name, data]) => atomicWrite(join(dists, relDir, name), data, cfg.fsync)));
  }
  let release =
    `Origin: ${cfg.origin}\n` +
    `Label: ${cfg.origin}\n` +
    `Suite: ${channel}\n` +
    `Codename: ${channel}\n` +
    `Date: ${releaseDate(cfg.now())}\n` +
    `Architectures: ${arches.join(' ')}\n` +
    `Components: main\n` +
    `Acquire-By-Hash: yes\n` +
    `Description: ${cfg.origin} channel ${channel}\n` +
    `SHA256:\n`;
  for (const s of sums) release += ` ${s.sha256} ${String(s.size).padStart(16)} ${s.path}\n`;
  const releaseBuf = Buffer.from(release, 'utf8');
  if (signer !== undefined) {
    const [detached, inline] = await Promise.all([signer.detachArmored(releaseBuf), signer.clearsign(releaseBuf)]);
    await atomicWrite(join(dists, 'Release.gpg'), detached, cfg.fsync);
    await atomicWrite(join(dists, 'Release'), releaseBuf, cfg.fsync);
    await atomicWrite(join(dists, 'InRelease'), inline, cfg.fsync);
    return { topSha256: sha256Hex(inline), files };
  }
  await atomicWrite(join(dists, 'Release'), releaseBuf, cfg.fsync);
  // No key any more: a stale signature would name an old Release.
  await rm(join(dists, 'InRelease'), { force: true });
  await rm(join(dists, 'Release.gpg'), { force: true });
  return { topSha256: sha256Hex(releaseBuf), files };
}
