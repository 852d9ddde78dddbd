import { Args, Flags } from '@oclif/core';
import { BuilderError } from '../../../protocol/errors.js';
import { jobArg } from '../lib/args.js';
import { ClientCommand } from '../lib/client-command.js';
import { downloadArtifact, pickArtifacts } from '../lib/download.js';
import { bytes } from '../lib/format.js';

export default class Download extends ClientCommand {
  static override summary = "Download a job's artifacts (or one, by NAME) into --out, checking each sha256.";
  static override description =
    'Takes the newest attempt\'s copy of each name. Files land under --out by their artifact name, never outside it; each is written as NAME.part and renamed once its size and sha256 match the master\'s. An existing file is kept unless --force. A progress bar shows on a terminal.';
  static override examples = [
    '<%= config.bin %> download 42',
    '<%= config.bin %> download 42 hello_1.0_amd64.deb --out ./debs',
    '<%= config.bin %> download 42 --out ./out --force --json',
  ];
  static override args = {
    job: jobArg({ required: true, description: 'job id' }),
    name: Args.string({ required: false, description: 'artifact name (see builder artifacts JOB); default: all' }),
  };
  static override flags = {
    out: Flags.string({ default: '.', description: 'directory to write into (made if missing)' }),
    force: Flags.boolean({ default: false, description: 'replace files that already exist' }),
    json: Flags.boolean({ default: false, description: 'print what was written as JSON' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Download);
    const s = await this.connect(flags);
    const { artifacts } = await s.peer.call('artifact.list', { jobId: args.job });
    const all = pickArtifacts(artifacts, args.name);
    // Images the master's retention removed cannot be had; the rest of the job's files can.
    const removed = args.name === undefined ? all.filter((a) => a.removedAt !== undefined) : [];
    const picked = all.filter((a) => !removed.includes(a));
    for (const a of removed) process.stderr.write(`builder: skipped ${a.name}: removed on ${new Date(a.removedAt!).toISOString()} by the image retention\n`);
    if (picked.length === 0 && removed.length > 0) {
      throw new BuilderError('BUILDER_ERR_NOT_FOUND', `every artifact of job ${args.job} was removed by the image retention`);
    }
    if (picked.length === 0) {
      throw args.name !== undefined
        ? new BuilderError('BUILDER_ERR_NOT_FOUND', `job ${args.job} has no artifact named ${args.name}`, { hint: `see: builder artifacts ${args.job}` })
        : new BuilderError('BUILDER_ERR_NOT_FOUND', `job ${args.job} has no artifacts`);
    }
    // A bar only where someone watches: a terminal on stderr, and not in --json mode.
    const tty = process.stderr.isTTY === true && !flags.json;
    const cliProgress = tty ? (await import('cli-progress')).default : undefined;
    const done: Array<{ name: string; path: string; size: number; sha256: string }> = [];
    for (const a of picked) {
      const bar = cliProgress
        ? new cliProgress.SingleBar(
            { format: `${a.name} [{bar}] {percentage}% | {value}/{total} bytes`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
            cliProgress.Presets.shades_classic,
          )
        : undefined;
      bar?.start(a.size, 0);
      let dest: string;
      try {
        dest = await downloadArtifact(s.peer, a, flags.out, { force: flags.force, onProgress: (n) => bar?.update(n) });
      } finally {
        bar?.stop();
      }
      done.push({ name: a.name, path: dest, size: a.size, sha256: a.sha256 });
      if (!flags.json) this.log(`${dest}  ${bytes(a.size)}  sha256 ${a.sha256} ok`);
    }
    if (flags.json) this.printJson(done);
  }
}
