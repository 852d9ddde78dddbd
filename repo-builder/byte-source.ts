import { open } from 'node:fs/promises';
import { BuilderError } from '../protocol/errors.js';

/** Random access to a package's bytes: a file on disk, or a buffer already read (and hashed). */
export interface ByteSource {
  readonly size: number;
  /** Exactly `len` bytes at `pos`; a short read means a truncated package. */
  read(pos: number, len: number): Promise<Buffer>;
  close(): Promise<void>;
}

export async function openByteSource(src: string | Buffer, what: string): Promise<ByteSource> {
  const truncated = (): BuilderError => new BuilderError('BUILDER_ERR_INVALID_INPUT', `not a valid ${what}: truncated`);
  if (Buffer.isBuffer(src)) {
    return {
      size: src.length,
      read: async (pos, len) => {
        if (pos + len > src.length) throw truncated();
        return src.subarray(pos, pos + len);
      },
      close: async () => undefined,
    };
  }
  const fd = await open(src, 'r');
  const { size } = await fd.stat();
  return {
    size,
    read: async (pos, len) => {
      const buf = Buffer.alloc(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fd.read(buf, got, len - got, pos + got);
        if (bytesRead === 0) throw truncated();
        got += bytesRead;
      }
      return buf;
    },
    close: () => fd.close(),
  };
}
