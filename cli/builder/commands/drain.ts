import { Args } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { ClientCommand } from '../lib/client-command.js';

export default class Drain extends ClientCommand {
  static override summary = 'Drain a slave: it finishes what it runs and gets no new job (admin only).';
  static override description = 'Persisted on the master: the slave stays drained across restarts until `builder undrain`.';
  static override examples = ['<%= config.bin %> drain worker-3'];
  static override args = { slave: Args.string({ required: true, description: 'slave name' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Drain);
    checkName('slave', args.slave);
    const s = await this.connect(flags);
    await s.peer.call('slave.drain', { name: args.slave, drained: true });
    this.log(`slave ${args.slave} drained`);
  }
}
