/**
 * Top self-time functions of a V8 CPU profile (from `node --cpu-prof`), and self time by module.
 *
 *   node dist/bench/protocol/profile-top.js FILE.cpuprofile [TOP=25]
 */
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

// Piped into head: stop quietly when the reader goes away.
process.stdout.on('error', () => process.exit(0));

const [file, topArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: profile-top.js FILE.cpuprofile [TOP]\n');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const p = JSON.parse(await readFile(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
let total = 0;
p.samples.forEach((id, i) => {
  const dt = p.timeDeltas[i] ?? 0;
  selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  total += dt;
});

function moduleOf(url: string): string {
  if (url === '') return '(native/V8)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return url;
  const dist = /\/dist\/(.+)$/.exec(url);
  return dist ? dist[1]! : url;
}

const byFn = new Map<string, number>();
const byModule = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  const f = n.callFrame;
  const name = `${f.functionName || '(anonymous)'}  ${moduleOf(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
  byFn.set(name, (byFn.get(name) ?? 0) + us);
  const mod = f.url === '' ? (f.functionName.startsWith('(') ? f.functionName : '(native/V8)') : moduleOf(f.url);
  byModule.set(mod, (byModule.get(mod) ?? 0) + us);
}

const pct = (us: number) => ((us / total) * 100).toFixed(1).padStart(5) + '%';
const print = (title: string, m: Map<string, number>, n: number) => {
  process.stdout.write(`${title} (total ${(total / 1000).toFixed(0)} ms sampled)\n`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) process.stdout.write(`${pct(us)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}\n`);
  process.stdout.write('\n');
};
print('Self time by function', byFn, top);
print('Self time by module', byModule, 20);
