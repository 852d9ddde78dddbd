import { extract } from 'tar-stream';
import { BuilderError } from '../protocol/errors.js';
import { openByteSource } from './byte-source.js';
import { decompressBounded, type Codec } from './decompress.js';
import { parseDeb822Stanza, fieldValue, type Deb822Field } from './deb822.js';
import { DEFAULT_READER_LIMITS, type ReaderLimits } from './limits.js';
import { parseDebVersion } from './version.js';

/** What the repository needs from a .deb: its identity and its control stanza. */
export interface DebInfo {
  name: string;
  version: string;
  arch: string;
  /** The control file's fields, in order, without fields the index computes. */
  control: Deb822Field[];
}

/** Debian policy 5.6.1 / 5.6.8: package names and architecture names. */
export const DEB_NAME_RE = /^[a-z0-9][a-z0-9+.-]{0,127}$/;
export const DEB_ARCH_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;

/** Fields the Packages index computes from the file; a package must not supply them. */
const COMPUTED = new Set(['filename', 'size', 'md5sum', 'sha1', 'sha256', 'sha512', 'description-md5']);

const invalid = (why: string): BuilderError => new BuilderError('BUILDER_ERR_INVALID_INPUT', `not a valid .deb: ${why}`);

interface ArMember {
  name: string;
  offset: number;
  size: number;
}

/** Reads the ar member header at `pos` (60 bytes, deb(5)). */
function parseArHeader(h: Buffer, pos: number): ArMember {
  if (h[58] !== 0x60 || h[59] !== 0x0a) throw invalid('bad ar member header');
  const name = h.toString('latin1', 0, 16).trimEnd().replace(/\/$/, '');
  const sizeText = h.toString('latin1', 48, 58).trim();
  if (!/^[0-9]+$/.test(sizeText)) throw invalid('bad ar member size');
  return { name, offset: pos + 60, size: Number(sizeText) };
}

/**
 * Finds `./control` in a control tarball by walking plain ustar/GNU headers synchronously: the
 * usual control.tar is a handful of short-named regular files, and a stream parser per package
 * costs more than the rest of reading it. Anything else (pax or GNU long-name records, a
 * checksum that does not add up) returns undefined, and tar-stream reads the archive instead.
 */
export function controlFromTarFast(tar: Buffer, max: number): string | undefined {
  for (let pos = 0; pos + 512 <= tar.length; ) {
    const h = tar.subarray(pos, pos + 512);
    if (h.every((b) => b === 0)) return undefined;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    const stored = parseInt(h.toString('latin1', 148, 156).replace(/\0.*$/s, '').trim(), 8);
    if (stored !== sum) return undefined;
    const type = String.fromCharCode(h[156]!);
    if (type !== '0' && type !== '\0' && type !== '5' && type !== '2') return undefined; // pax, long names...
    const magic = h.toString('latin1', 257, 263);
    const prefix = magic === 'ustar\0' ? h.toString('latin1', 345, 500).replace(/\0.*$/s, '') : '';
    const rawName = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    const name = (prefix === '' ? rawName : `${prefix}/${rawName}`).replace(/^\.\//, '');
    const sizeField = h.toString('latin1', 124, 136).replace(/\0.*$/s, '').trim();
    if (!/^[0-7]*$/.test(sizeField)) return undefined;
    const size = sizeField === '' ? 0 : parseInt(sizeField, 8);
    if (name === 'control') {
      if (type !== '0' && type !== '\0') throw invalid('control is not a regular file');
      if (size > max) throw invalid('control file too large');
      if (pos + 512 + size > tar.length) throw invalid('control tarball: truncated');
      return tar.toString('utf8', pos + 512, pos + 512 + size);
    }
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return undefined;
}

/** Extracts `./control` from a control tarball. */
async function controlFromTar(tar: Buffer, max: number): Promise<string> {
  const fast = controlFromTarFast(tar, max);
  if (fast !== undefined) return fast;
  const ex = extract();
  let control: string | undefined;
  let failure: unknown;
  const done = (async () => {
    for await (const entry of ex) {
      const h = entry.header;
      const n = h.name.replace(/^\.\//, '');
      if (n === 'control' && control === undefined) {
        if (h.type !== 'file') throw invalid('control is not a regular file');
        if ((h.size ?? 0) > max) throw invalid('control file too large');
        const parts: Buffer[] = [];
        for await (const c of entry) parts.push(c as Buffer);
        control = Buffer.concat(parts).toString('utf8');
      } else {
        entry.resume();
      }
    }
  })().catch((e: unknown) => {
    failure = e;
  });
  ex.end(tar);
  await done;
  if (failure !== undefined) {
    if (failure instanceof BuilderError) throw failure;
    throw invalid(`control tarball: ${failure instanceof Error ? failure.message : 'unreadable'}`);
  }
  if (control === undefined) throw invalid('no control file in control.tar');
  return control;
}

/**
 * Reads a .deb's identity and control stanza (from a path, or from its bytes already in memory).
 * Only the ar headers and the control member are read, never data.tar, so a large package costs
 * what a small one does.
 */
export async function readDeb(source: string | Buffer, limits: ReaderLimits = DEFAULT_READER_LIMITS): Promise<DebInfo> {
  const src = await openByteSource(source, '.deb');
  try {
    const fileSize = src.size;
    if (fileSize < 8 || (await src.read(0, 8)).toString('latin1') !== '!<arch>\n') throw invalid('no ar magic');
    let pos = 8;
    const next = async (): Promise<ArMember> => {
      if (pos + 60 > fileSize) throw invalid('truncated');
      const m = parseArHeader(await src.read(pos, 60), pos);
      if (m.offset + m.size > fileSize) throw invalid(`truncated (member ${m.name})`);
      pos = m.offset + m.size + (m.size % 2);
      return m;
    };
    const first = await next();
    if (first.name !== 'debian-binary') throw invalid('first member is not debian-binary');
    const dbin = (await src.read(first.offset, Math.min(first.size, 16))).toString('latin1');
    if (!/^2\.[0-9]+\n/.test(dbin)) throw invalid(`unsupported format version ${JSON.stringify(dbin.trim())}`);
    let member = await next();
    while (member.name.startsWith('_')) member = await next();
    const m = /^control\.tar(?:\.(gz|xz|zst))?$/.exec(member.name);
    if (m === null) throw invalid(`expected control.tar, found ${JSON.stringify(member.name)}`);
    if (member.size > limits.maxControlBytes) throw invalid(`control member larger than ${limits.maxControlBytes} bytes`);
    const data = await next();
    if (!/^data\.tar(\.(gz|xz|zst|bz2|lzma))?$/.test(data.name)) throw invalid(`expected data.tar, found ${JSON.stringify(data.name)}`);
    const codec: Codec = (m[1] as Codec | undefined) ?? 'none';
    const raw = await src.read(member.offset, member.size);
    const tar = decompressBounded(codec, raw, limits.maxControlUncompressedBytes);
    const text = await controlFromTar(tar, limits.maxControlUncompressedBytes);
    return debInfoFromControl(text);
  } finally {
    await src.close();
  }
}

/** Validates a control file's identity fields and drops the computed ones. */
export function debInfoFromControl(text: string): DebInfo {
  const fields = parseDeb822Stanza(text);
  const name = fieldValue(fields, 'Package');
  const version = fieldValue(fields, 'Version');
  const arch = fieldValue(fields, 'Architecture');
  if (name === undefined || !DEB_NAME_RE.test(name)) throw invalid(`bad or missing Package field ${JSON.stringify(name ?? null)}`);
  if (version === undefined) throw invalid('missing Version field');
  parseDebVersion(version);
  if (arch === undefined || !DEB_ARCH_RE.test(arch)) throw invalid(`bad or missing Architecture field ${JSON.stringify(arch ?? null)}`);
  const control = fields.filter((f) => !COMPUTED.has(f.name.toLowerCase()));
  return { name, version, arch, control };
}
