import { BuilderError } from '../../protocol/errors.js';
import { checkName } from '../../protocol/names.js';
import { checkAttemptKey } from '../spool/index.js';
import type { CompiledExecutorOptions } from './executor-options.js';

/** What to run for one attempt of a job. Exactly one of `script` and `argv`. */
export interface AttemptSpec {
  readonly jobId: string | number;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly name: string;
  readonly channel: string;
  readonly arch: string;
  /** Shell script text, written to `<workDir>/script` and run by `shell` (or its own `#!` line). */
  readonly script?: string;
  /** A command to execute directly, without a shell. */
  readonly argv?: readonly string[];
  /** Job environment, over the clean base; may not set `BUILDER_*`. */
  readonly env?: Readonly<Record<string, string>>;
  /** Timeout of this attempt; 0 = none; default the executor's `defaultTimeoutMs`. */
  readonly timeoutMs?: number;
  /** The job's weight in slots. Default 1. */
  readonly slots?: number;
  /** First log seq (after a reopened spool: its lastSeq + 1). Default 1. */
  readonly firstSeq?: number;
  /**
   * Fetches the job's input files into `inputDir` (BUILDER_INPUT) before the process starts
   * (the agent plugs the master's download in here). A rejection fails the attempt before it runs.
   * Resolving with 0 says that no file was fetched: the executor then does not index `inputDir`
   * (for input conflicts) at all.
   */
  readonly fetchInputs?: (inputDir: string, signal: AbortSignal) => Promise<number | void>;
  /** Called once with the leader's pid right after the spawn (the agent records it to clean up after a crash). */
  readonly onSpawn?: (pid: number) => void;
}

/** The validated form of an {@link AttemptSpec}. */
export interface CheckedAttemptSpec {
  readonly jobId: string;
  readonly attempt: number;
  readonly name: string;
  readonly channel: string;
  readonly arch: string;
  readonly command: { readonly kind: 'script'; readonly text: string } | { readonly kind: 'argv'; readonly argv: readonly string[] };
  readonly env: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly slots: number;
  readonly firstSeq: number;
  readonly fetchInputs: AttemptSpec['fetchInputs'];
  readonly onSpawn: AttemptSpec['onSpawn'];
}

const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

function invalid(msg: string, hint?: string): never {
  throw new BuilderError('BUILDER_ERR_INVALID_INPUT', msg, hint === undefined ? {} : { hint });
}

/** Validates an attempt spec; throws BUILDER_ERR_INVALID_INPUT / BUILDER_ERR_INVALID_NAME with a clear message. */
export function checkAttemptSpec(spec: AttemptSpec, o: CompiledExecutorOptions): CheckedAttemptSpec {
  const { jobId, attempt } = checkAttemptKey(spec.jobId, spec.attempt);
  const name = checkName('job', spec.name);
  const channel = checkName('channel', spec.channel);
  const arch = checkName('arch', spec.arch);
  let command: CheckedAttemptSpec['command'];
  if (spec.script !== undefined && spec.argv === undefined) {
    if (typeof spec.script !== 'string') invalid('script must be a string');
    if (Buffer.byteLength(spec.script) > o.maxScriptBytes) invalid(`script is over the limit of ${o.maxScriptBytes} bytes`);
    command = { kind: 'script', text: spec.script };
  } else if (spec.argv !== undefined && spec.script === undefined) {
    const argv: unknown = spec.argv;
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a): a is string => typeof a === 'string' && !a.includes('\0'))) {
      invalid('argv must be a non-empty array of strings without NUL');
    }
    command = { kind: 'argv', argv: argv.slice() };
  } else {
    invalid('an attempt needs exactly one of script and argv');
  }
  const env: Record<string, string> = {};
  let envBytes = 0;
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (!ENV_KEY_RE.test(k)) invalid(`job env name ${JSON.stringify(k).slice(0, 80)} is not a valid variable name`);
    // The BUILDER_* variables describe the attempt to the job; a job must not be able to lie to itself about them.
    if (k.startsWith('BUILDER_')) invalid(`job env may not set ${k}`, 'BUILDER_* variables are set by the slave');
    if (typeof v !== 'string' || v.includes('\0')) invalid(`job env ${k} must be a string without NUL`);
    envBytes += k.length + Buffer.byteLength(v) + 2;
    env[k] = v;
  }
  if (envBytes > o.maxEnvBytes) invalid(`job env is over the limit of ${o.maxEnvBytes} bytes`);
  const timeoutMs = spec.timeoutMs ?? o.defaultTimeoutMs;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) invalid('timeoutMs must be a non-negative integer');
  const slots = spec.slots ?? 1;
  if (!Number.isSafeInteger(slots) || slots < 1) invalid('slots must be a positive integer');
  const firstSeq = spec.firstSeq ?? 1;
  if (!Number.isSafeInteger(firstSeq) || firstSeq < 1) invalid('firstSeq must be a positive integer');
  return { jobId, attempt, name, channel, arch, command, env, timeoutMs, slots, firstSeq, fetchInputs: spec.fetchInputs, onSpawn: spec.onSpawn };
}
