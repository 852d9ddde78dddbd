import { realpath, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { BuilderError } from '../../../protocol/errors.js';
import { checkRelativePath } from '../../../protocol/names.js';
import type { RpcPeer } from '../../../protocol/rpc-peer.js';
import { sha256File, uploadArtifact } from '../../../protocol/transfer/index.js';

/** One job input file: where it is here, and how the job sees it (name in BUILDER_INPUT). */
export interface InputFile {
  absPath: string;
  name: string;
  size: number;
  sha256: string;
}

/**
 * Checks and hashes the --input files before anything is sent: each must be a regular file
 * (a symlink is followed here, on the user's own machine), and no two may share a name.
 */
export async function prepareInputs(paths: readonly string[]): Promise<InputFile[]> {
  const out: InputFile[] = [];
  const seen = new Map<string, string>();
  for (const p of paths) {
    const abs = resolve(p);
    let isFile: boolean;
    try {
      isFile = (await stat(abs)).isFile();
    } catch (e) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `cannot read input file ${p} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (!isFile) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `input ${p} is not a regular file`);
    const name = checkRelativePath(basename(abs));
    const prev = seen.get(name);
    if (prev !== undefined) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `inputs ${prev} and ${p} have the same name ${name}`, { hint: 'the job sees every input by its base name in $BUILDER_INPUT' });
    seen.set(name, p);
    let h: { sha256: string; size: number };
    try {
      // sha256File refuses symlinks; hash what the link points to.
      h = await sha256File(await realpath(abs));
    } catch (e) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `cannot read input file ${p} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    out.push({ absPath: abs, name, ...h });
  }
  return out;
}

/** Options of {@link uploadInputs}. */
export interface UploadInputsOptions {
  /** Bytes per input.chunk. Default 256 KiB. */
  chunkBytes?: number;
  /** Chunks in flight. Default 8. */
  window?: number;
  onFile?: (f: InputFile, resumedAt: number) => void;
}

/**
 * Uploads input files to the master, addressed by sha256: input.begin says how much the master
 * already holds (all of it for a file any earlier job used, part of it after an interrupted
 * upload), the rest goes in windowed chunks, input.finish checks size and sha256.
 */
export async function uploadInputs(peer: RpcPeer, files: readonly InputFile[], o: UploadInputsOptions = {}): Promise<void> {
  for (const f of files) {
    const src = { absPath: await realpath(f.absPath), path: f.name, size: f.size, sha256: f.sha256 };
    const r = await uploadArtifact(
      src,
      {
        begin: () => peer.call('input.begin', { sha256: f.sha256, size: f.size }),
        sendChunk: async (offset, data) => {
          // A Buffer is a Uint8Array; msgpack sends it as bin.
          await peer.call('input.chunk', { sha256: f.sha256, offset, data: data as Uint8Array<ArrayBuffer> });
        },
        finish: () => peer.call('input.finish', { sha256: f.sha256 }),
      },
      { chunkBytes: o.chunkBytes, window: o.window },
    );
    o.onFile?.(f, r.resumedAt);
  }
}
