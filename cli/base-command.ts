import { Command } from '@oclif/core';
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import { ErrorCodes, isBuilderError } from '../protocol/errors.js';
import { RpcCallError } from '../protocol/rpc-peer.js';
import { releaseOptimizer } from '../protocol/v8-optimizer.js';

/**
 * Base for every Builder command: errors become one clear line with a hint and a non-zero exit,
 * never a stack trace.
 */
export abstract class BuilderCommand extends Command {
  /**
   * True for the daemons (`master run`, `slave run`): they let V8's optimizer go only once they
   * are busy (cli/idle-tuning.ts). Every other command lets it go before its `run`.
   */
  static releasesOptimizerItself = false;

  override async init(): Promise<void> {
    await super.init();
    if (!(this.constructor as typeof BuilderCommand).releasesOptimizerItself) releaseOptimizer();
  }

  protected override async catch(err: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<unknown> {
    // oclif's own errors (bad flags, exit) already print cleanly.
    if (err.oclif) return super.catch(err);
    if (isBuilderError(err)) {
      this.logToStderr(`Error: ${err.message}${err.hint ? `\nHint: ${err.hint}` : ''}`);
      this.exit(exitCodeFor(err.code));
    }
    if (err instanceof RpcCallError) {
      const data = err.data as { hint?: unknown; code?: unknown } | undefined;
      const hint = data?.hint;
      this.logToStderr(`Error: ${err.message}${typeof hint === 'string' ? `\nHint: ${hint}` : ''}`);
      // The master's stable code (data.code) picks the exit code; other call failures exit 2.
      this.exit(typeof data?.code === 'string' ? exitCodeFor(data.code, 2) : exitCodeForWire(err.rpcCode));
    }
    const code = (err as NodeJS.ErrnoException).code;
    this.logToStderr(`Error: ${err.message}${code ? ` (${code})` : ''}`);
    this.exit(1);
  }

  /** A pino logger for long-running commands: JSON lines on stdout, secrets redacted. */
  protected makeLogger(level = process.env.BUILDER_LOG_LEVEL ?? 'info'): Logger {
    // Loaded on first use: the short-lived builder commands never log, and pino costs ~0.1 s to load.
    const pino = createRequire(import.meta.url)('pino') as typeof import('pino').pino;
    return pino({ level, redact: { paths: ['token', '*.token', 'key', '*.key', 'privateKey', '*.privateKey'], censor: '[redacted]' } });
  }
}

function exitCodeForWire(rpcCode: number): number {
  switch (rpcCode) {
    case ErrorCodes.FORBIDDEN:
      return 4;
    case ErrorCodes.NOT_FOUND:
      return 5;
    case ErrorCodes.TIMEOUT:
    case ErrorCodes.CONNECTION_CLOSED:
    case ErrorCodes.UNAVAILABLE:
      return 3;
    default:
      return 2;
  }
}

function exitCodeFor(code: string, otherwise = 1): number {
  switch (code) {
    case 'BUILDER_ERR_CONFIG':
    case 'BUILDER_ERR_INVALID_NAME':
    case 'BUILDER_ERR_INVALID_INPUT':
      return 2;
    case 'BUILDER_ERR_UNAVAILABLE':
    case 'BUILDER_ERR_TIMEOUT':
    case 'BUILDER_ERR_CONNECTION_CLOSED':
      return 3;
    case 'BUILDER_ERR_CERT':
    case 'BUILDER_ERR_CA_FINGERPRINT':
    case 'BUILDER_ERR_TOKEN':
    case 'BUILDER_ERR_FORBIDDEN':
      return 4;
    case 'BUILDER_ERR_NOT_FOUND':
      return 5;
    default:
      return otherwise;
  }
}

/** Parses a duration like 30s, 15m, 2h, 7d (or plain milliseconds) into milliseconds. */
export { parseDuration } from './duration.js';
