import { Flags } from '@oclif/core';
import { jobArg } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';

export default class Cancel extends ClientCommand {
  static override summary = 'Cancel a queued or running job (a running one is killed on its slave).';
  static override examples = ['<%= config.bin %> cancel 42', '<%= config.bin %> cancel 42 --json'];
  static override args = { job: jobArg({ required: true, description: 'job id' }) };
  static override flags = { json: Flags.boolean({ default: false, description: 'print the job as JSON' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Cancel);
    const s = await this.connect(flags);
    const { job } = await s.peer.call('job.cancel', { id: args.job });
    if (flags.json) return this.printJson(job);
    this.log(`job ${job.id} ${job.state}`);
  }
}
