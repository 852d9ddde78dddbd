import { Args, Flags } from '@oclif/core';
import { PkiRegistry, caPaths, loadCa } from '../../../../pki/index.js';
import { BuilderError, checkName } from '../../../../protocol/index.js';
import { BuilderCommand } from '../../../base-command.js';

export default class SlaveRevoke extends BuilderCommand {
  static override summary = "Revoke a slave's certificates: it is refused from its next handshake on.";
  static override description =
    'A running master checks every handshake against the registry, so no restart is needed; use `builder` (admin) to also drop a live connection at once.';
  static override examples = ['<%= config.bin %> slave revoke worker-3 --dir /var/lib/builder'];
  static override args = { name: Args.string({ required: true, description: 'slave name' }) };
  static override flags = { dir: Flags.string({ required: true, description: 'master data directory' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(SlaveRevoke);
    checkName('slave', args.name);
    await loadCa(flags.dir);
    const reg = await PkiRegistry.open(caPaths(flags.dir).registry);
    try {
      const n = await reg.revoke(args.name, 'slave');
      if (n === 0) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no live certificate for slave ${args.name}`, { hint: 'see: master slave list --dir DIR' });
      this.log(`revoked ${n} certificate(s) of ${args.name}`);
    } finally {
      await reg.close();
    }
  }
}
