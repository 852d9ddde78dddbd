import { Flags } from '@oclif/core';
import { PkiRegistry, caPaths, loadCa } from '../../../../pki/index.js';
import { BuilderCommand } from '../../../base-command.js';

export default class SlaveList extends BuilderCommand {
  static override summary = 'List enrolled slaves and their certificates.';
  static override examples = ['<%= config.bin %> slave list --dir /var/lib/builder', '<%= config.bin %> slave list --dir ./farm --json'];
  static override flags = {
    dir: Flags.string({ required: true, description: 'master data directory' }),
    json: Flags.boolean({ default: false, description: 'print JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(SlaveList);
    await loadCa(flags.dir);
    const reg = await PkiRegistry.open(caPaths(flags.dir).registry);
    try {
      const certs = await reg.list('slave');
      const rows = certs.map((c) => ({
        name: c.name,
        serial: c.serial,
        issued: new Date(c.issuedAt).toISOString(),
        expires: new Date(c.notAfter).toISOString(),
        status: c.revokedAt !== null ? 'revoked' : c.notAfter < Date.now() ? 'expired' : 'valid',
      }));
      if (flags.json) {
        this.log(JSON.stringify(rows));
        return;
      }
      if (rows.length === 0) {
        this.log('no slaves enrolled');
        return;
      }
      const w = Math.max(4, ...rows.map((r) => r.name.length));
      this.log(`${'NAME'.padEnd(w)}  STATUS   EXPIRES                   SERIAL`);
      for (const r of rows) this.log(`${r.name.padEnd(w)}  ${r.status.padEnd(7)}  ${r.expires}  ${r.serial}`);
    } finally {
      await reg.close();
    }
  }
}
