/**
 * Raw TLS server for the wire benchmark (the limit): the same mutual-TLS options as the Master,
 * 4-byte big-endian length + raw bytes frames, no RPC layer. A payload up to ECHO_LIMIT_BYTES is
 * echoed; a larger one is answered with an 8-byte ack. Replies to the frames of one read are
 * written under one cork, which is the least a hand-written server would do.
 */
import tls from 'node:tls';
import { FrameDecoder, mutualTlsServerOptions } from '../../protocol/index.js';
import { ECHO_LIMIT_BYTES, runServerChild, serverMaterial } from './common.js';

await runServerChild(async (caDir) => {
  const m = await serverMaterial(caDir);
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer(mutualTlsServerOptions(m, 10_000), (socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const decoder = new FrameDecoder();
    let acks = 0;
    socket.on('data', (chunk: Buffer) => {
      const bodies = decoder.push(chunk);
      if (bodies.length === 0) return;
      socket.cork();
      for (const body of bodies) {
        if (body.length > ECHO_LIMIT_BYTES) {
          const ack = Buffer.allocUnsafe(12);
          ack.writeUInt32BE(8, 0);
          ack.writeBigUInt64BE(BigInt(++acks), 4);
          socket.write(ack);
        } else {
          const out = Buffer.allocUnsafe(4 + body.length);
          out.writeUInt32BE(body.length, 0);
          body.copy(out, 4);
          socket.write(out);
        }
      }
      socket.uncork();
    });
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
