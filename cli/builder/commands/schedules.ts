import { Flags } from '@oclif/core';
import { ClientCommand } from '../lib/client-command.js';
import { table, when } from '../lib/format.js';
import { lastErrorCell } from '../lib/schedules.js';

export default class Schedules extends ClientCommand {
  static override summary = 'List schedules (recurring jobs) with their next and last firing.';
  static override description = 'LAST ERROR is set while the last fire failed by the schedule\'s own fault (its job no longer validates on the master): when, and why; it is tried again at its next tick.';
  static override examples = ['<%= config.bin %> schedules', '<%= config.bin %> schedules --json'];
  static override flags = { json: Flags.boolean({ default: false, description: 'print JSON' }) };

  async run(): Promise<void> {
    const { flags } = await this.parse(Schedules);
    const s = await this.connect(flags);
    const { schedules } = await s.peer.call('schedule.list', {});
    if (flags.json) return this.printJson(schedules);
    if (schedules.length === 0) {
      this.log('no schedules');
      return;
    }
    this.log(
      table(
        ['id', 'cron', 'tz', 'name', 'channel', 'arch', 'paused', 'next', 'last job', 'last error'],
        schedules.map((x) => [
          x.id,
          x.cron,
          x.tz,
          x.template.name,
          x.template.channel,
          x.template.arch,
          x.paused ? 'yes' : 'no',
          when(x.nextFireAt),
          x.lastJobId === null ? '-' : String(x.lastJobId),
          lastErrorCell(x),
        ]),
      ),
    );
  }
}
