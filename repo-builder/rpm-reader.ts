import { BuilderError } from '../protocol/errors.js';
import { openByteSource, type ByteSource } from './byte-source.js';
import { DEFAULT_READER_LIMITS, type ReaderLimits } from './limits.js';

/** One dependency entry as primary.xml writes it. */
export interface RpmDep {
  name: string;
  flags?: 'LT' | 'GT' | 'EQ' | 'LE' | 'GE';
  epoch?: string;
  ver?: string;
  rel?: string;
  pre?: boolean;
}

export interface RpmFile {
  path: string;
  type: 'file' | 'dir' | 'ghost';
}

export interface RpmChangelog {
  author: string;
  date: number;
  text: string;
}

/** What primary, filelists and other need from an .rpm header. */
export interface RpmInfo {
  name: string;
  epoch: number;
  version: string;
  release: string;
  /** The header's arch, or `src` for a source package. */
  arch: string;
  summary: string;
  description: string;
  packager: string;
  url: string;
  license: string;
  vendor: string;
  group: string;
  buildhost: string;
  sourcerpm: string;
  buildTime: number;
  installedSize: number;
  archiveSize: number;
  headerStart: number;
  headerEnd: number;
  provides: RpmDep[];
  requires: RpmDep[];
  conflicts: RpmDep[];
  obsoletes: RpmDep[];
  recommends: RpmDep[];
  suggests: RpmDep[];
  supplements: RpmDep[];
  enhances: RpmDep[];
  files: RpmFile[];
  changelogs: RpmChangelog[];
}

export const RPM_NAME_RE = /^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}$/;
export const RPM_VERSION_RE = /^[A-Za-z0-9._+~^]{1,128}$/;
export const RPM_ARCH_RE = /^[A-Za-z0-9_]{1,32}$/;

const invalid = (why: string): BuilderError => new BuilderError('BUILDER_ERR_INVALID_INPUT', `not a valid .rpm: ${why}`);

type Value = string | string[] | number[] | Buffer;

/** A parsed header: tag -> raw typed value. */
class RpmHeader {
  constructor(private readonly tags: Map<number, Value>) {}

  str(tag: number): string | undefined {
    const v = this.tags.get(tag);
    if (typeof v === 'string') return v;
    if (Array.isArray(v) && typeof v[0] === 'string') return v[0];
    return undefined;
  }

  strs(tag: number): string[] {
    const v = this.tags.get(tag);
    if (typeof v === 'string') return [v];
    if (Array.isArray(v) && (v.length === 0 || typeof v[0] === 'string')) return v as string[];
    return [];
  }

  nums(tag: number): number[] {
    const v = this.tags.get(tag);
    if (Array.isArray(v) && (v.length === 0 || typeof v[0] === 'number')) return v as number[];
    return [];
  }

  num(tag: number): number | undefined {
    return this.nums(tag)[0];
  }
}

/** Parses a header structure at `buf[0..]`; returns it and its total length in bytes. */
function parseHeader(buf: Buffer, limits: ReaderLimits): { header: RpmHeader; length: number } {
  if (buf.length < 16 || buf.readUInt32BE(0) !== 0x8eade801) throw invalid('bad header magic');
  const nindex = buf.readUInt32BE(8);
  const hsize = buf.readUInt32BE(12);
  if (nindex > limits.maxRpmHeaderEntries) throw invalid(`header has ${nindex} entries (limit ${limits.maxRpmHeaderEntries})`);
  if (hsize > limits.maxRpmHeaderBytes) throw invalid(`header data of ${hsize} bytes (limit ${limits.maxRpmHeaderBytes})`);
  const length = 16 + 16 * nindex + hsize;
  if (buf.length < length) throw invalid('truncated header');
  const store = buf.subarray(16 + 16 * nindex, length);
  const tags = new Map<number, Value>();
  const cstr = (at: number): [string, number] => {
    const end = store.indexOf(0, at);
    if (end < 0) throw invalid('unterminated string in header');
    return [store.toString('utf8', at, end), end + 1];
  };
  for (let k = 0; k < nindex; k++) {
    const e = 16 + 16 * k;
    const tag = buf.readInt32BE(e);
    const type = buf.readUInt32BE(e + 4);
    const off = buf.readInt32BE(e + 8);
    const count = buf.readUInt32BE(e + 12);
    if (off < 0 || off > hsize) throw invalid('header entry offset out of range');
    if (count > hsize + 1) throw invalid('header entry count out of range');
    const need = (n: number): void => {
      if (off + n > hsize) throw invalid('header entry data out of range');
    };
    switch (type) {
      case 6: {
        tags.set(tag, cstr(off)[0]);
        break;
      }
      case 8:
      case 9: {
        const out: string[] = [];
        let at = off;
        for (let c = 0; c < count; c++) {
          const [s, nx] = cstr(at);
          out.push(s);
          at = nx;
        }
        tags.set(tag, out);
        break;
      }
      case 1:
      case 2: {
        need(count);
        tags.set(tag, Array.from(store.subarray(off, off + count)));
        break;
      }
      case 3: {
        need(2 * count);
        const out: number[] = [];
        for (let c = 0; c < count; c++) out.push(store.readUInt16BE(off + 2 * c));
        tags.set(tag, out);
        break;
      }
      case 4: {
        need(4 * count);
        const out: number[] = [];
        for (let c = 0; c < count; c++) out.push(store.readUInt32BE(off + 4 * c));
        tags.set(tag, out);
        break;
      }
      case 5: {
        need(8 * count);
        const out: number[] = [];
        for (let c = 0; c < count; c++) out.push(Number(store.readBigUInt64BE(off + 8 * c)));
        tags.set(tag, out);
        break;
      }
      case 7: {
        need(count);
        tags.set(tag, store.subarray(off, off + count));
        break;
      }
      case 0:
        break;
      default:
        throw invalid(`unknown header entry type ${type}`);
    }
  }
  return { header: new RpmHeader(tags), length };
}

/** Reads a whole header structure at `pos` from the file. */
async function readHeaderAt(src: ByteSource, pos: number, fileSize: number, limits: ReaderLimits): Promise<{ header: RpmHeader; length: number }> {
  if (pos + 16 > fileSize) throw invalid('truncated');
  const intro = await src.read(pos, 16);
  if (intro.readUInt32BE(0) !== 0x8eade801) throw invalid('bad header magic');
  const nindex = intro.readUInt32BE(8);
  const hsize = intro.readUInt32BE(12);
  if (nindex > limits.maxRpmHeaderEntries) throw invalid(`header has ${nindex} entries (limit ${limits.maxRpmHeaderEntries})`);
  if (hsize > limits.maxRpmHeaderBytes) throw invalid(`header data of ${hsize} bytes (limit ${limits.maxRpmHeaderBytes})`);
  const length = 16 + 16 * nindex + hsize;
  if (pos + length > fileSize) throw invalid('truncated');
  return parseHeader(await src.read(pos, length), limits);
}

const SENSE: Record<number, RpmDep['flags']> = { 2: 'LT', 4: 'GT', 8: 'EQ', 10: 'LE', 12: 'GE' };
const PRE_BITS = 64 | 512 | 1024; // RPMSENSE_PREREQ | SCRIPT_PRE | SCRIPT_POST

function deps(h: RpmHeader, nameTag: number, flagsTag: number, versionTag: number, withPre: boolean): RpmDep[] {
  const names = h.strs(nameTag);
  const flags = h.nums(flagsTag);
  const versions = h.strs(versionTag);
  const out: RpmDep[] = [];
  const seen = new Set<string>();
  for (let k = 0; k < names.length; k++) {
    const name = names[k]!;
    const f = flags[k] ?? 0;
    const d: RpmDep = { name };
    const sense = SENSE[f & 0x0e];
    const v = versions[k] ?? '';
    if (sense !== undefined && v !== '') {
      d.flags = sense;
      let rest = v;
      const colon = rest.indexOf(':');
      d.epoch = '0';
      if (colon >= 0 && /^[0-9]+$/.test(rest.slice(0, colon))) {
        d.epoch = rest.slice(0, colon);
        rest = rest.slice(colon + 1);
      }
      const dash = rest.lastIndexOf('-');
      if (dash >= 0) {
        d.ver = rest.slice(0, dash);
        d.rel = rest.slice(dash + 1);
      } else {
        d.ver = rest;
      }
    }
    if (withPre && (f & PRE_BITS) !== 0) d.pre = true;
    const key = JSON.stringify(d);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return out;
}

/** Builds RpmInfo from a parsed main header. */
function infoFromHeader(h: RpmHeader, headerStart: number, headerEnd: number, sigPayloadSize: number | undefined): RpmInfo {
  const name = h.str(1000);
  const version = h.str(1001);
  const release = h.str(1002);
  const headerArch = h.str(1022);
  if (name === undefined || !RPM_NAME_RE.test(name)) throw invalid(`bad or missing name ${JSON.stringify(name ?? null)}`);
  if (version === undefined || !RPM_VERSION_RE.test(version)) throw invalid(`bad or missing version ${JSON.stringify(version ?? null)}`);
  if (release === undefined || !RPM_VERSION_RE.test(release)) throw invalid(`bad or missing release ${JSON.stringify(release ?? null)}`);
  if (headerArch === undefined || !RPM_ARCH_RE.test(headerArch)) throw invalid(`bad or missing arch ${JSON.stringify(headerArch ?? null)}`);
  const sourcerpm = h.str(1044);
  // A source package has no SOURCERPM; repositories list it with arch "src".
  const isSource = sourcerpm === undefined || (h.num(1106) ?? 0) !== 0;
  const arch = isSource ? 'src' : headerArch;

  const files: RpmFile[] = [];
  const basenames = h.strs(1117);
  const dirnames = h.strs(1118);
  const dirindexes = h.nums(1116);
  const modes = h.nums(1030);
  const fflags = h.nums(1037);
  const paths = basenames.length > 0 ? basenames.map((b, k) => `${dirnames[dirindexes[k] ?? -1] ?? ''}${b}`) : h.strs(1027);
  paths.forEach((p, k) => {
    const mode = modes[k] ?? 0;
    const type: RpmFile['type'] = ((fflags[k] ?? 0) & 64) !== 0 ? 'ghost' : (mode & 0xf000) === 0x4000 ? 'dir' : 'file';
    files.push({ path: p, type });
  });
  const fileSet = new Set(paths);

  const provides = deps(h, 1047, 1112, 1113, false);
  const requires = deps(h, 1049, 1048, 1050, true).filter((d) => !d.name.startsWith('rpmlib(') && !fileSet.has(d.name));

  const ctimes = h.nums(1080);
  const cnames = h.strs(1081);
  const ctexts = h.strs(1082);
  const changelogs: RpmChangelog[] = [];
  // createrepo_c keeps the newest 10 entries (the header lists newest first).
  for (let k = 0; k < Math.min(10, ctimes.length); k++) {
    changelogs.push({ date: ctimes[k]!, author: cnames[k] ?? '', text: ctexts[k] ?? '' });
  }
  changelogs.reverse();

  return {
    name,
    epoch: h.num(1003) ?? 0,
    version,
    release,
    arch,
    summary: h.str(1004) ?? '',
    description: h.str(1005) ?? '',
    packager: h.str(1015) ?? '',
    url: h.str(1020) ?? '',
    license: h.str(1014) ?? '',
    vendor: h.str(1011) ?? '',
    group: h.str(1016) ?? '',
    buildhost: h.str(1007) ?? '',
    sourcerpm: sourcerpm ?? '',
    buildTime: h.num(1006) ?? 0,
    installedSize: h.num(5009) ?? h.num(1009) ?? 0,
    archiveSize: h.num(1046) ?? sigPayloadSize ?? 0,
    headerStart,
    headerEnd,
    provides,
    requires,
    conflicts: deps(h, 1054, 1053, 1055, false),
    obsoletes: deps(h, 1090, 1114, 1115, false),
    recommends: deps(h, 5046, 5048, 5047, false),
    suggests: deps(h, 5049, 5051, 5050, false),
    supplements: deps(h, 5052, 5054, 5053, false),
    enhances: deps(h, 5055, 5057, 5056, false),
    files,
    changelogs,
  };
}

/**
 * Reads an .rpm's lead, signature header and main header (never the payload). The payload is
 * still checked to exist: a file cut short inside it is refused as truncated, because the
 * signature header records the header+payload size.
 */
export async function readRpm(source: string | Buffer, limits: ReaderLimits = DEFAULT_READER_LIMITS): Promise<RpmInfo> {
  const src = await openByteSource(source, '.rpm');
  try {
    const fileSize = src.size;
    if (fileSize < 96 + 16) throw invalid('truncated');
    const lead = await src.read(0, 96);
    if (lead.readUInt32BE(0) !== 0xedabeedb) throw invalid('no rpm lead magic');
    if (lead[4] !== 3 && lead[4] !== 4) throw invalid(`unsupported rpm format version ${lead[4]}`);
    const sig = await readHeaderAt(src, 96, fileSize, limits);
    const headerStart = 96 + sig.length + ((8 - (sig.length % 8)) % 8);
    const main = await readHeaderAt(src, headerStart, fileSize, limits);
    const headerEnd = headerStart + main.length;
    // RPMSIGTAG_SIZE (1000) / LONGSIZE (270): header + payload; catches truncated payloads.
    const sigSize = sig.header.num(270) ?? sig.header.num(1000);
    if (sigSize !== undefined && headerStart + sigSize !== fileSize) {
      throw invalid(headerStart + sigSize > fileSize ? 'truncated payload' : 'trailing data after payload');
    }
    if (headerEnd >= fileSize) throw invalid('truncated (no payload)');
    return infoFromHeader(main.header, headerStart, headerEnd, sig.header.num(1007));
  } finally {
    await src.close();
  }
}
