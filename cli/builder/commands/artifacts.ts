import { Flags } from '@oclif/core';
import { jobArg } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';
import { bytes, table } from '../lib/format.js';

export default class Artifacts extends ClientCommand {
  static override summary = "List a job's artifacts (every attempt) with size, sha256 and kind.";
  static override examples = ['<%= config.bin %> artifacts 42', '<%= config.bin %> artifacts 42 --json'];
  static override args = { job: jobArg({ required: true, description: 'job id' }) };
  static override flags = { json: Flags.boolean({ default: false, description: 'print JSON' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Artifacts);
    const s = await this.connect(flags);
    const { artifacts } = await s.peer.call('artifact.list', { jobId: args.job });
    if (flags.json) return this.printJson(artifacts);
    if (artifacts.length === 0) {
      this.log(`job ${args.job} has no artifacts`);
      return;
    }
    this.log(
      table(
        ['attempt', 'kind', 'size', 'sha256', 'name'],
        artifacts.map((a) => [String(a.attempt), a.kind, bytes(a.size), a.sha256, a.removedAt === undefined ? a.name : `${a.name} (removed ${new Date(a.removedAt).toISOString().slice(0, 10)})`]),
      ),
    );
  }
}
