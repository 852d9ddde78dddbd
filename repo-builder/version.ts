import { BuilderError } from '../protocol/errors.js';

/**
 * Version order exactly as dpkg (lib/dpkg/version.c, deb-version(7)) and rpm
 * (rpmio/rpmvercmp.cc, lib/rpmver.c) define it. Both return -1, 0 or 1.
 */

/** A parsed Debian version: `[epoch:]upstream[-revision]`. */
export interface DebVersion {
  epoch: number;
  upstream: string;
  revision: string;
}

const isDigit = (c: number): boolean => c >= 48 && c <= 57;
const isAlpha = (c: number): boolean => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);

/**
 * Parses a Debian version as dpkg's parseversion does: the epoch is before the first `:`, the
 * revision after the last `-`. Throws BUILDER_ERR_INVALID_INPUT on what dpkg rejects (empty,
 * embedded space, bad epoch, empty upstream) and on characters outside deb-version(7).
 */
export function parseDebVersion(input: string): DebVersion {
  const bad = (why: string): never => {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `invalid Debian version ${JSON.stringify(input).slice(0, 80)}: ${why}`);
  };
  const s = input.trim();
  if (s === '') bad('empty');
  if (/\s/.test(s)) bad('embedded space');
  let epoch = 0;
  let rest = s;
  const colon = s.indexOf(':');
  if (colon >= 0) {
    const e = s.slice(0, colon);
    if (!/^[0-9]+$/.test(e)) bad('epoch is not a number');
    epoch = Number(e);
    if (!Number.isSafeInteger(epoch) || epoch > 2147483647) bad('epoch too large');
    rest = s.slice(colon + 1);
  }
  let upstream = rest;
  let revision = '';
  const dash = rest.lastIndexOf('-');
  if (dash >= 0) {
    upstream = rest.slice(0, dash);
    revision = rest.slice(dash + 1);
    if (revision === '') bad('empty revision');
  }
  if (upstream === '') bad('empty upstream version');
  if (!/^[0-9]/.test(upstream)) bad('upstream version must start with a digit');
  if (!/^[A-Za-z0-9.+~:-]+$/.test(upstream)) bad('invalid character in upstream version');
  if (!/^[A-Za-z0-9.+~]*$/.test(revision)) bad('invalid character in revision');
  return { epoch, upstream, revision };
}

/** dpkg's order(): `~` first, then end/digits, then letters, then everything else. */
function debOrder(c: number): number {
  if (Number.isNaN(c) || isDigit(c)) return 0;
  if (isAlpha(c)) return c;
  if (c === 126) return -1; // '~'
  return c + 256;
}

/** dpkg's verrevcmp on one part (upstream or revision). */
export function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const ac = debOrder(a.charCodeAt(i));
      const bc = debOrder(b.charCodeAt(j));
      if (ac !== bc) return Math.sign(ac - bc);
      i++;
      j++;
    }
    while (a.charCodeAt(i) === 48) i++;
    while (b.charCodeAt(j) === 48) j++;
    while (isDigit(a.charCodeAt(i)) && isDigit(b.charCodeAt(j))) {
      if (firstDiff === 0) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (isDigit(a.charCodeAt(i))) return 1;
    if (isDigit(b.charCodeAt(j))) return -1;
    if (firstDiff !== 0) return Math.sign(firstDiff);
  }
  return 0;
}

/** Compares two parsed Debian versions: epoch, then upstream, then revision. */
export function compareDebParsed(a: DebVersion, b: DebVersion): number {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch ? 1 : -1;
  const u = verrevcmp(a.upstream, b.upstream);
  if (u !== 0) return u;
  return verrevcmp(a.revision, b.revision);
}

/** `dpkg --compare-versions a lt|eq|gt b` as -1/0/1. Throws on versions dpkg rejects. */
export function compareDebVersions(a: string, b: string): number {
  return compareDebParsed(parseDebVersion(a), parseDebVersion(b));
}

const isAlnum = (c: number): boolean => isDigit(c) || isAlpha(c);

/** rpm's rpmvercmp on one version or release string (ASCII classes; other bytes separate). */
export function rpmvercmp(a: string, b: string): number {
  if (a === b) return 0;
  let i = 0;
  let j = 0;
  const at = (s: string, k: number): number => (k < s.length ? s.charCodeAt(k) : NaN);
  while (i < a.length || j < b.length) {
    while (i < a.length && !isAlnum(at(a, i)) && at(a, i) !== 126 && at(a, i) !== 94) i++;
    while (j < b.length && !isAlnum(at(b, j)) && at(b, j) !== 126 && at(b, j) !== 94) j++;
    // '~' sorts before everything, even the end of the string.
    if (at(a, i) === 126 || at(b, j) === 126) {
      if (at(a, i) !== 126) return 1;
      if (at(b, j) !== 126) return -1;
      i++;
      j++;
      continue;
    }
    // '^' sorts after the end of the string but before any other segment.
    if (at(a, i) === 94 || at(b, j) === 94) {
      if (i >= a.length) return -1;
      if (j >= b.length) return 1;
      if (at(a, i) !== 94) return 1;
      if (at(b, j) !== 94) return -1;
      i++;
      j++;
      continue;
    }
    if (!(i < a.length && j < b.length)) break;
    const numeric = isDigit(at(a, i));
    const cls = numeric ? isDigit : isAlpha;
    let i2 = i;
    let j2 = j;
    while (i2 < a.length && cls(at(a, i2))) i2++;
    while (j2 < b.length && cls(at(b, j2))) j2++;
    let sa = a.slice(i, i2);
    let sb = b.slice(j, j2);
    // Segments of different classes: numeric is newer than alpha.
    if (sb.length === 0) return numeric ? 1 : -1;
    if (numeric) {
      sa = sa.replace(/^0+/, '');
      sb = sb.replace(/^0+/, '');
      if (sa.length !== sb.length) return sa.length > sb.length ? 1 : -1;
    }
    if (sa !== sb) return sa > sb ? 1 : -1;
    i = i2;
    j = j2;
  }
  if (i >= a.length && j >= b.length) return 0;
  return i >= a.length ? -1 : 1;
}

/** An rpm EVR; a missing epoch counts as 0, a missing release is lower than any release. */
export interface RpmEvr {
  epoch: number;
  version: string;
  release: string | undefined;
}

/** rpmverCmp: epochs numerically, then version and release with rpmvercmp. */
export function compareRpmEvr(a: RpmEvr, b: RpmEvr): number {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch ? 1 : -1;
  const v = rpmvercmp(a.version, b.version);
  if (v !== 0) return v;
  if (a.release === undefined || b.release === undefined) {
    if (a.release === b.release) return 0;
    return a.release === undefined ? -1 : 1;
  }
  return rpmvercmp(a.release, b.release);
}

/** Parses `[E:]V[-R]` (the string form used in logs and tests). */
export function parseRpmEvr(s: string): RpmEvr {
  let epoch = 0;
  let rest = s;
  const colon = s.indexOf(':');
  if (colon >= 0) {
    const e = s.slice(0, colon);
    if (!/^[0-9]+$/.test(e)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `invalid rpm epoch in ${JSON.stringify(s).slice(0, 80)}`);
    epoch = Number(e);
    rest = s.slice(colon + 1);
  }
  const dash = rest.lastIndexOf('-');
  if (dash < 0) return { epoch, version: rest, release: undefined };
  return { epoch, version: rest.slice(0, dash), release: rest.slice(dash + 1) };
}

/** Formats an rpm EVR as `E:V-R` with the epoch always shown (as dnf's `%{epoch}:` does). */
export function formatRpmEvr(e: RpmEvr): string {
  return `${e.epoch}:${e.version}${e.release === undefined ? '' : `-${e.release}`}`;
}
