import { Flags } from '@oclif/core';
import { SlaveAgent } from '../../../slave/index.js';
import { BuilderCommand } from '../../base-command.js';

export default class Run extends BuilderCommand {
  static override summary = 'Run the slave: connect to the master with its certificate and stay connected.';
  static override examples = ['<%= config.bin %> run --dir /var/lib/builder-slave --master builder.example.org:7400'];
  static override flags = {
    dir: Flags.string({ required: true, description: 'slave data directory (made by slave enroll)' }),
    master: Flags.string({ required: true, description: "HOST:PORT of the master's main listener" }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Run);
    const log = this.makeLogger();
    const agent = new SlaveAgent({ dir: flags.dir, master: flags.master, logger: log });
    await agent.start();
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        log.info({ signal: sig }, 'stopping');
        agent.stop().then(resolve, resolve);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  }
}
