import { Args } from '@oclif/core';
import { BuilderError, isBuilderError } from '../../../protocol/errors.js';
import { parseDuration } from '../../duration.js';

/** Parses a job id: a positive integer, else a one-line error (exit 2). */
export function parseJobId(s: string): number {
  const n = /^\d{1,16}$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `invalid job id ${JSON.stringify(s)}`, { hint: 'a job id is a positive integer; see: builder jobs' });
  }
  return n;
}

/** The JOB argument of the commands that take one. */
export const jobArg = Args.custom<number>({ parse: async (s) => parseJobId(s) });

/** Parses --reconnect-for: a duration (30s, 2m), or 0 to give up at once when the master goes away. */
export function parseReconnectFor(s: string): number {
  if (/^0+(ms|s|m|h)?$/.test(s)) return 0;
  try {
    return parseDuration(s, '--reconnect-for');
  } catch (e) {
    if (isBuilderError(e)) throw new BuilderError(e.code, e.message, { hint: 'use e.g. 30s or 2m, or 0 to stop at once when the master goes away' });
    throw e;
  }
}
