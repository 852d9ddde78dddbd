import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCodes } from '../../protocol/errors.js';
import { RpcCallError, type RpcPeer } from '../../protocol/rpc-peer.js';

/** How calls that failed without losing the connection are retried. */
export interface RetryPolicy {
  /** First delay; doubles per retry. */
  readonly delayMs: number;
  /** Retries before giving up. */
  readonly maxRetries: number;
}

/** The JSON-RPC code of a failed call, or undefined for a local (non-RPC) error. */
export function rpcCode(e: unknown): number | undefined {
  return e instanceof RpcCallError ? e.rpcCode : undefined;
}

/** The connection went away: the call is retried on the next connection, without limit. */
export function isConnectionLoss(e: unknown): boolean {
  return rpcCode(e) === ErrorCodes.CONNECTION_CLOSED;
}

/** Failures worth a bounded number of retries on the same connection. */
export function isRetryable(e: unknown): boolean {
  const c = rpcCode(e);
  return c === ErrorCodes.TIMEOUT || c === ErrorCodes.UNAVAILABLE || c === ErrorCodes.TOO_MANY_REQUESTS || c === ErrorCodes.INTERNAL_ERROR;
}

/** The master says the attempt is not (or no longer) one this slave holds. */
export function isStale(e: unknown): boolean {
  const c = rpcCode(e);
  return c === ErrorCodes.BAD_STATE || c === ErrorCodes.NOT_FOUND;
}

/**
 * Calls `fn` on a live connection (from `peer()`, which waits for one). A lost connection is
 * retried on the next one; a timeout or a busy master up to `maxRetries` times with back-off;
 * anything else rejects at once.
 */
export async function callWithRetry<T>(peer: () => Promise<RpcPeer>, fn: (p: RpcPeer) => Promise<T>, policy: RetryPolicy, signal?: AbortSignal): Promise<T> {
  let tries = 0;
  for (;;) {
    const p = await peer();
    try {
      return await fn(p);
    } catch (e) {
      if (signal?.aborted) throw e;
      if (isConnectionLoss(e)) {
        // peer() only hands out open connections; should this one still look open, do not spin.
        if (!p.closed) await sleep(Math.max(policy.delayMs, 10));
        continue;
      }
      if (isRetryable(e) && tries < policy.maxRetries) {
        await sleep(policy.delayMs * 2 ** tries);
        tries++;
        continue;
      }
      throw e;
    }
  }
}
