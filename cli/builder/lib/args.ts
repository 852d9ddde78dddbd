import { Args } from '@oclif/core';
import { BuilderError } from '../../../protocol/errors.js';

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
