import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { checkName } from '../../protocol/names.js';

/** Identifies one attempt of one job; the pair names the attempt's spool and work directories. */
export interface AttemptKey {
  readonly jobId: string;
  readonly attempt: number;
}

/** Validates an attempt key: the job id must be a simple name (it becomes a path), the attempt a positive integer. */
export function checkAttemptKey(jobId: string | number, attempt: number): AttemptKey {
  const id = checkName('job', String(jobId));
  if (!Number.isSafeInteger(attempt) || attempt < 1) {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `attempt must be a positive integer, got ${String(attempt)}`);
  }
  return { jobId: id, attempt };
}

/** `<root>/<jobId>-<attempt>`: the directory of one attempt's spool under the slave's spool root. */
export function spoolDirFor(root: string, jobId: string | number, attempt: number): string {
  const k = checkAttemptKey(jobId, attempt);
  return join(root, `${k.jobId}-${k.attempt}`);
}

/**
 * Lists the attempt spools left under `root` (by a previous slave process, for instance), so the
 * agent can reopen them and send what the master has not acknowledged. Entries that are not
 * `<jobId>-<attempt>` are ignored.
 */
export async function listSpools(root: string): Promise<Array<AttemptKey & { dir: string }>> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: Array<AttemptKey & { dir: string }> = [];
  for (const n of names) {
    const m = /^(.+)-(\d{1,15})$/.exec(n);
    if (m?.[1] === undefined || m[2] === undefined) continue;
    try {
      const k = checkAttemptKey(m[1], Number(m[2]));
      out.push({ ...k, dir: join(root, n) });
    } catch {
      continue;
    }
  }
  out.sort((a, b) => (a.jobId === b.jobId ? a.attempt - b.attempt : a.jobId < b.jobId ? -1 : 1));
  return out;
}
