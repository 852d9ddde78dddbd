import { Flags } from '@oclif/core';
import { jobArg, parseReconnectFor } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';

export default class Observe extends ClientCommand {
  static override summary = "Replay a job's log, follow it live, and exit with the job's outcome.";
  static override description = `Writes the job's stdout to stdout and its stderr to stderr, in the order the job wrote them (on a terminal, stderr is shown in red), and state changes as "[builder] ..." lines on stderr. Works on a finished job too (it replays the log). Ctrl-C stops observing; the job keeps running.

When the master goes away while following (it restarted), observe reconnects with a growing pause (0.2 s doubling to 5 s) for up to --reconnect-for, says so on stderr, and resumes at the first record it has not printed: nothing is printed twice or lost. If the master stays away, it exits 3.

Exit codes: 0 succeeded, 10 failed, 11 timed out, 12 cancelled, 130 stopped with Ctrl-C; 2-5 for errors of the command itself (see docs/cli.md).`;
  static override examples = [
    '<%= config.bin %> observe 42',
    '<%= config.bin %> observe 42 --attempt 1 > build.log',
    '<%= config.bin %> observe 42 --master builder.example.org:7400 --identity ~/.builder/alice',
    '<%= config.bin %> observe 42 --reconnect-for 10m',
  ];
  static override args = { job: jobArg({ required: true, description: 'job id' }) };
  static override flags = {
    attempt: Flags.integer({ min: 1, description: 'replay this attempt instead of the latest' }),
    'reconnect-for': Flags.string({ default: '60s', description: 'when the master goes away, how long to try to reconnect (0: exit 3 at once)' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Observe);
    const reconnectForMs = parseReconnectFor(flags['reconnect-for']);
    const s = await this.connect(flags);
    const code = await this.follow(s, args.job, { attempt: flags.attempt, reconnectForMs });
    if (code !== 0) this.exit(code);
  }
}
