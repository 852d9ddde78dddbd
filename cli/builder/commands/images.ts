import { Args, Flags } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { ClientCommand } from '../lib/client-command.js';
import { bytes, table, when } from '../lib/format.js';

export default class Images extends ClientCommand {
  static override summary = 'List images (non-package artifacts) by job name, newest first; * marks the promoted release.';
  static override examples = ['<%= config.bin %> images', '<%= config.bin %> images rootfs', '<%= config.bin %> images rootfs --json'];
  static override args = { name: Args.string({ required: false, description: 'only images of this job name' }) };
  static override flags = { json: Flags.boolean({ default: false, description: 'print JSON' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Images);
    if (args.name !== undefined) checkName('image', args.name);
    const s = await this.connect(flags);
    const { images } = await s.peer.call('image.list', args.name !== undefined ? { name: args.name } : {});
    if (flags.json) return this.printJson(images);
    if (images.length === 0) {
      this.log(args.name !== undefined ? `no images named ${args.name}` : 'no images');
      return;
    }
    this.log(
      table(
        ['', 'name', 'job', 'created', 'files', 'size'],
        images.map((i) => [i.promoted ? '*' : '', i.name, String(i.jobId), when(i.createdAt), i.files.map((f) => f.name).join(', '), bytes(i.files.reduce((n, f) => n + f.size, 0))]),
      ),
    );
  }
}
