import { Flags } from '@oclif/core';
import { initCa } from '../../../pki/index.js';
import { BuilderCommand } from '../../base-command.js';

export default class InitCa extends BuilderCommand {
  static override summary = "Create the master's CA, its server certificate and an admin identity.";
  static override description =
    'Writes DIR/ca/ (CA certificate and key, mode 0600), DIR/server/ (the TLS certificate with every --hostname as a SAN) and DIR/admin/ (ca.pem, cert.pem, key.pem for the builder CLI). Refuses to overwrite an existing CA unless --force.';
  static override examples = [
    '<%= config.bin %> init-ca --dir /var/lib/builder',
    '<%= config.bin %> init-ca --dir ./farm --hostname builder.example.org --hostname 203.0.113.7',
  ];
  static override flags = {
    dir: Flags.string({ required: true, description: 'master data directory' }),
    hostname: Flags.string({ multiple: true, description: 'DNS name or IP of the master (repeatable); default localhost and 127.0.0.1' }),
    force: Flags.boolean({ default: false, description: 'replace an existing CA' }),
    'rsa-bits': Flags.integer({ default: 2048, min: 2048, max: 8192, description: 'RSA key size' }),
    json: Flags.boolean({ default: false, description: 'print the result as JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(InitCa);
    const r = await initCa({ dir: flags.dir, hostnames: flags.hostname, force: flags.force, rsaBits: flags['rsa-bits'] });
    if (flags.json) {
      this.log(JSON.stringify(r));
      return;
    }
    this.log(`CA created: ${r.caCertPath}`);
    this.log(`CA fingerprint (SHA-256): ${r.fingerprint}`);
    this.log(`server certificate for: ${r.hostnames.join(', ')}`);
    this.log(`admin identity for the builder CLI: ${r.adminDir}`);
  }
}
