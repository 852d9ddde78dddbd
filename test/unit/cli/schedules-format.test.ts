import assert from 'node:assert/strict';
import { lastErrorCell, pausedLine, type ScheduleView } from '../../../cli/builder/lib/schedules.js';

const base: ScheduleView = {
  id: 'nightly-3f2a9c1e',
  cron: '0 3 * * *',
  tz: 'UTC',
  template: { name: 'nightly', channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] } },
  paused: false,
  nextFireAt: Date.parse('2026-05-02T03:00:00Z'),
  lastFiredAt: null,
  lastJobId: null,
  createdAt: 0,
};

describe('builder schedules and pause-schedule output', () => {
  describe('when a schedule\'s last fire failed by its own fault', () => {
    it('shows when and why in the LAST ERROR cell, on one line', () => {
      const s = { ...base, lastError: 'slots must be an integer\nin 1..4', lastErrorAt: Date.parse('2026-05-01T03:00:00.250Z') };
      assert.equal(lastErrorCell(s), '2026-05-01T03:00:00Z slots must be an integer in 1..4');
    });
  });

  describe('when it did not', () => {
    it('shows -', () => {
      assert.equal(lastErrorCell(base), '-');
    });
  });

  describe('when a schedule is paused or resumed', () => {
    it('says which, and when a resumed one fires next', () => {
      assert.equal(pausedLine({ ...base, paused: true, nextFireAt: null }), 'schedule nightly-3f2a9c1e paused');
      assert.equal(pausedLine(base), 'schedule nightly-3f2a9c1e resumed; next fire 2026-05-02T03:00:00Z');
    });
  });
});
