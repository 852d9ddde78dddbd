/**
 * Builder stack server for the wire benchmark: the real RpcServer (the class the Master's
 * mutual-TLS listener is) with the Master's TLS options and the same `peer.echo` handler, except
 * that payloads over ECHO_LIMIT_BYTES are answered with an ack (see common.ts).
 */
import { RpcServer, mutualTlsServerOptions, peerIdentity } from '../../protocol/index.js';
import { ECHO_LIMIT_BYTES, runServerChild, serverMaterial } from './common.js';

await runServerChild(async (caDir) => {
  const m = await serverMaterial(caDir);
  const server = new RpcServer({
    host: '127.0.0.1',
    port: 0,
    tls: mutualTlsServerOptions(m, 10_000),
    // As the Master: the identity comes from the verified certificate (no registry here).
    authenticate: async (socket) => peerIdentity(socket) ?? { reject: 'certificate without a Builder name and role' },
    onPeer: (peer) => {
      peer.handle('peer.echo', (p) => (p.data !== undefined && p.data.length > ECHO_LIMIT_BYTES ? { seq: p.seq } : p));
    },
  });
  const addr = await server.listen();
  return { port: addr.port, close: () => server.close() };
});
