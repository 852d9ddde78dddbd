import { createRequire } from 'node:module';
import type { CronExpressionParser as Parser } from 'cron-parser';
import { BuilderError } from '../../protocol/errors.js';

let parserLoaded: typeof Parser | undefined;

/**
 * cron-parser (and luxon under it), loaded on first use: a master without schedules never needs
 * them, and they hold about 1.5 MiB of heap once imported.
 */
function cronParser(): typeof Parser {
  parserLoaded ??= (createRequire(import.meta.url)('cron-parser') as { CronExpressionParser: typeof Parser }).CronExpressionParser;
  return parserLoaded;
}

/** Longest cron expression accepted. */
export const MAX_CRON_LENGTH = 256;

/** The `@` names cron-parser knows, and whether they tick in seconds. */
const ALIASES: Readonly<Record<string, boolean>> = {
  '@yearly': false,
  '@annually': false,
  '@monthly': false,
  '@weekly': false,
  '@daily': false,
  '@hourly': false,
  '@minutely': false,
  '@weekdays': false,
  '@weekends': false,
  '@secondly': true,
};

const SECONDS_HINT = 'use five fields: minute hour day-of-month month day-of-week (a master started with `master run --cron-seconds` accepts a leading seconds field)';

function invalid(msg: string, hint?: string): never {
  throw new BuilderError('BUILDER_ERR_INVALID_INPUT', msg, hint === undefined ? {} : { hint });
}

/**
 * Throws BUILDER_ERR_INVALID_INPUT unless `tz` is an IANA time zone this Node knows. `UTC`, the
 * default, is known to every ICU build and is accepted without asking ICU: the first
 * Intl.DateTimeFormat pages in about 6.5 MiB of the node binary's time zone data and adds 1.7
 * MiB of heap, which an idle master without other time zones has no use for.
 */
export function checkTimeZone(tz: string): string {
  if (tz === 'UTC') return tz;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    invalid(`unknown time zone ${JSON.stringify(String(tz)).slice(0, 80)}`, 'use an IANA name such as UTC or Europe/Paris');
  }
  return tz;
}

/**
 * Validates a cron expression: five fields (minute hour day-of-month month day-of-week) or an
 * `@` alias. Six-field expressions (a leading seconds field) are refused unless
 * `allowSeconds`: a build farm schedules builds, and a typo such as `* * * * * *` would queue
 * one job per second. Returns the trimmed expression.
 */
export function checkCronExpression(expr: string, o: { allowSeconds: boolean; tz: string }): string {
  if (typeof expr !== 'string') invalid('a cron expression must be a string');
  const e = expr.trim();
  if (e.length === 0 || e.length > MAX_CRON_LENGTH) invalid(`a cron expression must have 1..${MAX_CRON_LENGTH} characters`);
  if (e.startsWith('@')) {
    const seconds = ALIASES[e.toLowerCase()];
    if (seconds === undefined) invalid(`unknown cron alias ${JSON.stringify(e).slice(0, 40)}`, `use one of ${Object.keys(ALIASES).join(', ')}`);
    if (seconds && !o.allowSeconds) invalid(`${e} fires every second; per-second schedules are not allowed`, SECONDS_HINT);
  } else {
    const n = e.split(/\s+/).length;
    if (n === 6 && !o.allowSeconds) {
      invalid(`cron expression ${JSON.stringify(e)} has six fields (seconds); seconds are not allowed`, SECONDS_HINT);
    }
    if (n !== 5 && n !== 6) invalid(`cron expression ${JSON.stringify(e).slice(0, 80)} has ${n} fields; expected 5 (minute hour day-of-month month day-of-week)`);
  }
  let next: number;
  try {
    next = cronParser().parse(e, { tz: o.tz, currentDate: new Date(0) }).next().getTime();
  } catch (err) {
    invalid(`invalid cron expression ${JSON.stringify(e).slice(0, 80)}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Number.isFinite(next)) invalid(`cron expression ${JSON.stringify(e).slice(0, 80)} never fires`);
  return e;
}

/** The first fire time of `expr` strictly after `after` (ms). */
export function nextFireAfter(expr: string, tz: string, after: number): number {
  try {
    return cronParser().parse(expr, { tz, currentDate: new Date(after) }).next().getTime();
  } catch (err) {
    // An expression that was valid can still run out of dates (an end of range): no next fire.
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `cron expression ${JSON.stringify(expr).slice(0, 80)} has no fire time after ${new Date(after).toISOString()}`, { cause: err });
  }
}
