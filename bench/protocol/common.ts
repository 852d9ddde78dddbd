import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { caPaths } from '../../pki/index.js';

/**
 * The echo rule shared by the three servers, so the stacks do the same work: a payload up to
 * this size comes back whole; a larger one (the 1 MiB bulk params) is answered with a tiny ack
 * (the call's sequence number only), so the bulk figure measures one direction.
 */
export const ECHO_LIMIT_BYTES = 64 * 1024;

/** The line a server child prints on stdout once it listens. */
export const READY_PREFIX = 'LISTENING ';

/** The stacks under test, in report order. */
export const STACKS = ['builder', 'grpc', 'tls'] as const;
/** Stacks that run only when asked for: `lean` is the json-rpc-2.0-free prototype, kept as a yardstick. */
export const EXTRA_STACKS = ['lean'] as const;
export type Stack = (typeof STACKS)[number] | (typeof EXTRA_STACKS)[number];

/** The .proto of the gRPC stack (kept in the source tree; tsc does not copy it to dist/). */
export const ECHO_PROTO_PATH = fileURLToPath(new URL('../../../bench/protocol/echo.proto', import.meta.url));

/** The master's server certificate and key from a CA directory made by initCa, with the CA certificate. */
export async function serverMaterial(caDir: string): Promise<{ key: string; cert: string; ca: string }> {
  const p = caPaths(caDir);
  const [key, cert, ca] = await Promise.all([readFile(p.serverKey, 'utf8'), readFile(p.serverCert, 'utf8'), readFile(p.caCert, 'utf8')]);
  return { key, cert, ca };
}

/**
 * Common life of a server child: the CA directory is argv[2]; the child announces its port on
 * stdout and exits when its stdin closes, so a crashed driver never leaves it behind.
 */
export async function runServerChild(start: (caDir: string) => Promise<{ port: number; close: () => Promise<void> }>): Promise<void> {
  const caDir = process.argv[2];
  if (!caDir) {
    process.stderr.write('usage: server-<stack>.js CA_DIR\n');
    process.exit(2);
  }
  const server = await start(caDir);
  const stop = () => {
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
  process.stdout.write(`${READY_PREFIX}${server.port}\n`);
}
