import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { FrameDecoder, connectRpc, mutualTlsClientOptions, type RpcPeer } from '../../protocol/index.js';
import { ECHO_LIMIT_BYTES, type Stack } from './common.js';
import { loadEchoService, type EchoClient } from './grpc-echo.js';
import { LeanPeer } from './lean-peer.js';

/** TLS material of the client identity (PEM). */
export interface ClientMaterial {
  key: string;
  cert: string;
  ca: string;
}

/**
 * One connection to a benchmark server. `call` sends `payload` and resolves when the answer is
 * back and checked: the same bytes for an echo, the right ack for a payload over ECHO_LIMIT_BYTES.
 */
export interface BenchClient {
  readonly stack: Stack;
  call(payload: Buffer, seq: number): Promise<void>;
  close(): Promise<void>;
}

export function connectClient(stack: Stack, port: number, m: ClientMaterial): Promise<BenchClient> {
  switch (stack) {
    case 'builder':
      return connectBuilder(port, m);
    case 'grpc':
      return connectGrpc(port, m);
    case 'tls':
      return connectTls(port, m);
    case 'lean':
      return connectLean(port, m);
  }
}

function mismatch(stack: Stack, what: string): Error {
  return new Error(`${stack}: wrong answer (${what})`);
}

/** Builder: connectRpc + peer.call('peer.echo'), as a slave or the CLI calls the master. */
async function connectBuilder(port: number, m: ClientMaterial): Promise<BenchClient> {
  const peer: RpcPeer = await connectRpc({ tls: mutualTlsClientOptions(m, '127.0.0.1', port), remote: { role: 'master', name: 'master' } });
  return {
    stack: 'builder',
    async call(payload, seq) {
      // The catalogue types bytes as Uint8Array<ArrayBuffer>; a Buffer from randomBytes is one at run time.
      const r = await peer.call('peer.echo', { data: payload as Uint8Array<ArrayBuffer>, seq });
      if (r.seq !== seq) throw mismatch('builder', `seq ${String(r.seq)} for ${seq}`);
      if (payload.length <= ECHO_LIMIT_BYTES && (!(r.data instanceof Uint8Array) || r.data.length !== payload.length)) throw mismatch('builder', 'echo');
    },
    close: () => peer.close(500),
  };
}

/** grpc-js: one channel, unary Echo calls multiplexed on it (HTTP/2). */
async function connectGrpc(port: number, m: ClientMaterial): Promise<BenchClient> {
  const Echo = loadEchoService();
  const creds = grpc.credentials.createSsl(Buffer.from(m.ca), Buffer.from(m.key), Buffer.from(m.cert));
  // The target name override makes grpc-js send SNI "localhost" (a name the master's certificate
  // holds) instead of an IP address, which Node deprecates as a ServerName.
  const client: EchoClient = new Echo(`127.0.0.1:${port}`, creds, {
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    'grpc.ssl_target_name_override': 'localhost',
  });
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
  return {
    stack: 'grpc',
    call(payload, seq) {
      return new Promise((resolve, reject) => {
        client.Echo({ data: payload, seq }, (err, res) => {
          if (err || !res) return reject(err ?? mismatch('grpc', 'no response'));
          if (res.seq !== seq) return reject(mismatch('grpc', `seq ${res.seq} for ${seq}`));
          if (payload.length <= ECHO_LIMIT_BYTES && res.data.length !== payload.length) return reject(mismatch('grpc', 'echo'));
          resolve();
        });
      });
    },
    close: async () => client.close(),
  };
}

/**
 * Raw TLS: 4-byte length + bytes, answers in order (one connection, one server loop), so a FIFO
 * matches them to calls. Small frames go as one buffer, large ones as header + body under cork.
 */
async function connectTls(port: number, m: ClientMaterial): Promise<BenchClient> {
  const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect(mutualTlsClientOptions(m, '127.0.0.1', port));
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
  socket.setNoDelay(true);
  const decoder = new FrameDecoder();
  const pending: Array<{ len: number; resolve: () => void; reject: (e: Error) => void }> = [];
  const failAll = (e: Error) => {
    for (const p of pending.splice(0)) p.reject(e);
  };
  socket.on('error', failAll);
  socket.on('close', () => failAll(new Error('tls: connection closed')));
  socket.on('data', (chunk: Buffer) => {
    for (const body of decoder.push(chunk)) {
      const p = pending.shift();
      if (!p) continue;
      const want = p.len > ECHO_LIMIT_BYTES ? 8 : p.len;
      if (body.length === want) p.resolve();
      else p.reject(mismatch('tls', `${body.length} bytes for ${want}`));
    }
  });
  return {
    stack: 'tls',
    call(payload) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ len: payload.length, resolve, reject });
        const header = Buffer.allocUnsafe(4);
        header.writeUInt32BE(payload.length, 0);
        if (payload.length <= ECHO_LIMIT_BYTES) {
          socket.write(Buffer.concat([header, payload]));
        } else {
          socket.cork();
          socket.write(header);
          socket.write(payload);
          socket.uncork();
        }
      });
    },
    close: async () => {
      socket.end();
      socket.destroy();
    },
  };
}

/** The prototype of the proposal (lean-peer.ts), called like the Builder stack. */
async function connectLean(port: number, m: ClientMaterial): Promise<BenchClient> {
  const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect(mutualTlsClientOptions(m, '127.0.0.1', port));
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
  socket.setNoDelay(true);
  const peer = new LeanPeer(socket, 'master');
  return {
    stack: 'lean',
    async call(payload, seq) {
      const r = await peer.call('peer.echo', { data: payload as Uint8Array<ArrayBuffer>, seq });
      if (r.seq !== seq) throw mismatch('lean', `seq ${String(r.seq)} for ${seq}`);
      if (payload.length <= ECHO_LIMIT_BYTES && (!(r.data instanceof Uint8Array) || r.data.length !== payload.length)) throw mismatch('lean', 'echo');
    },
    close: async () => peer.close(),
  };
}
