import { Flags } from '@oclif/core';
import { Master } from '../../../master/index.js';
import { BuilderCommand } from '../../base-command.js';

export default class Run extends BuilderCommand {
  static override summary = 'Run the master: the mutual-TLS listener for slaves and the CLI, and the enrollment listener.';
  static override examples = [
    '<%= config.bin %> run --dir /var/lib/builder',
    '<%= config.bin %> run --dir ./farm --listen 0.0.0.0:7400 --enroll-listen 0.0.0.0:7401',
  ];
  static override flags = {
    dir: Flags.string({ required: true, description: 'master data directory (made by master init-ca)' }),
    listen: Flags.string({ default: '127.0.0.1:7400', description: 'HOST:PORT for slaves and the CLI (mutual TLS)' }),
    'enroll-listen': Flags.string({ default: '127.0.0.1:7401', description: 'HOST:PORT for enrollment (server TLS only)' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Run);
    const log = this.makeLogger();
    const master = new Master({ dir: flags.dir, listen: flags.listen, enrollListen: flags['enroll-listen'], logger: log });
    await master.start();
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        log.info({ signal: sig }, 'stopping');
        master.stop().then(resolve, resolve);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  }
}
