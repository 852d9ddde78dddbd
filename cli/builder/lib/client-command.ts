import { Flags } from '@oclif/core';
import { BuilderCommand } from '../../base-command.js';
import { resolveClientConfig, type ClientConfig } from './client-config.js';
import { connectClient, type ClientSession } from './connect.js';
import { JOB_EXIT_CODES, observeJob } from './observe.js';

/**
 * Base of every `builder` command that talks to the master: the --master and --identity flags
 * with their fallbacks (BUILDER_MASTER, BUILDER_IDENTITY, then the config file in the per-user
 * config directory), one connection per command, closed when the command ends.
 */
export abstract class ClientCommand extends BuilderCommand {
  static override baseFlags = {
    master: Flags.string({
      helpGroup: 'CONNECTION',
      description: "HOST:PORT of the master's main listener [env: BUILDER_MASTER; else config file]",
    }),
    identity: Flags.string({
      helpGroup: 'CONNECTION',
      description: 'identity directory with ca.pem, cert.pem, key.pem [env: BUILDER_IDENTITY; else config file]',
    }),
  };

  private session: ClientSession | undefined;
  private clientConfig: ClientConfig | undefined;

  /** Connects with the resolved settings (flags, environment, config file); closed in finally(). */
  protected async connect(flags: { master?: string | undefined; identity?: string | undefined }): Promise<ClientSession> {
    const cfg = await resolveClientConfig({
      flagMaster: flags.master,
      flagIdentity: flags.identity,
      envMaster: process.env.BUILDER_MASTER,
      envIdentity: process.env.BUILDER_IDENTITY,
      configDir: this.config.configDir,
    });
    this.clientConfig = cfg;
    this.session = await connectClient(cfg);
    return this.session;
  }

  /** A new connection with the settings of connect(), replacing the session's (after the master restarted). */
  private async reconnect(timeoutMs: number): Promise<ClientSession> {
    if (!this.clientConfig) throw new Error('reconnect before connect');
    const s = await connectClient(this.clientConfig, { connectTimeoutMs: timeoutMs });
    this.session?.peer.destroy();
    this.session = s;
    return s;
  }

  /** Prints one JSON document on stdout (the --json form of every listing). */
  protected printJson(v: unknown): void {
    this.log(JSON.stringify(v, null, 2));
  }

  /**
   * Follows a job to its end (see observeJob) and returns the exit code its final state maps to.
   * Ctrl-C stops following and exits 130; the job itself keeps running on the farm. A lost
   * master (restarted) is reconnected to for up to `reconnectForMs` (default 60 s; 0: exit 3 at once).
   */
  protected async follow(session: ClientSession, jobId: number, opts: { attempt?: number | undefined; reconnectForMs?: number | undefined } = {}): Promise<number> {
    const destroy = () => (this.session ?? session).peer.destroy();
    const onSigint = () => {
      process.stderr.write(`\n[builder] stopped observing; job ${jobId} keeps running (builder observe ${jobId} to follow it again)\n`);
      destroy();
      process.exit(130);
    };
    // `builder observe 5 | head`: the reader went away; stop quietly, as a program killed by SIGPIPE would.
    const onStdoutError = (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') return;
      destroy();
      process.exit(141);
    };
    process.once('SIGINT', onSigint);
    process.stdout.on('error', onStdoutError);
    try {
      const color = process.stdout.isTTY === true && process.stderr.isTTY === true && process.env.NO_COLOR === undefined;
      const r = await observeJob({
        peer: session.peer,
        jobId,
        attempt: opts.attempt,
        stdout: process.stdout,
        stderr: process.stderr,
        color,
        reconnect: async (timeoutMs) => (await this.reconnect(timeoutMs)).peer,
        ...(opts.reconnectForMs === undefined ? {} : { reconnectForMs: opts.reconnectForMs }),
      });
      return JOB_EXIT_CODES[r.job.state];
    } finally {
      process.removeListener('SIGINT', onSigint);
      process.stdout.removeListener('error', onStdoutError);
    }
  }

  protected override async finally(err: Error | undefined): Promise<unknown> {
    const s = this.session;
    this.session = undefined;
    // Every call has been answered by now; a plain destroy ends the socket and the heartbeat timer.
    s?.peer.destroy();
    return super.finally(err);
  }
}
