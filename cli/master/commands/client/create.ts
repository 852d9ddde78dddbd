import { existsSync } from 'node:fs';
import { Args, Flags } from '@oclif/core';
import { PkiRegistry, identityPaths, issueIdentity, loadCa } from '../../../../pki/index.js';
import { BuilderError, checkName } from '../../../../protocol/index.js';
import { BuilderCommand } from '../../../base-command.js';

export default class ClientCreate extends BuilderCommand {
  static override summary = 'Issue an identity for a person or a script using the builder CLI.';
  static override description =
    'Writes OUTDIR/{ca,cert,key}.pem (key mode 0600). A client may schedule, observe, cancel, retry and download; an admin (--admin) may also drain slaves and promote images. Hand OUTDIR to its user over a safe channel; revoke it with `master client revoke NAME`.';
  static override examples = [
    '<%= config.bin %> client create alice --dir /var/lib/builder --out ./alice',
    '<%= config.bin %> client create release-bot --dir ./farm --out /etc/builder/release-bot --admin',
  ];
  static override args = { name: Args.string({ required: true, description: "the identity's name (its certificate's CN)" }) };
  static override flags = {
    dir: Flags.string({ required: true, description: 'master data directory' }),
    out: Flags.string({ required: true, description: 'directory to write ca.pem, cert.pem and key.pem into' }),
    admin: Flags.boolean({ default: false, description: 'an admin identity instead of a client one' }),
    days: Flags.integer({ min: 1, max: 3650, default: 365, description: 'validity in days' }),
    force: Flags.boolean({ default: false, description: 'overwrite an identity already in --out' }),
    json: Flags.boolean({ default: false, description: 'print the result as JSON' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(ClientCreate);
    checkName('client', args.name);
    const ip = identityPaths(flags.out);
    if (!flags.force && (existsSync(ip.key) || existsSync(ip.cert))) {
      throw new BuilderError('BUILDER_ERR_CONFLICT', `${ip.root} already holds an identity`, { hint: 'pass --force to replace it, or choose another --out' });
    }
    const ca = await loadCa(flags.dir);
    const reg = await PkiRegistry.open(ca.paths.registry);
    try {
      // One live certificate per name, as for slaves: a name in the master's logs means one holder.
      if (await reg.hasLiveCertificate(args.name)) {
        throw new BuilderError('BUILDER_ERR_CONFLICT', `a live certificate named ${args.name} exists`, { hint: `choose another name, or revoke it first: master client revoke ${args.name} --dir ${flags.dir}` });
      }
      const role = flags.admin ? 'admin' : 'client';
      const r = await issueIdentity(ca, reg, { name: args.name, role, outDir: flags.out, validityDays: flags.days });
      if (flags.json) {
        this.log(JSON.stringify({ name: args.name, role, serial: r.serial, dir: r.paths.root }));
        return;
      }
      this.log(`${role} identity ${args.name} written to ${r.paths.root} (serial ${r.serial})`);
      this.log('use it with:');
      this.log(`  builder jobs --master HOST:PORT --identity ${r.paths.root}`);
    } finally {
      await reg.close();
    }
  }
}
