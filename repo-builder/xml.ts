/**
 * XML text escaping for the repodata writers. Characters XML 1.0 cannot carry at all (C0 controls
 * other than tab, newline and carriage return, lone surrogates, U+FFFE/U+FFFF) are dropped, so a
 * package description can never make primary.xml unreadable.
 */
// eslint-disable-next-line no-control-regex
const INVALID = /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

export function xmlEscape(s: string): string {
  return s.replace(INVALID, '').replace(/[&<>"]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&quot;'));
}
