/**
 * Chunked, resumable, sha256-checked file transfer, transport-neutral: the slave uploads
 * artifacts with it, the master receives them, and clients move input files and downloads the
 * same way.
 */
export { sha256File, hashRange, SAFE_READ_FLAGS, READ_BUFFER_BYTES } from './hash-file.js';
export { readChunk, uploadArtifact, DEFAULT_CHUNK_BYTES, DEFAULT_UPLOAD_WINDOW } from './uploader.js';
export type { UploadOptions, UploadResult, UploadSource, UploadTarget } from './uploader.js';
export { ArtifactReceiver, MAX_PARKED_CHUNKS, RECEIVER_DEFAULTS } from './receiver.js';
export type { ArtifactReceiverOptions } from './receiver.js';
export { downloadInto } from './downloader.js';
export type { DownloadExpect, DownloadOptions } from './downloader.js';
