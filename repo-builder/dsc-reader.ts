import { readFile } from 'node:fs/promises';
import { BuilderError } from '../protocol/errors.js';
import { fieldValue, parseDeb822Stanza } from './deb822.js';
import { DEB_NAME_RE } from './deb-reader.js';
import { parseDebVersion } from './version.js';

/** A Debian source package description (.dsc): its name, version and the files it names. */
export interface DscInfo {
  source: string;
  version: string;
  /** Files of the source package, with sha256 when the .dsc gives Checksums-Sha256. */
  files: { name: string; size: number; sha256: string | undefined }[];
}

const invalid = (why: string): BuilderError => new BuilderError('BUILDER_ERR_INVALID_INPUT', `not a valid .dsc: ${why}`);

/** Removes an OpenPGP clearsign wrapper (RFC 4880 section 7), undoing dash-escaping. */
export function stripClearsign(text: string): string {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  if (lines[0]?.trim() !== '-----BEGIN PGP SIGNED MESSAGE-----') return text;
  let k = 1;
  while (k < lines.length && lines[k]!.trim() !== '') k++; // armor headers (Hash: ...)
  const body: string[] = [];
  for (k++; k < lines.length; k++) {
    const l = lines[k]!;
    if (l.trim() === '-----BEGIN PGP SIGNATURE-----') return body.join('\n');
    body.push(l.startsWith('- ') ? l.slice(2) : l);
  }
  throw invalid('clearsigned .dsc without a signature block');
}

/** Reads a .dsc (at most `maxBytes`). */
export async function readDsc(path: string, maxBytes: number): Promise<DscInfo> {
  const buf = await readFile(path);
  if (buf.length > maxBytes) throw invalid(`larger than ${maxBytes} bytes`);
  const fields = parseDeb822Stanza(stripClearsign(buf.toString('utf8')));
  const source = fieldValue(fields, 'Source');
  const version = fieldValue(fields, 'Version');
  if (source === undefined || !DEB_NAME_RE.test(source)) throw invalid(`bad or missing Source field ${JSON.stringify(source ?? null)}`);
  if (version === undefined) throw invalid('missing Version field');
  parseDebVersion(version);
  const list = (field: string): { a: string; size: number; name: string }[] =>
    (fieldValue(fields, field) ?? '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .map((l) => {
        const m = /^([0-9a-f]+) ([0-9]+) (\S+)$/.exec(l);
        if (m === null) throw invalid(`bad ${field} line ${JSON.stringify(l).slice(0, 80)}`);
        return { a: m[1]!, size: Number(m[2]), name: m[3]! };
      });
  const sha = list('Checksums-Sha256');
  const base = sha.length > 0 ? sha : list('Files');
  if (base.length === 0) throw invalid('lists no files');
  return {
    source,
    version,
    files: base.map((f) => ({ name: f.name, size: f.size, sha256: sha.length > 0 ? f.a : undefined })),
  };
}
