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
