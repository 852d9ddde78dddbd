import { Args } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { jobArg } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';

export default class Promote extends ClientCommand {
  static override summary = "Make a succeeded job's images the official release of NAME (admin only).";
  static override examples = ['<%= config.bin %> promote 42 rootfs'];
  static override args = {
    job: jobArg({ required: true, description: 'job id (a succeeded job with images)' }),
    name: Args.string({ required: true, description: 'image name (the job name)' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Promote);
    checkName('image', args.name);
    const s = await this.connect(flags);
    await s.peer.call('image.promote', { jobId: args.job, name: args.name });
    this.log(`job ${args.job} is now the release of ${args.name}`);
  }
}
