import type { SlotRecordLine } from '../../slave/index.js';

/**
 * Replays a slave's slot record (slave/runtime `readSlotRecord`) from its `start` and `end` lines,
 * not from the slave's own `usedAfter` figures: the most slots in use at once, and the slots in
 * use at its end. An `open` line is a new process (nothing of the previous one runs in it); a
 * record that begins with a `rotate` line (its older generations are gone) starts from the
 * slots in use that line tells.
 */
export function replaySlots(rec: readonly SlotRecordLine[]): { max: number; end: number } {
  let used = 0;
  let max = 0;
  rec.forEach((l, i) => {
    if (l.event === 'open') used = 0;
    else if (l.event === 'rotate' && i === 0) used = l.used;
    else if (l.event === 'start') used += l.slots;
    else if (l.event === 'end') used -= l.slots;
    max = Math.max(max, used);
  });
  return { max, end: used };
}
