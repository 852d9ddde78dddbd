import { BuilderError } from '../protocol/errors.js';

/** One deb822 field: its name as written and its value (continuation lines kept verbatim). */
export interface Deb822Field {
  name: string;
  value: string;
}

/**
 * Parses exactly one deb822 stanza (a .deb control file). Continuation lines (starting with a
 * space or tab) stay part of the value verbatim. A second stanza, a whitespace-only line inside,
 * a line that is neither a field nor a continuation, or a repeated field is refused: any of them
 * would let a package inject fields or stanzas into the Packages index we write.
 */
export function parseDeb822Stanza(text: string): Deb822Field[] {
  const bad = (why: string): never => {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `invalid control file: ${why}`);
  };
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop();
  while (lines.length > 0 && lines[0]!.trim() === '') lines.shift();
  const fields: Deb822Field[] = [];
  const seen = new Set<string>();
  for (const line of lines) {
    if (line.includes('\0') || line.includes('\r')) bad('control character');
    if (line.trim() === '') bad('more than one stanza or a blank line inside the stanza');
    if (line.startsWith('#')) continue;
    if (line.startsWith(' ') || line.startsWith('\t')) {
      const last = fields[fields.length - 1];
      if (last === undefined) bad('continuation line before the first field');
      else last.value += `\n${line}`;
      continue;
    }
    const m = /^([!-9;-~][!-9;-~]*):(.*)$/.exec(line);
    if (m === null) bad(`not a field: ${JSON.stringify(line.slice(0, 60))}`);
    const name = m![1]!;
    const key = name.toLowerCase();
    if (seen.has(key)) bad(`repeated field ${name}`);
    seen.add(key);
    fields.push({ name, value: m![2]!.trim() });
  }
  if (fields.length === 0) bad('empty');
  return fields;
}

/** The value of `name` (case-insensitive), first line only trimmed; undefined when absent. */
export function fieldValue(fields: Deb822Field[], name: string): string | undefined {
  const key = name.toLowerCase();
  return fields.find((f) => f.name.toLowerCase() === key)?.value;
}

/** Renders fields as a stanza (no trailing blank line). */
export function renderDeb822(fields: Deb822Field[]): string {
  let out = '';
  for (const f of fields) out += `${f.name}:${f.value === '' || f.value.startsWith('\n') ? '' : ' '}${f.value}\n`;
  return out;
}
