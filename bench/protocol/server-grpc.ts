/**
 * gRPC stack server for the wire benchmark: @grpc/grpc-js unary Echo over mutual TLS with our
 * CA (client certificates required). Payloads up to ECHO_LIMIT_BYTES are echoed; larger ones get
 * an ack holding only `seq`.
 */
import * as grpc from '@grpc/grpc-js';
import { loadEchoService, type EchoMessage } from './grpc-echo.js';
import { ECHO_LIMIT_BYTES, runServerChild, serverMaterial } from './common.js';

await runServerChild(async (caDir) => {
  const m = await serverMaterial(caDir);
  const Echo = loadEchoService();
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  server.addService(Echo.service, {
    Echo: (call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, cb: grpc.sendUnaryData<EchoMessage>) => {
      const req = call.request;
      cb(null, req.data.length > ECHO_LIMIT_BYTES ? { data: Buffer.alloc(0), seq: req.seq } : req);
    },
  });
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(m.ca), [{ private_key: Buffer.from(m.key), cert_chain: Buffer.from(m.cert) }], true);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  return {
    port,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
});
