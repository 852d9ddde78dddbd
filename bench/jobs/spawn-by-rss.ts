/**
 * What starting one `true` costs the calling Node process, by the memory that process holds, with
 * both of the slave's spawners: child_process.spawn (libuv forks, copying the page tables of
 * every page the process has touched, then waits until the child has exec'd) and the native
 * spawner (native/spawn.c: vfork, no copy; the caller waits until the exec). The slave starts
 * every job one of these ways, on its event loop.
 *
 *   node dist/bench/jobs/spawn-by-rss.js [extraMiB ...]     (default 0 30 60 120)
 *
 * For each figure a child of this script touches that many MiB more (Buffers), then starts
 * `true` 300 times with each spawner, alternating, 3 ms apart, with the slave's options (own
 * process group, stdout and stderr piped), and reports its RSS and the time of the call alone.
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { nativeSpawn } from '../../slave/executor/native-spawn.js';

const pct = (ms: number[], q: number): number => +ms[Math.min(ms.length - 1, Math.floor(ms.length * q))]!.toFixed(2);

async function measure(extraMiB: number): Promise<void> {
  const keep: Buffer[] = [];
  for (let i = 0; i < extraMiB; i++) keep.push(Buffer.alloc(1024 * 1024, 1));
  const ms = { node: [] as number[], native: [] as number[] };
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (let i = 0; i < 600; i++) {
    await sleep(3);
    const which = i % 2 === 0 ? 'node' : 'native';
    const t0 = performance.now();
    const c = which === 'node' ? spawn('true', [], { detached: true, env, stdio: ['ignore', 'pipe', 'pipe'] }) : nativeSpawn('true', [], { cwd: process.cwd(), env });
    ms[which].push(performance.now() - t0);
    c.stdout.resume();
    c.stderr.resume();
    await new Promise((resolve) => c.once('exit', resolve));
  }
  for (const v of Object.values(ms)) v.sort((a, b) => a - b);
  const rss = process.memoryUsage().rss / 1048576;
  const fig = (v: number[]): { p50: number; p90: number; p99: number } => ({ p50: pct(v, 0.5), p90: pct(v, 0.9), p99: pct(v, 0.99) });
  process.stdout.write(JSON.stringify({ extraMiB, held: keep.length, rssMiB: Math.round(rss), nodeSpawnMs: fig(ms.node), nativeSpawnMs: fig(ms.native) }) + '\n');
}

const args = process.argv.slice(2);
if (args[0] === 'child') await measure(Number(args[1]));
else {
  // One fresh process per figure, so that each starts from the same heap.
  const self = fileURLToPath(import.meta.url);
  for (const m of args.length > 0 ? args : ['0', '30', '60', '120']) process.stdout.write(execFileSync(process.execPath, [self, 'child', m], { encoding: 'utf8' }));
}
