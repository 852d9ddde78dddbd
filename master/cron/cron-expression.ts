import { createRequire } from 'node:module';
import type { CronDate as CronDateClass, CronExpression, CronExpressionParser as Parser } from 'cron-parser';
import { BuilderError } from '../../protocol/errors.js';

interface CronModule {
  CronExpressionParser: typeof Parser;
  CronDate: typeof CronDateClass;
}
let moduleLoaded: CronModule | undefined;

/**
 * cron-parser (and luxon under it), loaded on first use: a master without schedules never needs
 * them, and they hold about 1.5 MiB of heap once imported.
 */
function cronModule(): CronModule {
  moduleLoaded ??= createRequire(import.meta.url)('cron-parser') as CronModule;
  return moduleLoaded;
}

function cronParser(): typeof Parser {
  return cronModule().CronExpressionParser;
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
export function checkCronExpression(expr: string, o: { allowSeconds: boolean; tz: string; hashSeed?: string }): string {
  if (typeof expr !== 'string') invalid('a cron expression must be a string');
  let e = expr.trim();
  if (e.length === 0 || e.length > MAX_CRON_LENGTH) invalid(`a cron expression must have 1..${MAX_CRON_LENGTH} characters`);
  if (e.startsWith('@')) {
    const seconds = ALIASES[e.toLowerCase()];
    if (seconds === undefined) invalid(`unknown cron alias ${JSON.stringify(e).slice(0, 40)}`, `use one of ${Object.keys(ALIASES).join(', ')}`);
    if (seconds && !o.allowSeconds) invalid(`${e} fires every second; per-second schedules are not allowed`, SECONDS_HINT);
    // cron-parser knows the names in lower case only (`@WEEKLY` failed with "cannot resolve alias \"wee\""): stored so.
    e = e.toLowerCase();
  } else {
    const n = e.split(/\s+/).length;
    if (n === 6 && !o.allowSeconds) {
      invalid(`cron expression ${JSON.stringify(e)} has six fields (seconds); seconds are not allowed`, SECONDS_HINT);
    }
    if (n !== 5 && n !== 6) invalid(`cron expression ${JSON.stringify(e).slice(0, 80)} has ${n} fields; expected 5 (minute hour day-of-month month day-of-week)`);
  }
  let next: number;
  try {
    next = cronParser().parse(e, { tz: o.tz, currentDate: new Date(0), ...(o.hashSeed === undefined ? {} : { hashSeed: o.hashSeed }) }).next().getTime();
  } catch (err) {
    invalid(`invalid cron expression ${JSON.stringify(e).slice(0, 80)}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Number.isFinite(next)) invalid(`cron expression ${JSON.stringify(e).slice(0, 80)} never fires`);
  return e;
}

/** How far {@link nextFireAfter} checks time by time when cron-parser cannot step: past any clock change. */
const SCAN_MS = 48 * 3600_000;
/** Scans of SCAN_MS before giving up (an expression that was valid and has no time left). */
const SCAN_ROUNDS = 3;

/**
 * The first fire time of `expr` strictly after `after` (ms), in `tz`. `hashSeed` (the schedule
 * id) fixes what `H` stands for: without it cron-parser draws anew at each parse, and a
 * schedule re-parsed at each fire moved (`H H * * *` fired several times a day).
 *
 * The result is always later than `after`. Near a clock change of a zone whose offset moves by
 * 30 min or at :45 (Pacific/Chatham, Australia/Lord_Howe), cron-parser 5 can step backwards
 * (Chatham `*\/15` at 2026-04-04T13:00Z gave 12:15Z, and the schedule fired as fast as the
 * store committed) or throw "loop limit exceeded" (Lord_Howe `0 3 * * *` for every start from
 * 2026-04-03T16:00Z to 14:30Z the next day, about 0.9 s each). Then the times after `after`
 * are checked one by one against the expression (`includesDate`, about 60 ms for 48 h of
 * minutes) for up to SCAN_MS, and cron-parser is asked again from the end of that scan.
 */
export function nextFireAfter(expr: string, tz: string, after: number, hashSeed?: string): number {
  const opts = { tz, ...(hashSeed === undefined ? {} : { hashSeed }) };
  let from = after;
  let cause: unknown;
  for (let round = 0; round < SCAN_ROUNDS; round++) {
    let parsed: CronExpression;
    try {
      parsed = cronParser().parse(expr, { ...opts, currentDate: new Date(from) });
    } catch (err) {
      cause = err;
      break;
    }
    try {
      const t = parsed.next().getTime();
      // Ticks in (after, from] were scanned and none matched: t is the first after `after`.
      if (Number.isFinite(t) && t > from) return t;
    } catch (err) {
      cause = err;
    }
    const hit = scanFor(parsed, tz, from, from + SCAN_MS);
    if (hit !== undefined) return hit;
    from += SCAN_MS;
  }
  // An expression that was valid can still run out of dates (an end of range): no next fire.
  throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `cron expression ${JSON.stringify(expr).slice(0, 80)} has no fire time after ${new Date(after).toISOString()}`, { cause });
}

/**
 * The first time in (from, to] that `ex` includes, checking each UTC minute (each allowed
 * second in it). A local time that a clock going back repeats fires at its first occurrence
 * only, as cron-parser does for an `0 2 * * *` on the night the clocks go back.
 */
function scanFor(ex: CronExpression, tz: string, from: number, to: number): number | undefined {
  const seconds = [...ex.fields.second.values].sort((x, y) => x - y);
  for (let m = Math.floor(from / 60_000) * 60_000; m <= to; m += 60_000) {
    for (const s of seconds) {
      const t = m + s * 1000;
      if (t <= from) continue;
      if (t > to) return undefined;
      // Within one UTC minute only the second changes: a miss on another field misses the minute.
      if (!ex.includesDate(new Date(t))) break;
      if (!repeatedLocalTime(t, tz)) return t;
      break;
    }
  }
  return undefined;
}

/** Whether the local time at `t` already occurred earlier (a clock going back repeats it). */
function repeatedLocalTime(t: number, tz: string): boolean {
  const { CronDate } = cronModule();
  const offset = (x: number): number => new CronDate(x, tz).getUTCOffset();
  const now = offset(t);
  const before = offset(t - 3 * 3600_000);
  if (before <= now) return false;
  const earlier = t - (before - now) * 60_000;
  return offset(earlier) === before;
}
