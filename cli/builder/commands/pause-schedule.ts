import { Args, Flags } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { ClientCommand } from '../lib/client-command.js';
import { pausedLine } from '../lib/schedules.js';

export default class PauseSchedule extends ClientCommand {
  static override summary = 'Pause a schedule: it does not fire until resumed (jobs it already queued stay).';
  static override description = 'Persisted on the master. `builder resume-schedule` starts it again from its next tick after then, without catching up on the ticks it missed.';
  static override examples = ['<%= config.bin %> pause-schedule nightly-3f2a9c1e', '<%= config.bin %> pause-schedule nightly-3f2a9c1e --json'];
  static override args = { id: Args.string({ required: true, description: 'schedule id (see builder schedules)' }) };
  static override flags = { json: Flags.boolean({ default: false, description: 'print the schedule as JSON' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(PauseSchedule);
    checkName('schedule', args.id);
    const s = await this.connect(flags);
    const { schedule } = await s.peer.call('schedule.pause', { id: args.id, paused: true });
    if (flags.json) this.printJson(schedule);
    else this.log(pausedLine(schedule));
  }
}
