import { Command, Flags } from '@oclif/core';
import { pino } from 'pino';
import { IncomingWatcher, RepoBuilder } from '../../../repo-builder/index.js';

/** `repo-builder run`: publish what is in incoming, then (without --once) keep watching it. */
export default class Run extends Command {
  static override description = 'Publish the packages the master files into its incoming directory as APT and RPM repositories';

  static override examples = [
    '<%= config.bin %> run --incoming /srv/builder/incoming --repo /srv/repo',
    '<%= config.bin %> run --incoming /srv/builder/incoming --repo /srv/repo --once --json',
    '<%= config.bin %> run --incoming in --repo repo --gpg-key 0xABCDEF --gpg-home /etc/builder/gnupg --keep 2',
  ];

  static override flags = {
    incoming: Flags.string({ description: "the master's incoming directory", required: true }),
    repo: Flags.string({ description: 'repository root (deb/ and rpm/ are written under it)', required: true }),
    state: Flags.string({ description: 'state directory (default <repo>/.repo-builder)' }),
    once: Flags.boolean({ description: 'handle what is there, then exit', default: false }),
    keep: Flags.integer({ description: 'versions kept per (channel, name, arch)', default: 1, min: 1 }),
    'grace-ms': Flags.integer({ description: 'how long unreferenced files stay before deletion', default: 600_000, min: 0 }),
    'debounce-ms': Flags.integer({ description: 'quiet time after a listing before publishing', default: 300, min: 0 }),
    'gpg-key': Flags.string({ description: 'gpg key id that signs InRelease, Release.gpg and repomd.xml.asc' }),
    'gpg-home': Flags.string({ description: 'gpg home directory holding the key' }),
    'deb-arch': Flags.string({ description: 'APT architecture always published (repeatable)', multiple: true, default: ['amd64'] }),
    origin: Flags.string({ description: 'Release Origin/Label (never change it once published)', default: 'Builder' }),
    'no-xz': Flags.boolean({ description: 'do not write Packages.xz', default: false }),
    'xz-preset': Flags.integer({ description: 'xz preset for Packages.xz', default: 6, min: 0, max: 9 }),
    'no-fsync': Flags.boolean({ description: 'do not fsync index files before renaming them', default: false }),
    'log-level': Flags.string({ description: 'pino log level', default: 'info', options: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] }),
    json: Flags.boolean({ description: 'with --once: print the run summary as JSON', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Run);
    const logger = pino({ level: flags['log-level'], base: { proc: 'repo-builder' } }, pino.destination(2));
    let builder: RepoBuilder;
    try {
      builder = await RepoBuilder.open({
        incomingDir: flags.incoming,
        repoDir: flags.repo,
        stateDir: flags.state,
        keep: flags.keep,
        graceMs: flags['grace-ms'],
        debounceMs: flags['debounce-ms'],
        gpgKey: flags['gpg-key'],
        gpgHome: flags['gpg-home'],
        debArchitectures: flags['deb-arch'],
        origin: flags.origin,
        xz: !flags['no-xz'],
        xzPreset: flags['xz-preset'],
        fsync: !flags['no-fsync'],
        logger,
      });
    } catch (e) {
      this.error(e instanceof Error ? e.message : String(e), { exit: 2 });
    }
    if (flags.once) {
      try {
        const summary = await builder.runOnce();
        if (flags.json) this.log(JSON.stringify(summary));
        else this.log(`published ${summary.published.length} batch(es), rejected ${summary.rejected.length}, added ${summary.added}, removed ${summary.removed} in ${summary.ms} ms`);
      } catch (e) {
        this.error(e instanceof Error ? e.message : String(e), { exit: 1 });
      } finally {
        await builder.close();
      }
      return;
    }
    const watcher = new IncomingWatcher(builder, logger);
    await watcher.start();
    logger.info({ incoming: builder.cfg.incomingDir, repo: builder.cfg.repoDir }, 'watching');
    await new Promise<void>((resolve) => {
      const stop = (): void => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await watcher.close();
    await builder.close();
  }
}
