import tls from 'node:tls';
import { loadIdentity } from '../../../../pki/index.js';
import { mutualTlsClientOptions } from '../../../../protocol/index.js';
import type { TestFarm } from '../../../helpers/farm.js';
import { RawEnd } from '../../../unit/protocol/helpers/raw-end.js';

/** A mutual-TLS connection to the farm's master with a valid identity, driven frame by frame. */
export async function rawTls(farm: TestFarm, identityDir: string, timeoutMs = 10_000): Promise<RawEnd & { stream: tls.TLSSocket }> {
  const id = await loadIdentity(identityDir);
  const port = Number(farm.mainAddress.split(':')[1]);
  const socket = tls.connect(mutualTlsClientOptions(id, '127.0.0.1', port));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS connection within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', (err: Error) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  return new RawEnd(socket) as RawEnd & { stream: tls.TLSSocket };
}

/** A frame header declaring `length` body bytes. */
export function frameHeader(length: number): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(length, 0);
  return h;
}
