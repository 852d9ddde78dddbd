import type { AttemptResult } from '../executor/index.js';
import type { RefusedItem, StoredOutcome } from './attempt-files.js';

/** How the input fetch went, as far as the attempt knows. */
export type FetchState = 'none' | 'ok' | 'setup-failed' | 'job-failed';

/** What the task knows beside the executor's result. */
export interface OutcomeContext {
  /** Why the master cancelled the attempt, if it did. */
  readonly cancelReason: 'cancelled' | 'timed_out' | undefined;
  readonly fetch: FetchState;
  /** The job's own command decides what runs (an argv, or a script with a `#!` line). */
  readonly jobChoosesProgram: boolean;
  readonly timeoutMs: number;
}

/** Spawn errors that come from the job's own command (a missing program it named), not from the slave. */
const JOB_SPAWN_ERRORS = new Set(['ENOENT', 'EACCES', 'ENOEXEC', 'E2BIG', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG']);

export const MAX_REASON = 1024;
export const MAX_REFUSED = 1000;
export const MAX_CONFLICTS = 1000;

function clip(s: string, n: number): string {
  return s.length <= n ? s : s.slice(0, n - 1) + '…';
}

/**
 * Turns the executor's result into what attempt.finish reports. `setupFailure` is true only when
 * the attempt failed before the job's process ran for a reason of the slave's (input fetch,
 * work dir, its shell): a broken slave, not a broken job, so the master can quarantine the slave
 * instead of failing the job everywhere.
 */
export function buildOutcome(r: AttemptResult, c: OutcomeContext): StoredOutcome {
  const state = r.outcome === 'cancelled' && c.cancelReason === 'timed_out' ? 'timed_out' : r.outcome;
  const failedBeforeRun = r.error !== undefined && r.pid === undefined && !r.cancelled;
  let setupFailure = false;
  if (failedBeforeRun) {
    if (c.fetch === 'job-failed') setupFailure = false;
    else if (c.fetch === 'ok' && c.jobChoosesProgram && JOB_SPAWN_ERRORS.has(r.error?.code ?? '')) setupFailure = false;
    else setupFailure = true;
  }
  const parts: string[] = [];
  if (r.error !== undefined && !(r.cancelled && r.error.code === 'BUILDER_ERR_BAD_STATE')) {
    parts.push(`${setupFailure ? 'setup failed' : 'could not run'}: ${r.error.message}`);
  }
  if (state === 'timed_out') parts.push(c.cancelReason === 'timed_out' ? 'timed out (the master ended it)' : `timed out after ${c.timeoutMs} ms`);
  else if (state === 'cancelled') parts.push('cancelled');
  if (r.signal !== null) parts.push(`ended by ${r.signal}`);
  else if (r.exitCode !== null && r.exitCode !== 0) parts.push(`exit code ${r.exitCode}`);
  if (r.leftoversKilled) parts.push('processes left in its group were killed');
  if (r.pipesForcedClosed) parts.push('a process outside its group held the output open; stopped reading');
  if (r.logLostBytes > 0) parts.push(`${r.logLostBytes} bytes of output lost on the slave (${r.logError?.code ?? 'log error'})`);
  if (r.artifactsError !== undefined) parts.push(`artifacts not collected: ${r.artifactsError.code}`);

  const scan = r.artifacts;
  const refused: RefusedItem[] = [];
  for (const x of scan?.refused ?? []) {
    refused.push(x.detail === undefined ? { path: x.path, reason: x.reason } : { path: x.path, reason: x.reason, detail: x.detail });
  }
  const conflicts = (scan?.conflicts ?? []).map((x) => ({ path: x.path, inputSha256: x.inputSha256, artifactSha256: x.artifactSha256 }));
  if (conflicts.length > MAX_CONFLICTS) parts.push(`${conflicts.length - MAX_CONFLICTS} more artifacts conflict with inputs`);
  return {
    state,
    exitCode: r.exitCode,
    signal: r.signal,
    reason: parts.length === 0 ? null : clip(parts.join('; '), MAX_REASON),
    setupFailure,
    refused,
    conflicts: conflicts.slice(0, MAX_CONFLICTS),
    artifacts: (scan?.artifacts ?? []).map((a) => ({ path: a.path, absPath: a.absPath, size: a.size, sha256: a.sha256 })),
    lastSeq: r.lastSeq,
    ...(r.logLostBytes > 0 ? { logLostBytes: r.logLostBytes } : {}),
  };
}

/** Caps the refused list at the catalogue's 1,000 entries, the last one saying how many were left out. */
export function capRefused(list: readonly RefusedItem[]): RefusedItem[] {
  const out = list.map((x) => ({ ...x, path: clip(x.path, 4096), reason: clip(x.reason, 32), ...(x.detail === undefined ? {} : { detail: clip(x.detail, 1024) }) }));
  if (out.length <= MAX_REFUSED) return out;
  const kept = out.slice(0, MAX_REFUSED - 1);
  kept.push({ path: '…', reason: 'too-many-refusals', detail: `${out.length - kept.length} more entries not listed` });
  return kept;
}
