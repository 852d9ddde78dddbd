import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

/**
 * A .deb writer for tests and benchmarks: the real format (ar with debian-binary,
 * control.tar.gz, data.tar.gz; deb(5)), made in-process because one dpkg-deb per package is
 * too slow for hundreds of packages. dpkg-deb --info/--contents read what it writes (a test
 * checks that).
 */
export interface SynthDeb {
  name: string;
  version: string;
  arch: string;
  /** Extra control lines, e.g. "Depends: libc6". */
  extra?: string[];
  description?: string;
}

async function tarGz(files: { name: string; data: Buffer; mode?: number; type?: 'file' | 'directory' }[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const f of files) {
    if (f.type === 'directory') p.entry({ name: f.name, type: 'directory', mode: 0o755, mtime: new Date(1700000000000), uname: 'root', gname: 'root' });
    else p.entry({ name: f.name, size: f.data.length, mode: f.mode ?? 0o644, mtime: new Date(1700000000000), uname: 'root', gname: 'root' }, f.data);
  }
  p.finalize();
  await done;
  return gzipSync(Buffer.concat(chunks), { level: 1 });
}

function arMember(name: string, data: Buffer): Buffer {
  const h = Buffer.alloc(60, 0x20);
  h.write(name, 0, 'latin1');
  h.write('1700000000', 16, 'latin1');
  h.write('0', 28, 'latin1');
  h.write('0', 34, 'latin1');
  h.write('100644', 40, 'latin1');
  h.write(String(data.length), 48, 'latin1');
  h.write('`\n', 58, 'latin1');
  return Buffer.concat([h, data, data.length % 2 === 1 ? Buffer.from('\n') : Buffer.alloc(0)]);
}

export function controlText(d: SynthDeb): string {
  const desc = d.description ?? `synthetic package ${d.name}\n A package made by the test suite.\n .\n Version ${d.version}.`;
  return [
    `Package: ${d.name}`,
    `Version: ${d.version}`,
    `Architecture: ${d.arch}`,
    'Maintainer: Builder Tests <tests@builder.invalid>',
    'Installed-Size: 1',
    'Section: misc',
    'Priority: optional',
    ...(d.extra ?? []),
    `Description: ${desc}`,
    '',
  ].join('\n');
}

/** Builds a .deb in memory. */
export async function makeDeb(d: SynthDeb): Promise<Buffer> {
  const control = await tarGz([
    { name: './', data: Buffer.alloc(0), type: 'directory' },
    { name: './control', data: Buffer.from(controlText(d)) },
  ]);
  const readme = Buffer.from(`${d.name} ${d.version}\n`);
  const data = await tarGz([
    { name: './', data: Buffer.alloc(0), type: 'directory' },
    { name: './usr/', data: Buffer.alloc(0), type: 'directory' },
    { name: './usr/share/', data: Buffer.alloc(0), type: 'directory' },
    { name: `./usr/share/${d.name}/`, data: Buffer.alloc(0), type: 'directory' },
    { name: `./usr/share/${d.name}/README`, data: readme },
  ]);
  return Buffer.concat([Buffer.from('!<arch>\n'), arMember('debian-binary', Buffer.from('2.0\n')), arMember('control.tar.gz', control), arMember('data.tar.gz', data)]);
}

/** The conventional file name (epoch dropped). */
export function debFileName(d: SynthDeb): string {
  const v = d.version.includes(':') ? d.version.slice(d.version.indexOf(':') + 1) : d.version;
  return `${d.name}_${v}_${d.arch}.deb`;
}
