import { Command } from '@oclif/core';
import pino, { type Logger } from 'pino';
import { isBuilderError } from '../protocol/errors.js';
import { RpcCallError } from '../protocol/rpc-peer.js';

/**
 * Base for every Builder command: errors become one clear line with a hint and a non-zero exit,
 * never a stack trace.
 */
export abstract class BuilderCommand extends Command {
  protected override async catch(err: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<unknown> {
    // oclif's own errors (bad flags, exit) already print cleanly.
    if (err.oclif) return super.catch(err);
    if (isBuilderError(err)) {
      this.logToStderr(`Error: ${err.message}${err.hint ? `\nHint: ${err.hint}` : ''}`);
      this.exit(exitCodeFor(err.code));
    }
    if (err instanceof RpcCallError) {
      const hint = (err.data as { hint?: unknown } | undefined)?.hint;
      this.logToStderr(`Error: ${err.message}${typeof hint === 'string' ? `\nHint: ${hint}` : ''}`);
      this.exit(2);
    }
    const code = (err as NodeJS.ErrnoException).code;
    this.logToStderr(`Error: ${err.message}${code ? ` (${code})` : ''}`);
    this.exit(1);
  }

  /** A pino logger for long-running commands: JSON lines on stdout, secrets redacted. */
  protected makeLogger(level = process.env.BUILDER_LOG_LEVEL ?? 'info'): Logger {
    return pino({ level, redact: { paths: ['token', '*.token', 'key', '*.key', 'privateKey', '*.privateKey'], censor: '[redacted]' } });
  }
}

function exitCodeFor(code: string): number {
  switch (code) {
    case 'BUILDER_ERR_CONFIG':
    case 'BUILDER_ERR_INVALID_NAME':
    case 'BUILDER_ERR_INVALID_INPUT':
      return 2;
    case 'BUILDER_ERR_UNAVAILABLE':
    case 'BUILDER_ERR_TIMEOUT':
      return 3;
    case 'BUILDER_ERR_CERT':
    case 'BUILDER_ERR_CA_FINGERPRINT':
    case 'BUILDER_ERR_TOKEN':
    case 'BUILDER_ERR_FORBIDDEN':
      return 4;
    case 'BUILDER_ERR_NOT_FOUND':
      return 5;
    default:
      return 1;
  }
}

/** Parses a duration like 30s, 15m, 2h, 7d (or plain milliseconds) into milliseconds. */
export { parseDuration } from './duration.js';
