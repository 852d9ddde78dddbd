/**
 * What one `spawn()` of `true` costs the calling Node process, by the memory that process holds:
 * libuv forks (copying the page tables of every page the process has touched), then waits until
 * the child has exec'd. The slave starts every job this way, on its event loop.
 *
 *   node dist/bench/jobs/spawn-by-rss.js [extraMiB ...]     (default 0 30 60 120)
 *
 * For each figure a child of this script touches that many MiB more (Buffers), then spawns
 * `true` 300 times, 3 ms apart, with the slave's options (own process group, stdout and stderr
 * piped), and reports its RSS and the time of the spawn() call alone.
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

async function measure(extraMiB: number): Promise<void> {
  const keep: Buffer[] = [];
  for (let i = 0; i < extraMiB; i++) keep.push(Buffer.alloc(1024 * 1024, 1));
  const ms: number[] = [];
  for (let i = 0; i < 300; i++) {
    await sleep(3);
    const t0 = performance.now();
    const c = spawn('true', [], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    ms.push(performance.now() - t0);
    c.stdout.resume();
    c.stderr.resume();
    await new Promise((resolve) => c.once('close', resolve));
  }
  ms.sort((a, b) => a - b);
  const rss = process.memoryUsage().rss / 1048576;
  process.stdout.write(JSON.stringify({ extraMiB, held: keep.length, rssMiB: Math.round(rss), spawnMs: { p50: +ms[150]!.toFixed(2), p90: +ms[270]!.toFixed(2) } }) + '\n');
}

const args = process.argv.slice(2);
if (args[0] === 'child') await measure(Number(args[1]));
else {
  // One fresh process per figure, so that each starts from the same heap.
  const self = fileURLToPath(import.meta.url);
  for (const m of args.length > 0 ? args : ['0', '30', '60', '120']) process.stdout.write(execFileSync(process.execPath, [self, 'child', m], { encoding: 'utf8' }));
}
