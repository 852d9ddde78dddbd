import { isAbsolute, join, resolve, sep } from 'node:path';
import type { Logger } from 'pino';
import { BuilderError } from '../protocol/errors.js';
import { checkName } from '../protocol/names.js';
import { DEFAULT_READER_LIMITS, type ReaderLimits } from './limits.js';

/** Options of a RepoBuilder; every field but the two directories is optional. */
export interface RepoBuilderOptions {
  /** The master's incoming directory (listings and batch directories). */
  incomingDir: string;
  /** The repository root: `deb/` and `rpm/` are published under it. */
  repoDir: string;
  /** Where the state database lives. Default `<repoDir>/.repo-builder` (do not serve dotfiles). */
  stateDir?: string;
  /** Versions kept per (channel, name, arch). Default 1. */
  keep?: number;
  /** How long an index or package file stays after nothing references it. Default 10 minutes. */
  graceMs?: number;
  /** Quiet time after the last new listing before a publish starts. Default 300 ms. */
  debounceMs?: number;
  /** GPG key id or fingerprint that signs InRelease, Release.gpg and repomd.xml.asc. Default none. */
  gpgKey?: string;
  /** gpg home directory. Default gpg's own (GNUPGHOME or ~/.gnupg). */
  gpgHome?: string;
  /** APT architectures always published (an empty Packages if none). Default ['amd64']. */
  debArchitectures?: string[];
  /** Release Origin and Label. Never change them once clients use the repository (apt refuses). Default 'Builder'. */
  origin?: string;
  /** Publish Packages.xz beside Packages.gz. Default true. */
  xz?: boolean;
  /** xz preset. Default 6. */
  xzPreset?: number;
  /** gzip level. Default 6. */
  gzipLevel?: number;
  /** fsync index files before renaming them into place. Default true. */
  fsync?: boolean;
  /** Most files one listing may name. Default 10000. */
  maxFilesPerBatch?: number;
  /** Largest listing file. Default 4 MiB. */
  maxListingBytes?: number;
  /** Package reader limits. */
  limits?: Partial<ReaderLimits>;
  /** Average entries per compressed index chunk. Default 128. */
  chunkEntries?: number;
  /** Compressions and package reads run at once. Default 4. */
  concurrency?: number;
  /** Clock (ms since the epoch), for tests. */
  now?: () => number;
  logger: Logger;
}

/** RepoBuilderOptions compiled once: absolute paths, defaults applied, values checked. */
export interface RepoBuilderConfig {
  incomingDir: string;
  rejectedDir: string;
  repoDir: string;
  stateDir: string;
  keep: number;
  graceMs: number;
  debounceMs: number;
  gpgKey: string | undefined;
  gpgHome: string | undefined;
  debArchitectures: string[];
  origin: string;
  xz: boolean;
  xzPreset: number;
  gzipLevel: number;
  fsync: boolean;
  maxFilesPerBatch: number;
  maxListingBytes: number;
  limits: ReaderLimits;
  chunkEntries: number;
  concurrency: number;
  now: () => number;
  logger: Logger;
}

export function compileRepoBuilderOptions(o: RepoBuilderOptions): RepoBuilderConfig {
  const bad = (why: string): never => {
    throw new BuilderError('BUILDER_ERR_CONFIG', `repo-builder: ${why}`);
  };
  const int = (v: number | undefined, def: number, min: number, max: number, name: string): number => {
    const n = v ?? def;
    if (!Number.isInteger(n) || n < min || n > max) bad(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
  if (!o.incomingDir || !o.repoDir) bad('incoming and repo directories are required');
  const incomingDir = resolve(o.incomingDir);
  const repoDir = resolve(o.repoDir);
  const inside = (a: string, b: string): boolean => a === b || a.startsWith(b.endsWith(sep) ? b : b + sep);
  // The sweep after a crash walks the repository, and the watcher the incoming directory.
  if (inside(incomingDir, repoDir) || inside(repoDir, incomingDir)) bad('incoming and repo must be separate directories, neither inside the other');
  const stateDir = o.stateDir === undefined ? join(repoDir, '.repo-builder') : resolve(o.stateDir);
  if (o.gpgHome !== undefined && !isAbsolute(resolve(o.gpgHome))) bad('gpg home must be a path');
  const debArchitectures = [...new Set(o.debArchitectures ?? ['amd64'])].sort();
  for (const a of debArchitectures) checkName('arch', a);
  const origin = o.origin ?? 'Builder';
  if (!/^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$/.test(origin)) bad('origin must be a short single-line name');
  return {
    incomingDir,
    rejectedDir: join(incomingDir, 'rejected'),
    repoDir,
    stateDir,
    keep: int(o.keep, 1, 1, 1000, 'keep'),
    graceMs: int(o.graceMs, 10 * 60 * 1000, 0, 7 * 24 * 3600 * 1000, 'graceMs'),
    debounceMs: int(o.debounceMs, 300, 0, 60_000, 'debounceMs'),
    gpgKey: o.gpgKey === '' ? undefined : o.gpgKey,
    gpgHome: o.gpgHome === undefined ? undefined : resolve(o.gpgHome),
    debArchitectures,
    origin,
    xz: o.xz ?? true,
    xzPreset: int(o.xzPreset, 6, 0, 9, 'xzPreset'),
    gzipLevel: int(o.gzipLevel, 6, 1, 9, 'gzipLevel'),
    fsync: o.fsync ?? true,
    maxFilesPerBatch: int(o.maxFilesPerBatch, 10000, 1, 1_000_000, 'maxFilesPerBatch'),
    maxListingBytes: int(o.maxListingBytes, 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024, 'maxListingBytes'),
    limits: { ...DEFAULT_READER_LIMITS, ...(o.limits ?? {}) },
    chunkEntries: int(o.chunkEntries, 128, 1, 1_000_000, 'chunkEntries'),
    concurrency: int(o.concurrency, 4, 1, 64, 'concurrency'),
    now: o.now ?? Date.now,
    logger: o.logger,
  };
}
