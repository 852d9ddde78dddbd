import { BuilderError } from '../../protocol/errors.js';
import { checkName, checkRelativePath } from '../../protocol/names.js';
import type { CompiledStoreOptions } from './store-options.js';
import type { InputFile, JobCommand, NewJob } from './types.js';

/** A {@link NewJob} with every default applied, validated. */
export interface CheckedJob {
  name: string;
  channel: string;
  arch: string;
  slots: number;
  priority: number;
  command: JobCommand;
  inputs: InputFile[];
  env: Record<string, string>;
  timeoutMs: number;
  maxAttempts: number;
}

/** Job priorities are integers in this range. */
export const MIN_PRIORITY = -1_000_000;
export const MAX_PRIORITY = 1_000_000;

const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SHA256_RE = /^[0-9a-f]{64}$/;

function invalid(msg: string): never {
  throw new BuilderError('BUILDER_ERR_INVALID_INPUT', msg);
}

function int(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) invalid(`${name} must be an integer in ${min}..${max}`);
  return v;
}

/**
 * Validates a job submission (or a schedule template) and applies the defaults. Throws
 * BUILDER_ERR_INVALID_NAME for a bad name, channel or arch, BUILDER_ERR_INVALID_INPUT otherwise.
 */
export function checkNewJob(spec: NewJob, o: CompiledStoreOptions): CheckedJob {
  if (spec === null || typeof spec !== 'object') invalid('a job must be an object');
  const name = checkName('job', spec.name);
  const channel = checkName('channel', spec.channel);
  const arch = checkName('arch', spec.arch);
  const slots = int('slots', spec.slots ?? 1, 1, o.maxSlots);
  const priority = int('priority', spec.priority ?? 0, MIN_PRIORITY, MAX_PRIORITY);
  const timeoutMs = int('timeoutMs', spec.timeoutMs ?? o.defaultTimeoutMs, 0, Number.MAX_SAFE_INTEGER);
  const maxAttempts = int('maxAttempts', spec.maxAttempts ?? o.defaultMaxAttempts, 1, o.maxAttemptsLimit);

  const cmd: unknown = spec.command;
  let command: JobCommand;
  if (cmd !== null && typeof cmd === 'object' && (cmd as { kind?: unknown }).kind === 'script') {
    const text = (cmd as { text?: unknown }).text;
    if (typeof text !== 'string' || text.length === 0) invalid('command.text must be a non-empty string');
    if (Buffer.byteLength(text) > o.maxScriptBytes) invalid(`script is over the limit of ${o.maxScriptBytes} bytes`);
    command = { kind: 'script', text };
  } else if (cmd !== null && typeof cmd === 'object' && (cmd as { kind?: unknown }).kind === 'argv') {
    const argv = (cmd as { argv?: unknown }).argv;
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a): a is string => typeof a === 'string' && !a.includes('\0'))) {
      invalid('command.argv must be a non-empty array of strings without NUL');
    }
    if (argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0) > o.maxScriptBytes) invalid(`argv is over the limit of ${o.maxScriptBytes} bytes`);
    command = { kind: 'argv', argv: argv.slice() };
  } else {
    invalid('command must be {kind: "script", text} or {kind: "argv", argv}');
  }

  const env: Record<string, string> = {};
  let envBytes = 0;
  const rawEnv: unknown = spec.env ?? {};
  if (rawEnv === null || typeof rawEnv !== 'object' || Array.isArray(rawEnv)) invalid('env must be an object of strings');
  for (const [k, v] of Object.entries(rawEnv as Record<string, unknown>)) {
    if (!ENV_KEY_RE.test(k)) invalid(`env name ${JSON.stringify(k).slice(0, 80)} is not a valid variable name`);
    // BUILDER_* describe the attempt to the job; the slave sets them and refuses them too.
    if (k.startsWith('BUILDER_')) invalid(`env may not set ${k}`);
    if (typeof v !== 'string' || v.includes('\0')) invalid(`env ${k} must be a string without NUL`);
    envBytes += k.length + Buffer.byteLength(v) + 2;
    env[k] = v;
  }
  if (envBytes > o.maxEnvBytes) invalid(`env is over the limit of ${o.maxEnvBytes} bytes`);

  const rawInputs: unknown = spec.inputs ?? [];
  if (!Array.isArray(rawInputs)) invalid('inputs must be an array');
  if (rawInputs.length > o.maxInputs) invalid(`a job has at most ${o.maxInputs} input files`);
  const seen = new Set<string>();
  const inputs: InputFile[] = rawInputs.map((f: unknown) => {
    if (f === null || typeof f !== 'object') invalid('an input file must be {name, sha256, size}');
    const { name: n, sha256, size } = f as Record<string, unknown>;
    const rel = checkRelativePath(n as string);
    if (seen.has(rel)) invalid(`input ${rel} is listed twice`);
    seen.add(rel);
    if (typeof sha256 !== 'string' || !SHA256_RE.test(sha256)) invalid(`input ${rel}: sha256 must be 64 lowercase hex digits`);
    return { name: rel, sha256, size: int(`input ${rel}: size`, size, 0, Number.MAX_SAFE_INTEGER) };
  });
  return { name, channel, arch, slots, priority, command, inputs, env, timeoutMs, maxAttempts };
}
