import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** The package root (two levels above dist/test/helpers). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export function binPath(bin: 'master' | 'slave' | 'builder' | 'repo-builder'): string {
  return `${ROOT}bin/${bin}.js`;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a bin to completion (bounded by timeoutMs, then SIGKILL). */
export function runBin(bin: Parameters<typeof binPath>[0], args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [binPath(bin), ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A long-running bin whose output is collected; `waitFor` resolves when a line matches. */
export class RunningBin {
  readonly child: ChildProcess;
  /** stdout and stderr as they arrived, interleaved. */
  out = '';
  /** stdout alone. */
  stdout = '';
  /** stderr alone. */
  stderr = '';
  private waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];

  constructor(bin: Parameters<typeof binPath>[0], args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [binPath(bin), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer) => {
      this.out += d.toString();
      this.waiters = this.waiters.filter((w) => {
        const m = this.out.match(w.re);
        if (m) w.resolve(m);
        return !m;
      });
    };
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d.toString();
      onData(d);
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      onData(d);
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  waitFor(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const m = this.out.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${re} in:\n${this.out.slice(-2000)}`)), timeoutMs);
      this.waiters.push({
        re,
        resolve: (mm) => {
          clearTimeout(t);
          resolve(mm);
        },
      });
    });
  }

  /** Sends a signal and waits for exit (SIGKILL after timeoutMs). */
  stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) {
      return Promise.resolve({ code: this.child.exitCode, signal: this.child.signalCode });
    }
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }, timeoutMs);
      this.child.once('exit', (code, sig) => {
        clearTimeout(t);
        resolve({ code, signal: sig });
      });
      try {
        process.kill(this.pid, signal);
      } catch {
        /* already gone */
      }
    });
  }
}

/**
 * True if `pid` is a live process. A zombie counts as dead: it has exited and only waits to be
 * reaped by its (new) parent, which in a container may never happen.
 */
export async function isAlive(pid: number): Promise<boolean> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}
