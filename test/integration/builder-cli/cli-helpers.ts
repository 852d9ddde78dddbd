import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { binPath, runBin, type RunResult } from '../../helpers/procs.js';

/**
 * One clear line (plus an optional "Hint:" line) on stderr, no stack trace, the expected
 * non-zero exit code.
 */
export function assertCleanError(r: RunResult, re: RegExp, code?: number): void {
  assert.notEqual(r.code, 0, `expected a failure, got exit 0; stdout: ${r.stdout}`);
  if (code !== undefined) assert.equal(r.code, code, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'stack trace printed');
  const lines = r.stderr.trim().split('\n');
  assert.ok(lines.length <= 2, `more than one line and a hint:\n${r.stderr}`);
  if (lines.length === 2) assert.match(lines[1]!, /^Hint: /);
}

/** Runs `builder CMD` with the connection flags right after the command id (before any `--`). */
export function builderCli(conn: () => string[], baseEnv: () => NodeJS.ProcessEnv) {
  return (args: string[], o: { env?: NodeJS.ProcessEnv; conn?: string[]; timeoutMs?: number } = {}): Promise<RunResult> =>
    runBin('builder', [args[0]!, ...(o.conn ?? conn()), ...args.slice(1)], { env: { NO_COLOR: '1', ...baseEnv(), ...o.env }, timeoutMs: o.timeoutMs ?? 60_000 });
}

/** The job id `builder schedule`/`retry` printed (stdout is just the id). */
export function jobIdOf(r: RunResult): number {
  assert.equal(r.code, 0, `exit ${String(r.code)}: ${r.stderr}`);
  assert.match(r.stdout, /^\d+\n$/, `stdout should be the job id alone: ${JSON.stringify(r.stdout)}`);
  return Number(r.stdout.trim());
}

/**
 * Runs `builder ARGS` on a pseudo-terminal (util-linux `script`), as a person at a terminal
 * would: stdout and stderr are both the terminal, merged into `out`.
 */
export function builderOnTty(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<{ code: number | null; out: string }> {
  const q = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;
  const cmd = [process.execPath, binPath('builder'), ...args].map(q).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, TERM: 'xterm', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}
