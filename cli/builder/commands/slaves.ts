import { Flags } from '@oclif/core';
import { ClientCommand } from '../lib/client-command.js';
import { table, when } from '../lib/format.js';

export default class Slaves extends ClientCommand {
  static override summary = 'List slaves: channels, arches, capacity, slots in use, connection.';
  static override examples = ['<%= config.bin %> slaves', '<%= config.bin %> slaves --json'];
  static override flags = { json: Flags.boolean({ default: false, description: 'print JSON' }) };

  async run(): Promise<void> {
    const { flags } = await this.parse(Slaves);
    const s = await this.connect(flags);
    const { slaves } = await s.peer.call('slave.status', {});
    if (flags.json) return this.printJson(slaves);
    if (slaves.length === 0) {
      this.log('no slaves');
      return;
    }
    const now = Date.now();
    this.log(
      table(
        ['name', 'channels', 'arches', 'capacity', 'in use', 'connected since', 'status'],
        slaves.map((x) => {
          const status: string[] = [x.connected ? 'connected' : `offline (last seen ${when(x.lastSeen)})`];
          if (x.drained) status.push('drained');
          if (x.quarantinedUntil !== null && x.quarantinedUntil > now) status.push(`quarantined until ${when(x.quarantinedUntil)}`);
          return [x.name, x.channels.join(',') || '-', x.arches.join(',') || '-', String(x.capacity), String(x.slotsInUse), x.connected ? when(x.connectedSince) : '-', status.join(', ')];
        }),
      ),
    );
  }
}
