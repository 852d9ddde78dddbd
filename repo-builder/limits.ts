/** Named limits for what the package readers accept; each has a test. */
export interface ReaderLimits {
  /** Largest control.tar member (compressed) read from a .deb. Default 16 MiB. */
  maxControlBytes: number;
  /** Largest control.tar once decompressed, and largest control file. Default 64 MiB. */
  maxControlUncompressedBytes: number;
  /** Largest rpm header (signature or main) data store. Default 64 MiB. */
  maxRpmHeaderBytes: number;
  /** Most index entries in one rpm header. Default 65536. */
  maxRpmHeaderEntries: number;
}

export const DEFAULT_READER_LIMITS: ReaderLimits = {
  maxControlBytes: 16 * 1024 * 1024,
  maxControlUncompressedBytes: 64 * 1024 * 1024,
  maxRpmHeaderBytes: 64 * 1024 * 1024,
  maxRpmHeaderEntries: 65536,
};
