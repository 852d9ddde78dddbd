import { hostname } from 'node:os';
import { Flags } from '@oclif/core';
import { enrollSlave } from '../../../slave/index.js';
import { BuilderCommand } from '../../base-command.js';

export default class Enroll extends BuilderCommand {
  static override summary = 'Enroll this slave with a master, using a one-time token.';
  static override description =
    'Makes a key pair here (the private key never leaves this machine), sends only a CSR, and pins the master CA by its SHA-256 fingerprint.';
  static override examples = [
    '<%= config.bin %> enroll --master 127.0.0.1:7401 --token TOKEN --ca-fingerprint 3f1a... --dir /var/lib/builder-slave --name worker-1',
  ];
  static override flags = {
    master: Flags.string({ required: true, description: "HOST:PORT of the master's enrollment listener" }),
    token: Flags.string({ required: true, description: 'one-time token from `master token create`' }),
    'ca-fingerprint': Flags.string({ required: true, description: "SHA-256 fingerprint of the master's CA" }),
    dir: Flags.string({ required: true, description: 'slave data directory' }),
    name: Flags.string({ description: 'slave name (default: this host name)' }),
    force: Flags.boolean({ default: false, description: 'replace an existing identity in DIR' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Enroll);
    const name = flags.name ?? hostname().split('.')[0] ?? 'slave';
    const r = await enrollSlave({
      master: flags.master,
      token: flags.token,
      caFingerprint: flags['ca-fingerprint'],
      dir: flags.dir,
      name,
      force: flags.force,
    });
    this.log(`enrolled as ${r.name}; identity written to ${r.dir}`);
  }
}
