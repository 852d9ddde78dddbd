/**
 * Artifacts of an attempt: collection from BUILDER_OUTPUT (refusing links, devices and escaping
 * paths), the chunk reader and windowed uploader core, and the transport-neutral receiver that
 * the master side uses. See docs/slave.md ("Artifacts" and "Uploads").
 */
export { artifactKind, collectArtifacts, indexFiles, COLLECT_DEFAULTS, MAX_REFUSED_KEPT } from './collect-artifacts.js';
export type { Artifact, ArtifactKind, ArtifactScan, CollectArtifactsOptions, InputConflict, RefusalReason, RefusedEntry } from './collect-artifacts.js';
export { sha256File, readChunk, uploadArtifact, DEFAULT_CHUNK_BYTES, DEFAULT_UPLOAD_WINDOW, ArtifactReceiver, RECEIVER_DEFAULTS } from '../../protocol/transfer/index.js';
export type { UploadOptions, UploadResult, UploadSource, UploadTarget, ArtifactReceiverOptions } from '../../protocol/transfer/index.js';
