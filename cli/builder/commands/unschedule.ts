import { Args } from '@oclif/core';
import { ClientCommand } from '../lib/client-command.js';

export default class Unschedule extends ClientCommand {
  static override summary = 'Remove a schedule (jobs it already queued stay).';
  static override examples = ['<%= config.bin %> unschedule nightly-3f2a9c1e'];
  static override args = { id: Args.string({ required: true, description: 'schedule id (see builder schedules)' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Unschedule);
    const s = await this.connect(flags);
    await s.peer.call('schedule.remove', { id: args.id });
    this.log(`schedule ${args.id} removed`);
  }
}
