import { Flags } from '@oclif/core';
import { checkName } from '../../../protocol/names.js';
import { ClientCommand } from '../lib/client-command.js';
import { outcome, table, when } from '../lib/format.js';

const STATES = ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;

export default class Jobs extends ClientCommand {
  static override summary = 'List jobs, newest first.';
  static override examples = [
    '<%= config.bin %> jobs',
    '<%= config.bin %> jobs --state queued --channel bookworm',
    '<%= config.bin %> jobs --state failed --limit 5 --json',
  ];
  static override flags = {
    state: Flags.string({ options: [...STATES], description: 'only jobs in this state' }),
    channel: Flags.string({ description: 'only jobs of this channel' }),
    limit: Flags.integer({ min: 1, max: 10_000, default: 50, description: 'at most this many jobs' }),
    json: Flags.boolean({ default: false, description: 'print JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Jobs);
    if (flags.channel !== undefined) checkName('channel', flags.channel);
    const s = await this.connect(flags);
    const { jobs } = await s.peer.call('job.list', {
      limit: flags.limit,
      ...(flags.state ? { state: flags.state as (typeof STATES)[number] } : {}),
      ...(flags.channel ? { channel: flags.channel } : {}),
    });
    if (flags.json) return this.printJson(jobs);
    if (jobs.length === 0) {
      this.log('no jobs');
      return;
    }
    this.log(
      table(
        ['id', 'state', 'name', 'channel', 'arch', 'slave', 'created', 'outcome'],
        jobs.map((j) => [String(j.id), j.state, j.name, j.channel, j.arch, j.slave ?? '-', when(j.createdAt), outcome(j) || '-']),
      ),
    );
  }
}
