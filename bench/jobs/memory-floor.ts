/**
 * The memory floor of the stack: RSS of a Node process that only imports the given modules and
 * then idles, read at start and after `--settle` seconds (V8 shrinks its heap after ~10 s idle).
 *   node dist/bench/jobs/memory-floor.js [--settle 20] [module ...]
 * With no module: the set a `slave run` needs (zod, msgpackr, json-rpc-2.0, @oclif/core,
 * node:tls), then the master's set (plus sqlite3, cron-parser, pino), each in a fresh process.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const SETS: Record<string, string[]> = {
  'node alone': [],
  slave: ['zod', 'msgpackr', 'json-rpc-2.0', '@oclif/core', 'pino', 'node:tls'],
  master: ['zod', 'msgpackr', 'json-rpc-2.0', '@oclif/core', 'pino', 'node:tls', 'sqlite3', 'cron-parser'],
};

function status(): { rss: number; anon: number; file: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN) / 1024;
  return { rss: Math.round(kb('VmRSS') * 10) / 10, anon: Math.round(kb('RssAnon') * 10) / 10, file: Math.round(kb('RssFile') * 10) / 10 };
}

const { values, positionals } = parseArgs({ options: { settle: { type: 'string', default: '20' }, child: { type: 'boolean', default: false } }, allowPositionals: true });
const settleMs = Number(values.settle) * 1000;

if (values.child) {
  for (const m of positionals) await import(m);
  const atStart = status();
  await new Promise((r) => setTimeout(r, settleMs));
  process.stdout.write(JSON.stringify({ modules: positionals, atStartMiB: atStart, settledMiB: status() }));
} else {
  const me = fileURLToPath(import.meta.url);
  const sets = positionals.length > 0 ? { given: positionals } : SETS;
  const out: Record<string, unknown> = { node: process.version, settleS: settleMs / 1000 };
  for (const [name, mods] of Object.entries(sets)) {
    out[name] = JSON.parse(execFileSync(process.execPath, [me, '--child', '--settle', String(values.settle), ...mods], { encoding: 'utf8' })) as unknown;
  }
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}
