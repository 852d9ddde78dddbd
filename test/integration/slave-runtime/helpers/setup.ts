import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SlaveRuntime, type SlaveRuntimeOptions } from '../../../../slave/index.js';
import type { SlotRecordLine } from '../../../../slave/index.js';

/** Fast settings for tests: short grace periods and back-off. */
export function fastRuntimeOptions(dir: string, master: string, over: Partial<SlaveRuntimeOptions> = {}): SlaveRuntimeOptions {
  return {
    dir,
    master,
    channels: ['main'],
    arches: ['x86_64', 'noarch'],
    capacity: 2,
    drainTimeoutMs: 5_000,
    deliverTimeoutMs: 5_000,
    backoffMinMs: 50,
    backoffMaxMs: 300,
    retryDelayMs: 50,
    executor: { killGraceMs: 500, pipeCloseTimeoutMs: 500, flushIntervalMs: 20 },
    ...over,
  };
}

export async function startRuntime(opts: SlaveRuntimeOptions): Promise<SlaveRuntime> {
  const rt = new SlaveRuntime(opts);
  await rt.start();
  await rt.waitSubscribed();
  return rt;
}

/** Polls `cond` every 10 ms until it holds, or fails after `timeoutMs`. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Reads `slot-record.jsonl` and replays it: the most slots in use at once, by the slave's own events. */
export async function readSlotRecord(dir: string): Promise<{ lines: SlotRecordLine[]; maxUsed: number; maxReplayed: number }> {
  const lines = (await readFile(join(dir, 'slot-record.jsonl'), 'utf8'))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as SlotRecordLine);
  let maxUsed = 0;
  let used = 0;
  let maxReplayed = 0;
  for (const l of lines) {
    if (l.event === 'open') used = 0;
    if (l.event === 'start') used += l.slots;
    if (l.event === 'end') used -= l.slots;
    if (l.event === 'start' || l.event === 'end') maxUsed = Math.max(maxUsed, l.usedAfter);
    maxReplayed = Math.max(maxReplayed, used);
  }
  return { lines, maxUsed, maxReplayed };
}

/** True if `pid` is a live (non-zombie) process. */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
