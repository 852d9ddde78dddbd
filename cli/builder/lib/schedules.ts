import type { ResultOf } from '../../../protocol/catalogue.js';
import { when } from './format.js';

export type ScheduleView = ResultOf<'schedule.list'>['schedules'][number];

/** The one line `pause-schedule` and `resume-schedule` print. */
export function pausedLine(s: ScheduleView): string {
  if (s.paused) return `schedule ${s.id} paused`;
  return `schedule ${s.id} resumed; next fire ${when(s.nextFireAt)}`;
}

/** The last-error cell of `builder schedules`: when and why its last fire failed, or `-`. */
export function lastErrorCell(s: ScheduleView): string {
  if (s.lastError === undefined) return '-';
  return `${when(s.lastErrorAt)} ${s.lastError.replace(/\s+/g, ' ')}`;
}
