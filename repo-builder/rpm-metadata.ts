import type { RpmDep, RpmFile, RpmInfo } from './rpm-reader.js';
import { xmlEscape as x } from './xml.js';

/** The three per-package fragments of primary.xml, filelists.xml and other.xml. */
export interface RpmFragments {
  primary: string;
  filelists: string;
  other: string;
}

/** Where the file is and what it is, beside what its header says. */
export interface RpmFileFacts {
  sha256: string;
  size: number;
  mtime: number;
  href: string;
}

/** createrepo_c's cr_is_primary: the files primary.xml lists (the rest only in filelists). */
export function isPrimaryFile(p: string): boolean {
  return p.startsWith('/etc/') || p.includes('bin/') || p === '/usr/lib/sendmail';
}

function depList(tag: string, list: RpmDep[]): string {
  if (list.length === 0) return '';
  let out = `      <rpm:${tag}>\n`;
  for (const d of list) {
    out += `        <rpm:entry name="${x(d.name)}"`;
    if (d.flags !== undefined) {
      out += ` flags="${d.flags}" epoch="${x(d.epoch ?? '0')}" ver="${x(d.ver ?? '')}"`;
      if (d.rel !== undefined) out += ` rel="${x(d.rel)}"`;
    }
    if (d.pre === true) out += ' pre="1"';
    out += '/>\n';
  }
  return `${out}      </rpm:${tag}>\n`;
}

function fileLine(f: RpmFile, indent: string): string {
  const type = f.type === 'file' ? '' : ` type="${f.type}"`;
  return `${indent}<file${type}>${x(f.path)}</file>\n`;
}

/** Renders one package's entries as createrepo_c writes them (section 2 of the research notes). */
export function rpmFragments(info: RpmInfo, facts: RpmFileFacts): RpmFragments {
  const ver = `<version epoch="${info.epoch}" ver="${x(info.version)}" rel="${x(info.release)}"/>`;
  let primary =
    `<package type="rpm">\n` +
    `  <name>${x(info.name)}</name>\n` +
    `  <arch>${x(info.arch)}</arch>\n` +
    `  ${ver}\n` +
    `  <checksum type="sha256" pkgid="YES">${facts.sha256}</checksum>\n` +
    `  <summary>${x(info.summary)}</summary>\n` +
    `  <description>${x(info.description)}</description>\n` +
    `  <packager>${x(info.packager)}</packager>\n` +
    `  <url>${x(info.url)}</url>\n` +
    `  <time file="${facts.mtime}" build="${info.buildTime}"/>\n` +
    `  <size package="${facts.size}" installed="${info.installedSize}" archive="${info.archiveSize}"/>\n` +
    `  <location href="${x(facts.href)}"/>\n` +
    `  <format>\n` +
    `    <rpm:license>${x(info.license)}</rpm:license>\n` +
    `    <rpm:vendor>${x(info.vendor)}</rpm:vendor>\n` +
    `    <rpm:group>${x(info.group)}</rpm:group>\n` +
    `    <rpm:buildhost>${x(info.buildhost)}</rpm:buildhost>\n` +
    `    <rpm:sourcerpm>${x(info.sourcerpm)}</rpm:sourcerpm>\n` +
    `    <rpm:header-range start="${info.headerStart}" end="${info.headerEnd}"/>\n` +
    depList('provides', info.provides) +
    depList('requires', info.requires) +
    depList('conflicts', info.conflicts) +
    depList('obsoletes', info.obsoletes) +
    depList('recommends', info.recommends) +
    depList('suggests', info.suggests) +
    depList('supplements', info.supplements) +
    depList('enhances', info.enhances);
  for (const f of info.files) if (isPrimaryFile(f.path)) primary += fileLine(f, '    ');
  primary += `  </format>\n</package>\n`;

  const head = `<package pkgid="${facts.sha256}" name="${x(info.name)}" arch="${x(info.arch)}">\n  ${ver}\n`;
  let filelists = head;
  for (const f of info.files) filelists += fileLine(f, '  ');
  filelists += '</package>\n';
  let other = head;
  for (const c of info.changelogs) other += `  <changelog author="${x(c.author)}" date="${c.date}">${x(c.text)}</changelog>\n`;
  other += '</package>\n';
  return { primary, filelists, other };
}

export const PRIMARY_OPEN = (n: number): string =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="${n}">\n`;
export const PRIMARY_CLOSE = '</metadata>\n';
export const FILELISTS_OPEN = (n: number): string =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="${n}">\n`;
export const FILELISTS_CLOSE = '</filelists>\n';
export const OTHER_OPEN = (n: number): string =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="${n}">\n`;
export const OTHER_CLOSE = '</otherdata>\n';
