import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type tls from 'node:tls';
import pino, { type Logger } from 'pino';
import {
  BuilderError,
  CERT_WARN_MS,
  RateLimiter,
  RpcMethods,
  RpcServer,
  checkName,
  enrollmentTlsServerOptions,
  mutualTlsServerOptions,
  peerIdentity,
  renewalDueAt,
  type RemoteIdentity,
  type ResultOf,
  type RpcPeer,
} from '../protocol/index.js';
import {
  PkiRegistry,
  certFingerprint,
  loadCa,
  publicKeyFromCsr,
  publicKeyFromProof,
  renewServerCertificate,
  renewalProofMessage,
  serverCertificateDates,
  settleServerCertificate,
  signPeer,
  type LoadedCa,
} from '../pki/index.js';
import { compileMasterOptions, type CompiledMasterOptions, type MasterOptions } from './master-options.js';
import { JobService } from './jobs/index.js';
import { inOrder } from './in-order.js';
import { VERSION } from './version.js';

/**
 * The master process: two listeners (mutual TLS for slaves and the CLI, server-auth TLS for
 * enrollment only), the PKI registry, and the RPC handlers.
 */
export class Master {
  readonly options: CompiledMasterOptions;
  readonly log: Logger;
  private ca!: LoadedCa;
  private registry!: PkiRegistry;
  private main!: RpcServer;
  private enroll!: RpcServer;
  private serverCertTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  /** The tail of the cert.renew requests in progress, per certificate serial. */
  private readonly renewals = new Map<string, Promise<void>>();
  private caFingerprint = '';
  private jobService: JobService | undefined;
  private readonly opts: MasterOptions;
  /** Authenticated connections by peer name. */
  private readonly byName = new Map<string, Set<RpcPeer>>();

  constructor(opts: MasterOptions) {
    this.options = compileMasterOptions(opts);
    this.opts = opts;
    this.log = opts.logger ?? pino({ level: 'silent' });
  }

  /** Loads the CA and starts both listeners. */
  async start(): Promise<{ main: AddressInfo; enroll: AddressInfo }> {
    const o = this.options;
    this.ca = await loadCa(o.dir);
    this.caFingerprint = certFingerprint(this.ca.certPem);
    this.registry = await PkiRegistry.open(this.ca.paths.registry);
    // The server certificate: a replacement a crash cut short is settled, one that is due is renewed.
    if ((await settleServerCertificate(this.ca)) === 'completed') this.log.warn('finished replacing the server certificate (an earlier renewal was cut short)');
    // A renewal that fails (a full disk, a busy pki.db) does not keep the master down while its certificate is still good.
    await this.renewServerCertificateIfDue().catch(async (e: unknown) => {
      // Cut short between its two renames: the matching pair goes back in place first.
      await settleServerCertificate(this.ca);
      const dates = await serverCertificateDates(this.ca);
      if (Date.now() > dates.notAfter) throw e;
      this.log.error({ err: (e as Error).message, expiresAt: new Date(dates.notAfter).toISOString() }, 'server certificate renewal failed; starting with the current one, tried again daily');
    });
    const [serverCert, serverKey] = await Promise.all([readFile(this.ca.paths.serverCert, 'utf8'), readFile(this.ca.paths.serverKey, 'utf8')]);
    const jobService = await JobService.open(o.dir, this.opts, this.log);
    this.jobService = jobService;

    // Every method, built once and shared by every connection (issue 3: a connection costs no
    // closure per method).
    const methods = this.mainMethods();
    jobService.registerMethods(methods);
    this.main = new RpcServer({
      ...o.rpc,
      host: o.listen.host,
      port: o.listen.port,
      maxConnections: o.maxConnections,
      tls: mutualTlsServerOptions({ key: serverKey, cert: serverCert, ca: this.ca.certPem }, o.handshakeTimeoutMs),
      authenticate: (s) => this.authenticate(s),
      methods,
      onPeer: (p) => this.onPeer(p),
      onPeerClose: (p, err) => {
        this.onPeerClose(p, err);
        jobService.onPeerClosed(p);
      },
      logger: this.log,
    });
    const limiter = new RateLimiter({ burst: o.enrollBurst, perSecond: o.enrollPerMinute / 60 });
    this.enroll = new RpcServer({
      host: o.enrollListen.host,
      port: o.enrollListen.port,
      maxConnections: o.maxEnrollConnections,
      maxFrameBytes: o.enrollMaxFrameBytes,
      maxInFlight: 2,
      maxBatch: 1,
      maxProtocolErrors: 2,
      requestTimeoutMs: 10_000,
      tls: enrollmentTlsServerOptions({ key: serverKey, cert: serverCert }, o.handshakeTimeoutMs),
      // Security: unauthenticated peers are rate-limited per address and can call nothing but enroll.request.
      authenticate: async (s) => {
        const ip = s.remoteAddress ?? 'unknown';
        if (!limiter.take(ip)) return { reject: `enrollment rate limit for ${ip}` };
        return { role: 'anonymous', name: `enroll@${ip}`, address: ip };
      },
      methods: this.enrollMethods(),
      logger: this.log,
    });
    const [main, enroll] = [await this.main.listen(), await this.enroll.listen()];
    this.log.info({ listen: `${main.address}:${main.port}`, enroll: `${enroll.address}:${enroll.port}` }, 'master listening');
    this.serverCertTimer = setInterval(() => {
      this.renewServerCertificateIfDue().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'server certificate renewal failed; tried again tomorrow'));
    }, o.serverCertCheckMs);
    this.serverCertTimer.unref();
    return { main, enroll };
  }

  /**
   * Renews the master's own server certificate once it is in the last third of its life (after
   * 550 of its 825 days), with the same host names, and has both listeners present the new one
   * to every handshake from then on (connections already open keep theirs). Slaves and clients
   * check it against the CA they hold and the host name, both unchanged, so nobody notices.
   * Checked at start and every `serverCertCheckMs` (a day). Returns whether it renewed.
   */
  async renewServerCertificateIfDue(now = Date.now()): Promise<boolean> {
    const dates = await serverCertificateDates(this.ca);
    if (now < dates.dueAt) return false;
    const issued = await renewServerCertificate(this.ca, this.registry);
    this.log.info({ serial: issued.serial, previous: dates.serial, expiresAt: issued.notAfter.toISOString() }, 'server certificate renewed');
    if (this.main !== undefined) {
      const [cert, key] = await Promise.all([readFile(this.ca.paths.serverCert, 'utf8'), readFile(this.ca.paths.serverKey, 'utf8')]);
      this.main.setSecureContext(mutualTlsServerOptions({ key, cert, ca: this.ca.certPem }, this.options.handshakeTimeoutMs));
      this.enroll.setSecureContext(enrollmentTlsServerOptions({ key, cert }, this.options.handshakeTimeoutMs));
    }
    return true;
  }

  /** Stops listening, then the job machinery; a second call waits for the first one's end. */
  stop(): Promise<void> {
    return (this.stopping ??= this.doStop());
  }

  private async doStop(): Promise<void> {
    if (this.serverCertTimer) clearInterval(this.serverCertTimer);
    this.jobService?.beginStop();
    await Promise.all([this.main?.close(), this.enroll?.close()]);
    await this.jobService?.stop();
    await this.registry?.close();
    this.log.info('master stopped');
  }

  /** The job machinery (store, dispatcher, cron, logs, artifacts); set once started. */
  get jobs(): JobService {
    if (this.jobService === undefined) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the master is not started');
    return this.jobService;
  }

  /** Connected peers, for tests and listings. */
  connectedNames(): string[] {
    return [...this.byName.keys()];
  }

  peersNamed(name: string): RpcPeer[] {
    return [...(this.byName.get(name) ?? [])];
  }

  /**
   * Runs on every handshake, after TLS verified the chain and dates. Security: the serial must be
   * one we issued and not revoked, and the certificate's name and role must match our record;
   * this is per connection, so a revocation takes effect on the next handshake.
   */
  private async authenticate(socket: tls.TLSSocket): Promise<RemoteIdentity | { reject: string }> {
    const id = peerIdentity(socket);
    if (!id) return { reject: 'certificate without a Builder name and role' };
    const check = await this.registry.checkSerial(id.serial);
    if (!check.ok) return { reject: `certificate ${id.serial} is ${check.reason}` };
    if (check.record.name !== id.name || check.record.role !== id.role) return { reject: 'certificate does not match the CA record' };
    if (check.record.firstSeenAt === null && (await this.registry.markSeen(id.serial)) && check.record.replaces !== null) {
      // A renewed certificate in use: the one it replaced is done with (its key may linger in
      // backups), and so is any other replacement of it still live (two requests that crossed).
      if (await this.registry.revokeSerial(check.record.replaces)) this.log.info({ conn: id.name, serial: id.serial, revoked: check.record.replaces }, 'renewed certificate in use: the previous one is revoked');
      for (const r of await this.registry.replacementsOf(check.record.replaces)) {
        if (r.serial !== id.serial && r.revokedAt === null && (await this.registry.revokeSerial(r.serial))) {
          this.log.warn({ conn: id.name, serial: id.serial, revoked: r.serial }, 'renewed certificate in use: another replacement of the same certificate is revoked');
        }
      }
    }
    const left = check.record.notAfter - Date.now();
    if (left < CERT_WARN_MS) {
      // Once per connection: a slave connects once and stays; a CLI user sees it per command.
      this.log.warn(
        { conn: id.name, role: id.role, serial: id.serial, expiresAt: new Date(check.record.notAfter).toISOString(), daysLeft: Math.floor(left / 86_400_000) },
        id.role === 'slave'
          ? "slave certificate expires soon and is not renewed yet: the slave asks for a new one in its certificate's last third (see the slave's log), else revoke it and enroll the slave again"
          : "client certificate expires soon and is not renewed yet: the builder CLI renews it at its next command unless BUILDER_NO_RENEW=1 (see its stderr), else make a new identity (master client create)",
      );
    }
    return id;
  }

  private onPeer(peer: RpcPeer): void {
    const { name, role } = peer.remote;
    let set = this.byName.get(name);
    if (!set) this.byName.set(name, (set = new Set()));
    set.add(peer);
    this.log.info({ conn: name, role }, 'peer connected');
  }

  private onPeerClose(peer: RpcPeer, err: Error | undefined): void {
    const { name, role } = peer.remote;
    const set = this.byName.get(name);
    if (set?.delete(peer) === true && set.size === 0) this.byName.delete(name);
    this.log.info({ conn: name, role, reason: err?.message }, 'peer disconnected');
  }

  /** The methods of the main listener that are not the job machinery's. */
  private mainMethods(): RpcMethods {
    return new RpcMethods({ logger: this.log })
      .handle('session.hello', (_p, ctx) => ({
        name: ctx.remote.name,
        role: ctx.remote.role,
        masterVersion: VERSION,
        serverTime: Date.now(),
      }))
      .handle('peer.echo', (p) => p)
      .handle('token.create', async ({ ttlMs }) => {
        const t = await this.registry.createToken(ttlMs);
        return { token: t.token, expiresAt: t.expiresAt, caFingerprint: this.caFingerprint };
      })
      .handle('slave.list', async () => {
        const certs = await this.registry.list('slave');
        return {
          slaves: certs.map((c) => ({
            name: c.name,
            serial: c.serial,
            notAfter: c.notAfter,
            revoked: c.revokedAt !== null,
            connected: this.byName.has(c.name),
          })),
        };
      })
      .handle('cert.renew', ({ publicKey, proof }, ctx) => this.oneRenewalPerSerial(ctx.remote, () => this.renewPeer(ctx.remote, publicKey, proof)))
      .handle('slave.revoke', async ({ name: slave }) => {
        checkName('slave', slave);
        const revoked = await this.revokeSlave(slave);
        if (revoked === 0) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no live certificate for slave ${slave}`);
        return { revoked };
      });
  }

  /**
   * Runs the renewals asked with one certificate one after the other: the checks of the second
   * see the replacement the first issued (two requests that cross get one certificate, and a
   * conflict), not the state before both.
   */
  private oneRenewalPerSerial<T>(remote: RemoteIdentity, fn: () => Promise<T>): Promise<T> {
    return inOrder(this.renewals, remote.serial ?? '', fn);
  }

  /**
   * Serves cert.renew: certifies the caller's new public key (a slave, a client or an admin)
   * under the name and role of the certificate it connected with, once that certificate is in
   * the last third of its life. A slave's lasts `slaveCertDays`; a client's or admin's as long
   * as the one it replaces (`master client create --days`).
   * Security:
   * - the name and role come from the verified certificate of the connection; the request gives
   *   only the new public key, with a signature made by the new private key (proof of
   *   possession) over this certificate's serial;
   * - a revoked or expired certificate cannot renew;
   * - one live replacement per certificate: once the replacement has been used on a connection,
   *   the old certificate is revoked (in authenticate); before that, the slave may ask again (it
   *   lost the new one) at most once per `certRenewRetryMs`, and the unused one is revoked;
   * - a revocation of the name that lands while the new certificate is being signed covers it.
   * The old certificate stays valid until then: the slave goes on using it on this connection,
   * and still holds it if it fails to store the new one.
   */
  private async renewPeer(remote: RemoteIdentity, publicKey: string, proof: Uint8Array): Promise<ResultOf<'cert.renew'>> {
    if (remote.serial === undefined) throw new BuilderError('BUILDER_ERR_FORBIDDEN', 'no certificate serial on this connection');
    const check = await this.registry.checkSerial(remote.serial);
    if (!check.ok) throw new BuilderError('BUILDER_ERR_CERT', `certificate ${remote.serial} is ${check.reason}`);
    const { record } = check;
    const role = record.role;
    if (role === 'master') throw new BuilderError('BUILDER_ERR_FORBIDDEN', 'the master certificate is not renewed over a connection');
    const now = Date.now();
    if (now > record.notAfter) {
      throw new BuilderError('BUILDER_ERR_CERT', `certificate ${record.serial} has expired`, { hint: role === 'slave' ? 'enroll the slave again' : 'ask the master operator for a new identity (master client create)' });
    }
    const due = renewalDueAt(record.notBefore, record.notAfter);
    if (now < due) {
      throw new BuilderError('BUILDER_ERR_CONFLICT', `certificate ${record.serial} is not due for renewal before ${new Date(due).toISOString()}`, {
        hint: 'a certificate is renewed in the last third of its life',
      });
    }
    const unused: string[] = [];
    for (const r of await this.registry.replacementsOf(record.serial)) {
      if (r.revokedAt !== null) continue;
      if (r.firstSeenAt !== null) {
        throw new BuilderError('BUILDER_ERR_CONFLICT', `certificate ${record.serial} was already renewed: ${r.serial} is in use`, {
          hint: 'the new certificate is the one to connect with; a request with the old one may come from a copy of its key',
        });
      }
      const again = r.issuedAt + this.options.certRenewRetryMs;
      if (now < again) {
        throw new BuilderError('BUILDER_ERR_CONFLICT', `certificate ${record.serial} was renewed at ${new Date(r.issuedAt).toISOString()}; ask again after ${new Date(again).toISOString()}`);
      }
      unused.push(r.serial);
    }
    const publicKeyPem = publicKeyFromProof(publicKey, proof, renewalProofMessage(record.serial));
    for (const serial of unused) {
      await this.registry.revokeSerial(serial);
      this.log.warn({ [role]: record.name, serial, for: record.serial }, `unused renewed certificate revoked: the ${role} asked again`);
    }
    const issued = await signPeer(this.ca, this.registry, {
      name: record.name,
      role,
      publicKeyPem,
      validityDays: role === 'slave' ? this.options.slaveCertDays : Math.min(3650, Math.max(1, Math.round((record.notAfter - record.notBefore) / 86_400_000))),
      replaces: record.serial,
    });
    if (!(await this.registry.checkSerial(record.serial)).ok) {
      await this.registry.revokeSerial(issued.serial);
      throw new BuilderError('BUILDER_ERR_CERT', `certificate ${record.serial} was revoked during its renewal`);
    }
    // The certificate holds whole seconds.
    const notAfter = Math.floor(+issued.notAfter / 1000) * 1000;
    this.log.info({ [role]: record.name, serial: issued.serial, previous: record.serial, expiresAt: new Date(notAfter).toISOString() }, `${role} certificate renewed`);
    return { cert: issued.certPem, ca: this.ca.certPem, serial: issued.serial, notAfter };
  }

  /** Revokes a slave's certificates and drops its connections at once. */
  async revokeSlave(name: string): Promise<number> {
    const n = await this.registry.revoke(name, 'slave');
    for (const p of this.peersNamed(name)) if (p.remote.role === 'slave') p.destroy(new BuilderError('BUILDER_ERR_CERT', 'certificate revoked'));
    if (n > 0) this.log.warn({ slave: name, certificates: n }, 'slave revoked');
    return n;
  }

  /** The enrollment listener's one method (one enrollment per connection, then the peer is expected to leave). */
  private enrollMethods(): RpcMethods {
    return new RpcMethods({ logger: this.log }).handle('enroll.request', async ({ token, name, csr }) => {
      checkName('slave', name);
      const publicKeyPem = publicKeyFromCsr(csr);
      if (await this.registry.hasLiveCertificate(name)) {
        throw new BuilderError('BUILDER_ERR_CONFLICT', `a slave named ${name} is already enrolled`, {
          hint: `pick another --name, or revoke the old one first: master slave revoke ${name}`,
        });
      }
      await this.registry.consumeToken(token, name);
      try {
        const issued = await signPeer(this.ca, this.registry, {
          name,
          role: 'slave',
          publicKeyPem,
          validityDays: this.options.slaveCertDays,
        });
        this.log.info({ slave: name, serial: issued.serial }, 'slave enrolled');
        return { cert: issued.certPem, ca: this.ca.certPem };
      } catch (e) {
        await this.registry.restoreToken(token);
        throw e;
      }
    });
  }
}
