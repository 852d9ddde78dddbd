/**
 * Stable error codes. Code branches on `code`, never on a message. On the wire an error carries a
 * numeric JSON-RPC code (standard ones below -32000, ours in -32000..-32099) and a short message
 * that never contains internal text (SQL, paths, stacks).
 */
export const ErrorCodes = {
  // JSON-RPC 2.0 standard codes
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  // Builder application range
  FORBIDDEN: -32001,
  NOT_FOUND: -32002,
  CONFLICT: -32003,
  TIMEOUT: -32004,
  CONNECTION_CLOSED: -32005,
  TOO_MANY_REQUESTS: -32006,
  BAD_STATE: -32007,
  CHECKSUM_MISMATCH: -32008,
  UNAVAILABLE: -32009,
  INVALID_INPUT: -32010,
  FRAME_TOO_LARGE: -32011,
} as const;

export type WireErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** String codes used inside the process and in logs. */
export type BuilderErrorCode =
  | 'BUILDER_ERR_FRAME_TOO_LARGE'
  | 'BUILDER_ERR_FRAME_DECODE'
  | 'BUILDER_ERR_NOT_PLAIN_DATA'
  | 'BUILDER_ERR_CONNECTION_CLOSED'
  | 'BUILDER_ERR_TIMEOUT'
  | 'BUILDER_ERR_HEARTBEAT'
  | 'BUILDER_ERR_TOO_MANY_IN_FLIGHT'
  | 'BUILDER_ERR_FORBIDDEN'
  | 'BUILDER_ERR_NOT_FOUND'
  | 'BUILDER_ERR_CONFLICT'
  | 'BUILDER_ERR_BAD_STATE'
  | 'BUILDER_ERR_INVALID_INPUT'
  | 'BUILDER_ERR_INVALID_NAME'
  | 'BUILDER_ERR_CHECKSUM'
  | 'BUILDER_ERR_TOKEN'
  | 'BUILDER_ERR_CERT'
  | 'BUILDER_ERR_CA_FINGERPRINT'
  | 'BUILDER_ERR_CA_EXISTS'
  | 'BUILDER_ERR_CONFIG'
  | 'BUILDER_ERR_RATE_LIMIT'
  | 'BUILDER_ERR_UNAVAILABLE'
  | 'BUILDER_ERR_INTERNAL';

const wireByCode: Partial<Record<BuilderErrorCode, WireErrorCode>> = {
  BUILDER_ERR_FORBIDDEN: ErrorCodes.FORBIDDEN,
  BUILDER_ERR_NOT_FOUND: ErrorCodes.NOT_FOUND,
  BUILDER_ERR_CONFLICT: ErrorCodes.CONFLICT,
  BUILDER_ERR_BAD_STATE: ErrorCodes.BAD_STATE,
  BUILDER_ERR_TIMEOUT: ErrorCodes.TIMEOUT,
  BUILDER_ERR_CONNECTION_CLOSED: ErrorCodes.CONNECTION_CLOSED,
  BUILDER_ERR_TOO_MANY_IN_FLIGHT: ErrorCodes.TOO_MANY_REQUESTS,
  BUILDER_ERR_RATE_LIMIT: ErrorCodes.TOO_MANY_REQUESTS,
  BUILDER_ERR_CHECKSUM: ErrorCodes.CHECKSUM_MISMATCH,
  BUILDER_ERR_INVALID_INPUT: ErrorCodes.INVALID_INPUT,
  BUILDER_ERR_INVALID_NAME: ErrorCodes.INVALID_INPUT,
  BUILDER_ERR_TOKEN: ErrorCodes.FORBIDDEN,
  BUILDER_ERR_UNAVAILABLE: ErrorCodes.UNAVAILABLE,
  BUILDER_ERR_FRAME_TOO_LARGE: ErrorCodes.FRAME_TOO_LARGE,
};

/** An error with a stable code; `expose` marks messages safe to send to a peer. */
export class BuilderError extends Error {
  readonly code: BuilderErrorCode;
  readonly hint: string | undefined;
  readonly expose: boolean;

  constructor(code: BuilderErrorCode, message: string, opts: { hint?: string; expose?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'BuilderError';
    this.code = code;
    this.hint = opts.hint;
    this.expose = opts.expose ?? true;
  }

  /** The JSON-RPC error code this error maps to on the wire. */
  get wireCode(): WireErrorCode {
    return wireByCode[this.code] ?? ErrorCodes.INTERNAL_ERROR;
  }
}

export function isBuilderError(e: unknown, code?: BuilderErrorCode): e is BuilderError {
  return e instanceof BuilderError && (code === undefined || e.code === code);
}
