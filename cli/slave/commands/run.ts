import { arch as hostArch } from 'node:os';
import { Flags } from '@oclif/core';
import { BuilderError } from '../../../protocol/errors.js';
import { SlaveRuntime } from '../../../slave/index.js';
import { BuilderCommand, parseDuration } from '../../base-command.js';
import { startDaemonIdleTuning } from '../../idle-tuning.js';

/** The machine's architecture in distribution terms (Debian's amd64 is x86_64 here, as rpm says). */
function defaultArch(): string {
  const a = hostArch();
  return a === 'x64' ? 'x86_64' : a === 'arm64' ? 'aarch64' : a === 'ia32' ? 'i686' : a;
}

function list(s: string | undefined): string[] {
  return (s ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

export default class Run extends BuilderCommand {
  static override releasesOptimizerItself = true;
  static override summary = 'Run the slave: connect to the master, subscribe to channels, run jobs and deliver their logs and artifacts.';
  static override description =
    'Stays connected (reconnecting with back-off), runs up to --capacity slots of jobs at once, and on SIGTERM or SIGINT drains: it takes nothing new, lets running jobs finish for up to --drain-timeout, kills the rest (reported cancelled, so the master runs them again), delivers what it owes the master, and exits 0.';
  static override examples = [
    '<%= config.bin %> run --dir /var/lib/builder-slave --master builder.example.org:7400 --channels main,updates --arch x86_64,noarch --capacity 4',
  ];
  static override flags = {
    dir: Flags.string({ required: true, description: 'slave data directory (made by slave enroll)' }),
    master: Flags.string({ required: true, description: "HOST:PORT of the master's main listener" }),
    channels: Flags.string({ required: true, description: 'comma-separated channels whose jobs this slave runs, e.g. main,updates' }),
    arch: Flags.string({ description: `comma-separated architectures this slave runs (default: this machine's, ${defaultArch()})` }),
    capacity: Flags.string({ default: '1', description: 'slots run at once (a job weighs its slots, default 1)' }),
    'drain-timeout': Flags.string({ default: '5m', description: 'on SIGTERM: how long running jobs may go on before they are killed (the master runs them again)' }),
    'deliver-timeout': Flags.string({ default: '60s', description: 'on SIGTERM: how long to wait for logs, artifacts and outcomes to reach the master' }),
    'kill-grace': Flags.string({ default: '10s', description: 'between SIGTERM and SIGKILL to a job process group (timeout, cancel)' }),
    spawner: Flags.string({
      options: ['auto', 'native', 'node'],
      default: 'auto',
      description: 'how jobs start: native (vfork, from the addon built at install), node (child_process, which forks the slave), auto (native when built)',
    }),
    cgroups: Flags.string({
      options: ['auto', 'on', 'off'],
      default: 'auto',
      description:
        "a cgroup per job, so that cancel, timeout and the job's end kill every process it started, also those that left its process group: on (or refuse to start), off, auto (when cgroup v2 is mounted, the slave's cgroup is writable: root, or systemd with Delegate=yes, Linux is 5.14+ and the native spawner is used)",
    }),
    'keep-work-dirs': Flags.boolean({ default: false, description: 'keep each job work dir after the master has its outcome' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Run);
    const capacity = Number(flags.capacity);
    if (!/^\d+$/.test(flags.capacity.trim())) {
      throw new BuilderError('BUILDER_ERR_CONFIG', `invalid --capacity ${JSON.stringify(flags.capacity)}: must be a whole number of slots from 1 to 4096`, { hint: 'e.g. --capacity 4' });
    }
    const log = this.makeLogger();
    const runtime = new SlaveRuntime({
      dir: flags.dir,
      master: flags.master,
      channels: list(flags.channels),
      arches: flags.arch === undefined ? [defaultArch()] : list(flags.arch),
      capacity,
      drainTimeoutMs: parseDuration(flags['drain-timeout'], '--drain-timeout'),
      deliverTimeoutMs: parseDuration(flags['deliver-timeout'], '--deliver-timeout'),
      executor: {
        killGraceMs: parseDuration(flags['kill-grace'], '--kill-grace'),
        spawner: flags.spawner as 'auto' | 'native' | 'node',
        cgroups: flags.cgroups as 'auto' | 'on' | 'off',
      },
      keepWorkDirs: flags['keep-work-dirs'],
      logger: log,
    });
    // Signals are caught before the first connection, so a SIGTERM during start-up still drains.
    const stopped = new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        log.info({ signal: sig }, 'stopping');
        runtime.shutdown().then(
          () => resolve(),
          (e: unknown) => {
            log.error({ err: (e as Error).message }, 'error while stopping');
            resolve();
          },
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
    await runtime.start();
    const idle = startDaemonIdleTuning(log);
    await stopped;
    idle.stop();
  }
}
