import { isAbsolute, posix } from 'node:path';
import { BuilderError } from './errors.js';

/**
 * The one module that validates names which become paths or identifiers (slave names, job
 * names, channels, arches, artifact paths). Every storage boundary calls it: anything that is
 * not accepted here never reaches the file system.
 */

/** A simple name: letters, digits, `.`, `_`, `+`, `-`; starts with a letter or digit; 1..64 chars. */
export const SIMPLE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;

export type NameKind = 'slave' | 'job' | 'channel' | 'arch' | 'client' | 'image' | 'schedule';

/** Returns `name` if it is a valid simple name, else throws BUILDER_ERR_INVALID_NAME. */
export function checkName(kind: NameKind, name: string): string {
  // Security: ".." and names that are only dots would escape the directory they name.
  if (typeof name !== 'string' || !SIMPLE_NAME_RE.test(name) || /^\.+$/.test(name) || name.includes('..')) {
    throw new BuilderError('BUILDER_ERR_INVALID_NAME', `invalid ${kind} name ${JSON.stringify(String(name)).slice(0, 80)}`, {
      hint: 'use 1-64 letters, digits, ".", "_", "+" or "-", starting with a letter or digit',
    });
  }
  return name;
}

export function isValidName(name: string): boolean {
  return SIMPLE_NAME_RE.test(name) && !/^\.+$/.test(name) && !name.includes('..');
}

/** Maximum length of a relative artifact path and of one of its segments. */
export const MAX_RELATIVE_PATH = 1024;
const MAX_SEGMENT = 255;

/**
 * Checks a relative path that names a file inside some directory (artifact, input or listing
 * entry): forward slashes, no absolute path, no `.` or `..` segment, no NUL or backslash, no
 * empty segment. Returns the normalised path.
 */
export function checkRelativePath(p: string): string {
  const bad = (why: string): never => {
    throw new BuilderError('BUILDER_ERR_INVALID_NAME', `invalid path ${JSON.stringify(String(p)).slice(0, 120)}: ${why}`);
  };
  if (typeof p !== 'string' || p.length === 0) bad('empty');
  if (p.length > MAX_RELATIVE_PATH) bad('too long');
  // Security: a NUL truncates paths in C APIs; backslashes are separators on other systems.
  if (p.includes('\0') || p.includes('\\')) bad('forbidden character');
  if (isAbsolute(p) || p.startsWith('/')) bad('absolute');
  const segments = p.split('/');
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..') bad('empty, "." or ".." segment');
    if (s.length > MAX_SEGMENT) bad('segment too long');
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f]/.test(s)) bad('control character');
  }
  const norm = posix.normalize(p);
  if (norm !== p) bad('not normalised');
  return norm;
}
