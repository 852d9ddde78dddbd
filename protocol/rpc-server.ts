import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { RpcMethods } from './rpc-methods.js';
import { RpcPeer, compileRpcPeerOptions, type CompiledRpcPeerOptions, type RemoteIdentity, type RpcPeerOptions } from './rpc-peer.js';

export interface RpcServerOptions extends RpcPeerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  tls: tls.TlsOptions;
  /** Connections open at once; more are refused. Default 10,000. */
  maxConnections?: number;
  /**
   * Decides who a connection is, after the TLS handshake and before a single message is read.
   * Returns the identity, or a reason to drop the connection.
   */
  authenticate: (socket: tls.TLSSocket) => Promise<RemoteIdentity | { reject: string }>;
  /**
   * The methods every connection serves, built once for all of them. Default: only
   * peer.heartbeat, plus what `onPeer` registers on each connection with `peer.handle`.
   */
  methods?: RpcMethods;
  /** Called for every authenticated connection. */
  onPeer?: (peer: RpcPeer) => void;
  /** Called once for every connection that closes (after it left `peers`), before its 'close' event. */
  onPeerClose?: (peer: RpcPeer, err: Error | undefined) => void;
  logger?: Logger;
}

/** A TLS listener that turns each authenticated connection into an RpcPeer. */
export class RpcServer {
  readonly peers = new Set<RpcPeer>();
  private readonly server: tls.Server;
  private readonly sockets = new Set<tls.TLSSocket>();
  /** The connections' limits, compiled once for all of them. */
  private readonly peerOptions: CompiledRpcPeerOptions;

  constructor(private readonly opts: RpcServerOptions) {
    this.peerOptions = compileRpcPeerOptions(opts);
    // Half-open: a peer that half-closes after its last request still gets the replies (RpcPeer
    // ends our side once they are written).
    this.server = tls.createServer({ ...opts.tls, allowHalfOpen: true }, (socket) => this.onSecure(socket));
    this.server.maxConnections = opts.maxConnections ?? 10_000;
    // Node 20 does not close a stalled handshake by itself: destroy on any client error.
    this.server.on('tlsClientError', (err, socket) => {
      opts.logger?.debug({ err: err.message, address: socket.remoteAddress }, 'TLS handshake refused');
      socket.destroy();
    });
    this.server.on('error', (err) => opts.logger?.error({ err }, 'listener error'));
  }

  /** Replaces the TLS context (a renewed certificate) for every handshake from now on; open connections keep theirs. */
  setSecureContext(tlsOptions: tls.SecureContextOptions): void {
    this.server.setSecureContext(tlsOptions);
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  private onSecure(socket: tls.TLSSocket): void {
    this.sockets.add(socket);
    socket.on('close', this.socketClosed);
    socket.on('error', ignore);
    socket.setNoDelay(true);
    this.opts
      .authenticate(socket)
      .then((id) => {
        if (socket.destroyed) return;
        if ('reject' in id) {
          this.opts.logger?.info({ address: socket.remoteAddress, reason: id.reject }, 'connection refused');
          socket.destroy();
          return;
        }
        const peer = new RpcPeer(socket, id, {
          compiled: this.peerOptions,
          methods: this.opts.methods,
          logger: this.opts.logger,
          onClose: this.peerClosed,
        });
        this.peers.add(peer);
        this.opts.onPeer?.(peer);
      })
      .catch((err: unknown) => {
        this.opts.logger?.error({ err }, 'authentication failed');
        socket.destroy();
      });
  }

  /** One function for every socket of this listener (`this` is the socket). */
  private readonly socketClosed = ((sockets: Set<tls.TLSSocket>) =>
    function (this: tls.TLSSocket): void {
      sockets.delete(this);
    })(this.sockets);

  /** One function for every connection of this listener. */
  private readonly peerClosed = (peer: RpcPeer, err: Error | undefined): void => {
    this.peers.delete(peer);
    this.opts.onPeerClose?.(peer, err);
  };

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.all([...this.peers].map((p) => p.close(500)));
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}

const ignore = (): undefined => undefined;
