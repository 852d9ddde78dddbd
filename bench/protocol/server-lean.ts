/**
 * PROTOTYPE stack (not Builder as shipped): LeanPeer (see lean-peer.ts) on the Master's TLS
 * options, serving peer.echo with the same echo rule. Run with --stacks builder,lean,... to see
 * what the proposed changes to protocol/ would buy on the real wire.
 */
import tls from 'node:tls';
import { mutualTlsServerOptions, peerIdentity } from '../../protocol/index.js';
import { ECHO_LIMIT_BYTES, runServerChild, serverMaterial } from './common.js';
import { LeanPeer } from './lean-peer.js';

await runServerChild(async (caDir) => {
  const m = await serverMaterial(caDir);
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer(mutualTlsServerOptions(m, 10_000), (socket) => {
    const id = peerIdentity(socket);
    if (!id) return socket.destroy();
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    new LeanPeer(socket, id.role).handle('peer.echo', (p) => (p.data !== undefined && p.data.length > ECHO_LIMIT_BYTES ? { seq: p.seq } : p));
  });
  server.on('tlsClientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
});
