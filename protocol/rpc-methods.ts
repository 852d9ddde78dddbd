import {
  JSONRPCErrorException,
  JSONRPCServer,
  createJSONRPCErrorResponse,
  createJSONRPCSuccessResponse,
  type JSONRPCErrorResponse,
  type JSONRPCID,
  type JSONRPCRequest,
  type JSONRPCResponse,
} from 'json-rpc-2.0';
import type { Logger } from 'pino';
import { catalogue, type MethodName, type ParamsOf } from './catalogue.js';
import { ErrorCodes, isBuilderError } from './errors.js';
import type { CallContext, Handler } from './rpc-peer.js';

/** Options for a method table. */
export interface RpcMethodsOptions {
  /**
   * Where handler failures are logged when the call's own peer has no logger. Default: the
   * peer's logger only.
   */
  logger?: Logger;
}

const ignore = (): undefined => undefined;

/**
 * The methods one kind of endpoint serves, built once and shared by all its connections: a
 * master with 1,000 slaves holds one table, not 1,000 copies of ~35 closures (issue 3). Each
 * method is wrapped once; the wrapper checks the caller's role and the params against the
 * catalogue, then runs the handler with the call's context (its peer and remote identity),
 * which json-rpc-2.0 passes through as the server params of each call.
 */
export class RpcMethods {
  /** json-rpc-2.0's server: dispatches a request to its method's wrapper. */
  private readonly server: JSONRPCServer<CallContext>;
  private readonly log: Logger | undefined;

  constructor(opts: RpcMethodsOptions = {}) {
    this.log = opts.logger;
    this.server = new JSONRPCServer<CallContext>({ errorListener: ignore });
    // Handler errors are mapped in the wrapper, where the call's peer is known; this catches
    // anything else the library itself might throw, with the same rule (no internal text).
    this.server.mapErrorToJSONRPCErrorResponse = (id, error) => this.mapError(id, error, undefined);
    // The heartbeat is answered by reading it: receiving anything proves liveness.
    this.handle('peer.heartbeat', () => null);
  }

  /** Serves a catalogue method. Params are validated and the caller's role checked first. */
  handle<M extends MethodName>(method: M, handler: Handler<M>): this {
    const d = catalogue[method];
    const roles: readonly string[] = d.roles;
    this.server.addMethodAdvanced(method, (request, ctx) => {
      const id = request.id;
      let out: ReturnType<Handler<M>>;
      try {
        // Security: the role comes from the verified certificate, never from the message.
        if (!roles.includes(ctx.remote.role)) {
          throw new JSONRPCErrorException(`role ${ctx.remote.role} may not call ${method}`, ErrorCodes.FORBIDDEN, {
            code: 'BUILDER_ERR_FORBIDDEN',
          });
        }
        const parsed = d.params.safeParse(request.params ?? {});
        if (!parsed.success) {
          const first = parsed.error.issues[0];
          const where = first && first.path.length > 0 ? first.path.join('.') + ': ' : '';
          throw new JSONRPCErrorException(`invalid params: ${where}${first?.message ?? 'schema mismatch'}`, ErrorCodes.INVALID_PARAMS);
        }
        out = handler(parsed.data as ParamsOf<M>, ctx);
      } catch (e) {
        return Promise.resolve(this.failed(id, e, ctx));
      }
      // A handler that answers at once costs no extra promise turn.
      if (isThenable(out)) {
        return Promise.resolve(out).then(
          (result) => (id === undefined ? null : createJSONRPCSuccessResponse(id, result)),
          (e: unknown) => this.failed(id, e, ctx),
        );
      }
      return Promise.resolve(id === undefined ? null : createJSONRPCSuccessResponse(id, out));
    });
    return this;
  }

  /** Whether this table serves `method`. */
  serves(method: string): boolean {
    return this.server.hasMethod(method);
  }

  /**
   * Runs one request (or notification) with the context of the connection it came on. Resolves
   * to the reply, or null for a notification.
   */
  receive(request: JSONRPCRequest, ctx: CallContext): PromiseLike<JSONRPCResponse | null> {
    return this.server.receive(request, ctx);
  }

  /** A notification is answered with nothing, whatever its handler did. */
  private failed(id: JSONRPCID | undefined, error: unknown, ctx: CallContext): JSONRPCErrorResponse | null {
    return id === undefined ? null : this.mapError(id, error, ctx);
  }

  /** Error replies carry only stable codes and safe messages: never internal text. */
  private mapError(id: JSONRPCID, error: unknown, ctx: CallContext | undefined): JSONRPCErrorResponse {
    if (error instanceof JSONRPCErrorException) return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
    if (isBuilderError(error) && error.expose) {
      return createJSONRPCErrorResponse(id, error.wireCode, error.message, { code: error.code, hint: error.hint });
    }
    (ctx?.peer.logger ?? this.log)?.error({ peer: ctx?.remote.name, err: error }, 'handler failed');
    return createJSONRPCErrorResponse(id, ErrorCodes.INTERNAL_ERROR, 'internal error');
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}
