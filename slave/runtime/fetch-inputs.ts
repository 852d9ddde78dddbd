import { mkdir, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BuilderError } from '../../protocol/errors.js';
import { checkRelativePath } from '../../protocol/names.js';
import type { RpcPeer } from '../../protocol/rpc-peer.js';
import { downloadInto } from '../../protocol/transfer/index.js';
import { callWithRetry, type RetryPolicy } from './retry.js';

/** One input file of a job, as attempt.assign lists it. */
export interface InputFile {
  readonly name: string;
  readonly sha256: string;
  readonly size: number;
}

/** A bad input list: the job's fault, the same on every slave (so not a setup failure). */
export class InputSpecError extends BuilderError {
  constructor(message: string) {
    super('BUILDER_ERR_INVALID_INPUT', message);
    this.name = 'InputSpecError';
  }
}

/** Checks input names before anything is fetched: valid relative paths, no duplicates, no file inside another. */
export function checkInputList(inputs: readonly InputFile[]): void {
  const seen = new Set<string>();
  for (const f of inputs) {
    let p: string;
    try {
      p = checkRelativePath(f.name);
    } catch (e) {
      throw new InputSpecError(`input file name refused: ${(e as Error).message}`);
    }
    if (seen.has(p)) throw new InputSpecError(`input file ${JSON.stringify(p)} is listed twice`);
    seen.add(p);
  }
  for (const p of seen) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (seen.has(parent)) throw new InputSpecError(`input file ${JSON.stringify(parent)} is also a directory of ${JSON.stringify(p)}`);
    }
  }
}

/**
 * Fetches the job's input files into `inputDir` (fresh, made by the executor) with input.read,
 * `chunkBytes` at a time, checking each file's size and sha256. `peer()` waits for a live
 * connection, so a fetch survives a reconnect and resumes at the byte it had reached. Any failure
 * rejects: the executor then fails the attempt before the process starts.
 */
export async function fetchInputs(
  inputs: readonly InputFile[],
  inputDir: string,
  signal: AbortSignal,
  peer: () => Promise<RpcPeer>,
  o: { chunkBytes: number; retry: RetryPolicy },
): Promise<void> {
  checkInputList(inputs);
  for (const f of inputs) {
    // A cancelled attempt's fetch may outlive it (the attempt does not wait for a read in flight),
    // and its slot's work dir is then the next attempt's: nothing more is made there once aborted.
    signal.throwIfAborted();
    const path = join(inputDir, f.name);
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    signal.throwIfAborted();
    // 'wx': the dir is fresh, so an existing file here would be a bug; never follow or reuse.
    const fh = await open(path, 'wx', 0o644);
    if (signal.aborted) {
      await fh.close();
      await rm(path, { force: true });
      signal.throwIfAborted();
    }
    try {
      await downloadInto(
        fh,
        { what: `input ${f.name}`, size: f.size, sha256: f.sha256 },
        async (offset, length) => (await callWithRetry(peer, (p) => p.call('input.read', { sha256: f.sha256, offset, length }), o.retry, signal)).data,
        { chunkBytes: o.chunkBytes, signal },
      );
    } finally {
      await fh.close();
    }
  }
}
