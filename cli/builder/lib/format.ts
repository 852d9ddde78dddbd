/** Plain-text tables and values for the builder commands' human output. */

/** Renders rows as left-aligned columns with two spaces between them; the header in capitals. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n');
}

/** An ISO time without milliseconds, or `-`. */
export function when(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A short duration: 850ms, 12.3s, 4m05s, 2h03m. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const m = Math.floor(s / 60);
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** Bytes in binary units: 512 B, 1.5 KiB, 3.2 MiB. */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** How a job's command reads on one line. */
export function commandText(c: { kind: 'script'; text: string } | { kind: 'argv'; argv: string[] }): string {
  if (c.kind === 'argv') return c.argv.map((a) => (/^[\w./:=@%+-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  const first = c.text.split('\n').find((l) => l.trim() !== '' && !l.startsWith('#!')) ?? '';
  return `script (${c.text.length} bytes): ${first.trim().slice(0, 60)}`;
}

/** How a job ended, in words: "exit 0", "signal SIGKILL", or the reason. */
export function outcome(j: { state: string; exitCode: number | null; signal: string | null; reason: string | null }): string {
  const parts: string[] = [];
  if (j.exitCode !== null) parts.push(`exit ${j.exitCode}`);
  if (j.signal !== null) parts.push(`signal ${j.signal}`);
  if (j.reason !== null && j.reason !== '') parts.push(j.reason);
  return parts.join(', ');
}
