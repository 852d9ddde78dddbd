import { Flags } from '@oclif/core';
import { jobArg } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';
import { commandText, duration, outcome, table, when } from '../lib/format.js';

export default class Job extends ClientCommand {
  static override summary = 'Show a job, its attempts and, while it is queued, why it is not running.';
  static override examples = ['<%= config.bin %> job 42', '<%= config.bin %> job 42 --json'];
  static override args = { job: jobArg({ required: true, description: 'job id' }) };
  static override flags = { json: Flags.boolean({ default: false, description: 'print JSON (job, attempts, waiting)' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Job);
    const s = await this.connect(flags);
    const r = await s.peer.call('job.get', { id: args.job });
    if (flags.json) return this.printJson(r);
    const j = r.job;
    const rows: Array<[string, string]> = [
      ['job', `${j.id} (${j.name})`],
      ['state', j.state + (outcome(j) ? ` (${outcome(j)})` : '')],
      ['channel', j.channel],
      ['arch', j.arch],
      ['slots', String(j.slots)],
      ['priority', String(j.priority)],
      ['command', commandText(j.command)],
      ['inputs', j.inputs.length === 0 ? '-' : j.inputs.map((i) => i.name).join(', ')],
      ['env', Object.keys(j.env).length === 0 ? '-' : Object.keys(j.env).join(', ')],
      ['timeout', j.timeoutMs > 0 ? duration(j.timeoutMs) : 'none'],
      ['attempt', `${j.attempt} of at most ${j.maxAttempts}`],
      ['slave', j.slave ?? '-'],
      ['schedule', j.scheduleId ?? '-'],
      ['created', when(j.createdAt)],
      ['started', when(j.startedAt)],
      ['ended', when(j.endedAt)],
    ];
    if (r.waiting !== null) rows.push(['waiting', r.waiting]);
    for (const [k, v] of rows) this.log(`${`${k}:`.padEnd(10)} ${v}`);
    if (r.attempts.length > 0) {
      this.log('');
      this.log(
        table(
          ['attempt', 'slave', 'state', 'dispatched', 'ended', 'outcome'],
          r.attempts.map((a) => [String(a.attempt), a.slave, a.state + (a.setupFailure ? ' (setup)' : ''), when(a.dispatchedAt), when(a.endedAt), outcome(a) || '-']),
        ),
      );
    }
  }
}
