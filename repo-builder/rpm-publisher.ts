import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { PublishResult } from './apt-publisher.js';
import { buildCompressedIndex, type ChunkCache } from './compress.js';
import { atomicWrite, sha256Hex, writeIfAbsent } from './fs-util.js';
import type { RepoBuilderConfig } from './repo-builder-options.js';
import { FILELISTS_CLOSE, FILELISTS_OPEN, OTHER_CLOSE, OTHER_OPEN, PRIMARY_CLOSE, PRIMARY_OPEN } from './rpm-metadata.js';
import type { Signer } from './signer.js';
import type { PublishedRow } from './state-store.js';
import { compareRpmEvr, parseRpmEvr } from './version.js';

export const rpmChannelDir = (channel: string): string => `rpm/${channel}`;

/**
 * Writes a channel's repodata: primary, filelists and other as `<sha256>-<type>.xml.gz` (new
 * names, so old and new generations coexist), then repomd.xml by rename, then repomd.xml.asc
 * when a key is configured. Old data files are removed only after the grace period.
 */
export async function publishRpm(
  cfg: RepoBuilderConfig,
  channel: string,
  rows: PublishedRow[],
  cache: ChunkCache,
  signer: Signer | undefined,
): Promise<PublishResult> {
  const relBase = rpmChannelDir(channel);
  const base = join(cfg.repoDir, relBase);
  const sorted = [...rows].sort((a, b) =>
    a.name !== b.name ? (a.name < b.name ? -1 : 1) : a.arch !== b.arch ? (a.arch < b.arch ? -1 : 1) : compareRpmEvr(parseRpmEvr(a.version), parseRpmEvr(b.version)),
  );
  const n = sorted.length;
  const key = (r: PublishedRow): string => `${r.name}\0${r.arch}\0${r.version}`;
  const opts = { gzipLevel: cfg.gzipLevel, xzPreset: cfg.xzPreset, chunkEntries: cfg.chunkEntries, concurrency: cfg.concurrency };
  const kinds: [string, string, string, (r: PublishedRow) => string][] = [
    ['primary', PRIMARY_OPEN(n), PRIMARY_CLOSE, (r) => r.entry],
    ['filelists', FILELISTS_OPEN(n), FILELISTS_CLOSE, (r) => r.entry2],
    ['other', OTHER_OPEN(n), OTHER_CLOSE, (r) => r.entry3],
  ];
  const now = cfg.now();
  const ts = Math.floor(now / 1000);
  const files: string[] = [];
  let repomd = `<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n  <revision>${ts}</revision>\n`;
  // The three data files are independent: build and write them side by side.
  const parts = await Promise.all(
    kinds.map(async ([type, open, close, pick]) => {
      const idx = await buildCompressedIndex(open, sorted.map((r) => ({ key: key(r), text: pick(r) })), close, ['gz'], cache, opts);
      const sha = sha256Hex(idx.gz);
      const rel = `repodata/${sha}-${type}.xml.gz`;
      await writeIfAbsent(join(base, rel), idx.gz, cfg.fsync);
      return { type, sha, rel, idx };
    }),
  );
  for (const { type, sha, rel, idx } of parts) {
    files.push(`${relBase}/${rel}`);
    repomd +=
      `  <data type="${type}">\n` +
      `    <checksum type="sha256">${sha}</checksum>\n` +
      `    <open-checksum type="sha256">${sha256Hex(idx.plain)}</open-checksum>\n` +
      `    <location href="${rel}"/>\n` +
      `    <timestamp>${ts}</timestamp>\n` +
      `    <size>${idx.gz.length}</size>\n` +
      `    <open-size>${idx.plain.length}</open-size>\n` +
      `  </data>\n`;
  }
  repomd += '</repomd>\n';
  const repomdBuf = Buffer.from(repomd, 'utf8');
  const asc = signer === undefined ? undefined : await signer.detachArmored(repomdBuf);
  await atomicWrite(join(base, 'repodata', 'repomd.xml'), repomdBuf, cfg.fsync);
  if (asc !== undefined) await atomicWrite(join(base, 'repodata', 'repomd.xml.asc'), asc, cfg.fsync);
  else await rm(join(base, 'repodata', 'repomd.xml.asc'), { force: true });
  return { topSha256: sha256Hex(repomdBuf), files };
}
