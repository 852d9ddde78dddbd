import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ECHO_PROTO_PATH } from './common.js';

/** The message of echo.proto as proto-loader hands it over (bytes as Buffer, uint64 as number). */
export interface EchoMessage {
  data: Buffer;
  seq: number;
}

/** The generated client class of the Echo service. */
export type EchoClient = grpc.Client & {
  Echo(req: EchoMessage, cb: (err: grpc.ServiceError | null, res?: EchoMessage) => void): grpc.ClientUnaryCall;
};

export interface EchoServiceCtor {
  new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions): EchoClient;
  service: grpc.ServiceDefinition;
}

/** Loads echo.proto; `longs: Number` keeps seq a plain number, `defaults` fills empty bytes. */
export function loadEchoService(): EchoServiceCtor {
  const def = protoLoader.loadSync(ECHO_PROTO_PATH, { longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { builderbench: { Echo: EchoServiceCtor } };
  return pkg.builderbench.Echo;
}
