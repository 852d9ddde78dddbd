import { Args } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { ClientCommand } from '../lib/client-command.js';

export default class Undrain extends ClientCommand {
  static override summary = 'Undrain a slave: it takes new jobs again (admin only).';
  static override description = 'Ends a drain made with `builder drain`.';
  static override examples = ['<%= config.bin %> undrain worker-3'];
  static override args = { slave: Args.string({ required: true, description: 'slave name' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Undrain);
    checkName('slave', args.slave);
    const s = await this.connect(flags);
    await s.peer.call('slave.drain', { name: args.slave, drained: false });
    this.log(`slave ${args.slave} takes jobs again`);
  }
}
