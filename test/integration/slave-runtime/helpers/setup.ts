import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readSlotRecord as readSlotRecordFile, SlaveRuntime, type SlaveRuntimeOptions } from '../../../../slave/index.js';
import type { SlotRecordLine } from '../../../../slave/index.js';
import { tempDir } from '../../../helpers/farm.js';
import { replaySlots } from '../../../helpers/slot-record.js';
import { makeTestPki, TestMaster, type TestPki } from './test-master.js';

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
/**
 * The attempt dirs under `<dir>/attempts`, without the recycled ones (emptied dirs kept for the
 * next attempt); throws if a recycled dir still holds anything of an attempt (a file that is not
 * empty, or a name other than the journal and the first spool segment).
 */
export async function attemptDirs(dir: string): Promise<string[]> {
  const root = join(dir, 'attempts');
  const names = await readdir(root);
  for (const n of names.filter((x) => x.startsWith('.recycled.'))) {
    for (const f of await readdir(join(root, n))) {
      if (f !== 'attempt.jsonl' && f !== 'seg-0000000001.log') throw new Error(`recycled dir ${n} holds ${f}`);
      const { size } = await stat(join(root, n, f));
      if (size !== 0) throw new Error(`recycled dir ${n}: ${f} holds ${size} bytes`);
    }
  }
  return names.filter((x) => !x.startsWith('.recycled.'));
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Reads `slot-record.jsonl` with its previous generation (`.1`): the most slots in use at once
 * by the slave's own `usedAfter` figures, and by a replay of its events (replaySlots).
 */
export async function readSlotRecord(dir: string): Promise<{ lines: SlotRecordLine[]; maxUsed: number; maxReplayed: number }> {
  const lines = await readSlotRecordFile(join(dir, 'slot-record.jsonl'));
  let maxUsed = 0;
  for (const l of lines) if (l.event === 'start' || l.event === 'end') maxUsed = Math.max(maxUsed, l.usedAfter);
  const maxReplayed = replaySlots(lines).max;
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

/** SIGKILLs each process group in `groups` (gone ones are skipped) and empties the list. */
export function killGroups(groups: number[]): void {
  for (const g of groups.splice(0)) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/**
 * A test's teardown of its runtime: kills the groups left from before, notes the groups of the
 * attempts `rt` still holds (killed by the next teardown, should shutdown leave them), and shuts it down.
 */
export async function stopRuntime(rt: SlaveRuntime | undefined, groups: number[]): Promise<void> {
  killGroups(groups);
  if (rt === undefined) return;
  for (const a of rt.attempts()) if (a.pid !== undefined) groups.push(a.pid);
  await rt.shutdown();
}

/** What {@link slaveTestBed} gives each test. */
export interface SlaveTestBed {
  /** The file's temp dir (removed after the last test). */
  root: string;
  pki: TestPki;
  /** This test's slave data dir, with a fresh slave identity. */
  dir: string;
  /** This test's reference master (not listening yet). */
  master: TestMaster;
  /** This test's number in the file. */
  n: number;
}

/**
 * Registers the hooks every slave-runtime test file needs: a CA made once per file (RSA keys
 * are slow), and per test a fresh slave dir with its own identity and a fresh test master.
 * Call it inside `describe`, before the file's own hooks (they then run after these).
 */
export function slaveTestBed(prefix: string): SlaveTestBed {
  const bed = { n: 0 } as SlaveTestBed;
  before(async function () {
    bed.root = await tempDir(prefix);
    bed.pki = await makeTestPki(bed.root);
  });
  after(async function () {
    await rm(bed.root, { recursive: true, force: true });
  });
  beforeEach(async function () {
    bed.n++;
    bed.dir = join(bed.root, `slave-${bed.n}`);
    await bed.pki.slaveIdentity(bed.dir);
    bed.master = new TestMaster(bed.pki.caDir, join(bed.root, `master-${bed.n}`));
  });
  return bed;
}
