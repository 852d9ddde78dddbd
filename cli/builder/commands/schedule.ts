import { readFile } from 'node:fs/promises';
import { Flags } from '@oclif/core';
import type { ParamsOf } from '../../../protocol/catalogue.js';
import { BuilderError } from '../../../protocol/errors.js';
import { checkName } from '../../../protocol/names.js';
import { parseDuration } from '../../duration.js';
import { ClientCommand } from '../lib/client-command.js';
import { prepareInputs, uploadInputs } from '../lib/inputs.js';

type NewJob = ParamsOf<'job.submit'>['job'];

/** Largest --script accepted (the catalogue's limit on a script's text). */
const MAX_SCRIPT_BYTES = 1024 * 1024;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export default class Schedule extends ClientCommand {
  static override summary = 'Submit a job (or, with --cron, a recurring one) and print its id.';
  static override description = `The job runs --script FILE (a script with its own #! line, or sh), or the command after "--". Input files are uploaded first (resumable, sha256-checked); the job finds them in $BUILDER_INPUT and leaves its artifacts in $BUILDER_OUTPUT.

Prints the job id (the schedule id with --cron) on stdout. With --observe it then follows the job as \`builder observe\` does, and exits with the job's outcome.`;
  static override examples = [
    '<%= config.bin %> schedule --name hello --channel bookworm --arch amd64 --script build.sh',
    '<%= config.bin %> schedule --name hello --channel bookworm --arch any --input hello.tar.gz --env DEB_BUILD_OPTIONS=nocheck --script build.sh --observe',
    '<%= config.bin %> schedule --name uname --channel demo --arch any -- uname -a',
    '<%= config.bin %> schedule --name nightly --channel bookworm --arch amd64 --cron "0 3 * * *" --tz Europe/Paris --script nightly.sh',
  ];
  static override strict = false;
  static override flags = {
    name: Flags.string({ required: true, description: 'job name (also the image name of its non-package artifacts)' }),
    channel: Flags.string({ required: true, description: 'channel: which slaves may run it' }),
    arch: Flags.string({ required: true, description: 'architecture it needs, or "any"' }),
    slots: Flags.integer({ min: 1, max: 4096, description: 'slots it takes on a slave [default: 1]' }),
    priority: Flags.integer({ description: 'higher runs first [default: 0]' }),
    timeout: Flags.string({ description: 'kill it after this long: 30s, 15m, 2h [default: the master\'s]' }),
    retries: Flags.integer({ min: 0, max: 999, description: 'extra attempts if its slave is lost [default: the master\'s]' }),
    env: Flags.string({ multiple: true, description: 'K=V in the job\'s environment (repeatable)' }),
    input: Flags.string({ multiple: true, description: 'input file, uploaded to $BUILDER_INPUT (repeatable)' }),
    cron: Flags.string({
      description: 'make it recurring: 5-field cron expression (minute hour day month weekday); 6 fields (a leading seconds field) if the master runs with --cron-seconds',
    }),
    tz: Flags.string({ description: 'time zone of --cron [default: UTC]', dependsOn: ['cron'] }),
    script: Flags.string({ description: 'script file to run (else the command after --)' }),
    observe: Flags.boolean({ default: false, description: 'then follow the job, as builder observe', exclusive: ['cron'] }),
    json: Flags.boolean({ default: false, description: 'print the job (or schedule) as JSON' }),
  };

  async run(): Promise<void> {
    const { flags, argv } = await this.parse(Schedule);
    // Everything is checked here, before anything is uploaded or queued.
    const dash = this.argv.indexOf('--');
    const cmd = dash >= 0 ? this.argv.slice(dash + 1) : [];
    if (argv.length !== cmd.length) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `unexpected argument ${JSON.stringify(String(argv[0]))}`, { hint: 'put the command to run after "--", e.g. -- make -j4' });
    }
    if (flags.script !== undefined && cmd.length > 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'give either --script FILE or a command after --, not both');
    if (flags.script === undefined && cmd.length === 0) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'nothing to run', { hint: 'pass --script FILE, or the command after --, e.g. -- make -j4' });
    }
    checkName('job', flags.name);
    checkName('channel', flags.channel);
    checkName('arch', flags.arch);
    let command: NewJob['command'];
    if (flags.script !== undefined) {
      let text: string;
      try {
        text = await readFile(flags.script, 'utf8');
      } catch (e) {
        throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `cannot read script file ${flags.script} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      }
      if (text.length === 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `script file ${flags.script} is empty`);
      if (Buffer.byteLength(text) > MAX_SCRIPT_BYTES) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `script file ${flags.script} is over ${MAX_SCRIPT_BYTES} bytes`, { hint: 'ship large files as --input and run a small script' });
      command = { kind: 'script', text };
    } else {
      command = { kind: 'argv', argv: cmd };
    }
    const env: Record<string, string> = {};
    for (const kv of flags.env ?? []) {
      const eq = kv.indexOf('=');
      const k = eq > 0 ? kv.slice(0, eq) : '';
      if (!ENV_NAME_RE.test(k)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `invalid --env ${JSON.stringify(kv)}`, { hint: 'use NAME=VALUE, NAME made of letters, digits and _' });
      env[k] = kv.slice(eq + 1);
    }
    const timeoutMs = flags.timeout !== undefined ? parseDuration(flags.timeout, '--timeout') : undefined;
    // cron-parser is loaded only when a schedule needs it.
    const { checkCronExpression, checkTimeZone } = await import('../../../master/cron/index.js');
    const tz = flags.tz !== undefined ? checkTimeZone(flags.tz) : undefined;
    // Seconds are the master's to allow (master run --cron-seconds): checked here for syntax only.
    const cron = flags.cron !== undefined ? checkCronExpression(flags.cron, { allowSeconds: true, tz: tz ?? 'UTC' }) : undefined;
    const inputs = await prepareInputs(flags.input ?? []);

    const job: NewJob = {
      name: flags.name,
      channel: flags.channel,
      arch: flags.arch,
      command,
      ...(flags.slots !== undefined ? { slots: flags.slots } : {}),
      ...(flags.priority !== undefined ? { priority: flags.priority } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(flags.retries !== undefined ? { maxAttempts: flags.retries + 1 } : {}),
      ...(Object.keys(env).length > 0 ? { env } : {}),
      ...(inputs.length > 0 ? { inputs: inputs.map((i) => ({ name: i.name, sha256: i.sha256, size: i.size })) } : {}),
    };

    const s = await this.connect(flags);
    await uploadInputs(s.peer, inputs, {
      onFile: (f, resumedAt) => {
        if (!flags.json) this.logToStderr(`uploaded ${f.name} (${f.size} bytes${resumedAt > 0 ? `, ${resumedAt} already on the master` : ''})`);
      },
    });
    if (cron !== undefined) {
      const { schedule } = await s.peer.call('schedule.create', { cron, template: job, ...(tz !== undefined ? { tz } : {}) });
      if (flags.json) this.printJson(schedule);
      else this.log(schedule.id);
      return;
    }
    const { job: queued } = await s.peer.call('job.submit', { job });
    if (flags.json) this.printJson(queued);
    else this.log(String(queued.id));
    if (flags.observe) {
      const code = await this.follow(s, queued.id);
      if (code !== 0) this.exit(code);
    }
  }
}
