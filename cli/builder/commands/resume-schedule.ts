import { Args, Flags } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { ClientCommand } from '../lib/client-command.js';
import { pausedLine } from '../lib/schedules.js';

export default class ResumeSchedule extends ClientCommand {
  static override summary = 'Resume a paused schedule: it fires again from its next tick after now.';
  static override description = 'No catch-up: the ticks missed while paused do not fire. Prints the next fire time.';
  static override examples = ['<%= config.bin %> resume-schedule nightly-3f2a9c1e', '<%= config.bin %> resume-schedule nightly-3f2a9c1e --json'];
  static override args = { id: Args.string({ required: true, description: 'schedule id (see builder schedules)' }) };
  static override flags = { json: Flags.boolean({ default: false, description: 'print the schedule as JSON' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(ResumeSchedule);
    checkName('schedule', args.id);
    const s = await this.connect(flags);
    const { schedule } = await s.peer.call('schedule.pause', { id: args.id, paused: false });
    if (flags.json) this.printJson(schedule);
    else this.log(pausedLine(schedule));
  }
}
