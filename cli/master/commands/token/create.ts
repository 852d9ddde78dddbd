import { Flags } from '@oclif/core';
import { PkiRegistry, caPaths, certFingerprint, loadCa } from '../../../../pki/index.js';
import { BuilderCommand } from '../../../base-command.js';
import { parseDuration } from '../../../duration.js';

export default class TokenCreate extends BuilderCommand {
  static override summary = 'Create a one-time enrollment token and print the `slave enroll` command.';
  static override examples = [
    '<%= config.bin %> token create --dir /var/lib/builder',
    '<%= config.bin %> token create --dir ./farm --ttl 15m --enroll-address builder.example.org:7401',
  ];
  static override flags = {
    dir: Flags.string({ required: true, description: 'master data directory' }),
    ttl: Flags.string({ default: '1h', description: 'how long the token stays valid (30s, 15m, 2h, 7d)' }),
    'enroll-address': Flags.string({ default: '127.0.0.1:7401', description: "the master's enrollment listener as slaves reach it" }),
    json: Flags.boolean({ default: false, description: 'print the result as JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(TokenCreate);
    const ttlMs = parseDuration(flags.ttl, '--ttl');
    const ca = await loadCa(flags.dir);
    const reg = await PkiRegistry.open(caPaths(flags.dir).registry);
    try {
      const t = await reg.createToken(ttlMs);
      const fp = certFingerprint(ca.certPem);
      const command = `slave enroll --master ${flags['enroll-address']} --token ${t.token} --ca-fingerprint ${fp} --dir /var/lib/builder-slave --name NAME`;
      if (flags.json) {
        this.log(JSON.stringify({ token: t.token, expiresAt: new Date(t.expiresAt).toISOString(), caFingerprint: fp, command }));
        return;
      }
      this.log(`token: ${t.token}`);
      this.log(`expires: ${new Date(t.expiresAt).toISOString()} (one use)`);
      this.log('on the slave, run:');
      this.log(`  ${command}`);
    } finally {
      await reg.close();
    }
  }
}
