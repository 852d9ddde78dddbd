import { Flags } from '@oclif/core';
import { Master } from '../../../master/index.js';
import { BuilderCommand } from '../../base-command.js';
import { startDaemonIdleTuning } from '../../idle-tuning.js';
import { parseDuration, wholeNumber } from '../../duration.js';
import { BuilderError } from '../../../protocol/errors.js';

export default class Run extends BuilderCommand {
  static override releasesOptimizerItself = true;
  static override summary = 'Run the master: the mutual-TLS listener for slaves and the CLI, the enrollment listener, and the job dispatcher.';
  static override examples = [
    '<%= config.bin %> run --dir /var/lib/builder',
    '<%= config.bin %> run --dir ./farm --listen 0.0.0.0:7400 --enroll-listen 0.0.0.0:7401',
    '<%= config.bin %> run --dir ./farm --slave-grace 2m --accept-timeout 30s --incoming /srv/builder/incoming',
    '<%= config.bin %> run --dir ./farm --cron-seconds',
  ];
  static override flags = {
    dir: Flags.string({ required: true, description: 'master data directory (made by master init-ca)' }),
    listen: Flags.string({ default: '127.0.0.1:7400', description: 'HOST:PORT for slaves and the CLI (mutual TLS)' }),
    'enroll-listen': Flags.string({ default: '127.0.0.1:7401', description: 'HOST:PORT for enrollment (server TLS only)' }),
    'slave-grace': Flags.string({ default: '60s', description: 'how long a disconnected slave keeps its jobs before they are requeued' }),
    'accept-timeout': Flags.string({ default: '15s', description: 'how long a slave has to accept an assignment' }),
    'timeout-margin': Flags.string({ default: '60s', description: "master-side timeout: a job's own timeout plus this margin" }),
    'cancel-timeout': Flags.string({ default: '60s', description: 'how long to wait for a slave to confirm a kill before freeing its slots' }),
    incoming: Flags.string({ description: "the repo-builder's incoming directory (default DIR/incoming)" }),
    'log-retention': Flags.string({
      description: 'remove the log of an attempt this long after it ended, e.g. 30d (checked hourly; default: keep logs forever)',
    }),
    'image-retention': Flags.string({
      description: "remove a job's images once the newest of them is this old, e.g. 90d, except those of the newest --image-keep jobs of each name and the promoted one (checked hourly; default: keep images forever)",
    }),
    'image-keep': Flags.string({ description: 'with --image-retention: the images of the newest this many succeeded jobs of each name are kept whatever their age (default 1)' }),
    'input-retention': Flags.string({
      description: 'remove an uploaded input file once unused this long (not uploaded, found by input.begin, or named by a submitted job or a new schedule), e.g. 30d, unless a job that may still run or a schedule names it (checked hourly; default: keep inputs forever)',
    }),
    'job-retention': Flags.string({
      description: 'remove a job this long after it ended, e.g. 1y, with its attempts, events, logs, packages, images and uploads, except the promoted job of each image name (checked hourly; default: keep jobs forever)',
    }),
    'cron-seconds': Flags.boolean({
      default: false,
      description: 'accept new schedules with a leading seconds field (six-field cron expressions, @secondly)',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Run);
    const log = this.makeLogger();
    const master = new Master({
      dir: flags.dir,
      listen: flags.listen,
      enrollListen: flags['enroll-listen'],
      slaveGraceMs: parseDuration(flags['slave-grace'], '--slave-grace'),
      acceptTimeoutMs: parseDuration(flags['accept-timeout'], '--accept-timeout'),
      timeoutMarginMs: parseDuration(flags['timeout-margin'], '--timeout-margin'),
      cancelTimeoutMs: parseDuration(flags['cancel-timeout'], '--cancel-timeout'),
      ...(flags.incoming === undefined ? {} : { incomingDir: flags.incoming }),
      ...(flags['log-retention'] === undefined ? {} : { logRetentionMs: parseDuration(flags['log-retention'], '--log-retention') }),
      ...(flags['image-retention'] === undefined ? {} : { imageRetentionMs: parseDuration(flags['image-retention'], '--image-retention') }),
      ...(flags['image-keep'] === undefined ? {} : { imageKeep: imageKeep(flags['image-keep'], flags['image-retention']) }),
      ...(flags['input-retention'] === undefined ? {} : { inputRetentionMs: parseDuration(flags['input-retention'], '--input-retention') }),
      ...(flags['job-retention'] === undefined ? {} : { jobRetentionMs: parseDuration(flags['job-retention'], '--job-retention') }),
      // Off by default: a farm schedules builds, and a six-field typo would queue a job a second.
      cron: { allowSeconds: flags['cron-seconds'] },
      logger: log,
    });
    await master.start();
    const idle = startDaemonIdleTuning(log);
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        log.info({ signal: sig }, 'stopping');
        master.stop().then(resolve, resolve);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    idle.stop();
  }
}

/** --image-keep, which means something only with --image-retention. */
function imageKeep(keep: string, retention: string | undefined): number {
  if (retention === undefined) throw new BuilderError('BUILDER_ERR_CONFIG', '--image-keep applies to the image retention, which is off', { hint: 'add --image-retention, e.g. --image-retention 90d' });
  return wholeNumber(keep, '--image-keep');
}
