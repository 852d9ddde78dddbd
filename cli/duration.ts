import ms from 'ms';
import { BuilderError } from '../protocol/errors.js';

/** Parses `30s`, `15m`, `2h`, `7d` (or a plain number of milliseconds) into milliseconds. */
export function parseDuration(s: string, what = 'duration'): number {
  const v = /^\d+$/.test(s) ? Number(s) : ms(s as ms.StringValue);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `invalid ${what} ${JSON.stringify(s)}`, { hint: 'use e.g. 30s, 15m, 2h or 7d' });
  }
  return v;
}

/** Parses a whole number (0 or more) given on the command line as `what`. */
export function wholeNumber(s: string, what: string): number {
  const t = s.trim();
  if (!/^\d+$/.test(t) || !Number.isSafeInteger(Number(t))) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `invalid ${what} ${JSON.stringify(s)}: must be a whole number`, { hint: `e.g. ${what} 3` });
  }
  return Number(t);
}
