import { Flags } from '@oclif/core';
import { jobArg } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';

export default class Retry extends ClientCommand {
  static override summary = 'Queue a new job with the spec of a finished one; prints the new job id.';
  static override description = 'The old job stays as it was. Use --observe to follow the new one.';
  static override examples = ['<%= config.bin %> retry 42', 'JOB=$(<%= config.bin %> retry 42) && <%= config.bin %> observe $JOB', '<%= config.bin %> retry 42 --observe'];
  static override args = { job: jobArg({ required: true, description: 'job id of a finished job' }) };
  static override flags = {
    observe: Flags.boolean({ default: false, description: 'then follow the new job, as builder observe' }),
    json: Flags.boolean({ default: false, description: 'print the new job as JSON' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Retry);
    const s = await this.connect(flags);
    const { job } = await s.peer.call('job.retry', { id: args.job });
    if (flags.json) this.printJson(job);
    else this.log(String(job.id));
    if (flags.observe) {
      const code = await this.follow(s, job.id);
      if (code !== 0) this.exit(code);
    }
  }
}
