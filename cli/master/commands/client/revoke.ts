import { Args, Flags } from '@oclif/core';
import { PkiRegistry, loadCa } from '../../../../pki/index.js';
import { BuilderError, checkName } from '../../../../protocol/index.js';
import { BuilderCommand } from '../../../base-command.js';

export default class ClientRevoke extends BuilderCommand {
  static override summary = 'Revoke every certificate of a client or admin identity: refused from its next handshake on.';
  static override description = 'A running master checks every handshake against the registry, so no restart is needed.';
  static override examples = ['<%= config.bin %> client revoke alice --dir /var/lib/builder'];
  static override args = { name: Args.string({ required: true, description: 'identity name, as given to client create' }) };
  static override flags = { dir: Flags.string({ required: true, description: 'master data directory' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(ClientRevoke);
    checkName('client', args.name);
    const ca = await loadCa(flags.dir);
    const reg = await PkiRegistry.open(ca.paths.registry);
    try {
      const n = (await reg.revoke(args.name, 'client')) + (await reg.revoke(args.name, 'admin'));
      if (n === 0) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no live client or admin certificate named ${args.name}`);
      this.log(`revoked ${n} certificate(s) of ${args.name}`);
    } finally {
      await reg.close();
    }
  }
}
