import { rmSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Master, type MasterOptions } from '../../master/index.js';
import { PkiRegistry, caPaths, certFingerprint, generateRsaKeyPair, initCa, issueIdentity, loadCa, loadIdentity, type KeyPairPem, type Role, type Validity } from '../../pki/index.js';
import { connectRpc, mutualTlsClientOptions, type RpcPeer, type RpcPeerOptions } from '../../protocol/index.js';
import { enrollSlave } from '../../slave/index.js';

/**
 * One key pair per identity name for the whole test process: farms issue certificates for the
 * same few names (alice, root, ...) over and over, and a 2048-bit key takes ~150 ms to make.
 * Each farm has its own CA, so no certificate is shared; names within a farm keep distinct keys.
 */
const keysByName = new Map<string, Promise<KeyPairPem>>();
function keyFor(name: string): Promise<KeyPairPem> {
  let k = keysByName.get(name);
  if (k === undefined) keysByName.set(name, (k = generateRsaKeyPair()));
  return k;
}

/** A fresh temporary directory; remove it with `rm(dir, { recursive: true, force: true })`. */
export function tempDir(prefix = 'builder-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A master with a fresh CA in a temp dir, listening on 127.0.0.1 with OS-assigned ports. */
export interface TestFarm {
  dir: string;
  /** The running master (a new object after {@link restart}). */
  master: Master;
  mainAddress: string;
  enrollAddress: string;
  /** Issues an identity directory for `name` with `role` (key made here), optionally with custom validity. */
  identity(name: string, role: Role, validity?: Validity): Promise<string>;
  /**
   * Enrolls a slave through the real enrollment listener (one-time token, CA fingerprint pin,
   * key made on the "slave" side); returns its identity directory (inside the farm dir).
   */
  enroll(name: string): Promise<string>;
  /** Connects with an identity directory; the caller closes the peer. */
  connect(identityDir: string, rpc?: RpcPeerOptions): Promise<RpcPeer>;
  /**
   * Stops the master and starts a new one on the same directory and ports (a restart; the
   * store is closed cleanly, which is what a SIGKILL leaves too since every transition is
   * committed before it is acknowledged). `opts` override the options of the first start.
   */
  restart(opts?: Partial<MasterOptions>): Promise<void>;
  close(): Promise<void>;
}

/** Options of the test farm itself. */
export interface FarmOptions {
  /**
   * Copy a CA made once per test process instead of making one (RSA key generation is most of a
   * farm's start-up time). The directory and databases are still fresh per farm.
   */
  shareCa?: boolean;
}

let caTemplate: Promise<string> | undefined;

/** A CA directory made once per process (removed at exit), copied by farms with `shareCa`. */
function sharedCa(): Promise<string> {
  caTemplate ??= (async () => {
    const d = await tempDir('builder-ca-template-');
    process.once('exit', () => rmSync(d, { recursive: true, force: true }));
    await initCa({ dir: d });
    return d;
  })();
  return caTemplate;
}

export async function startFarm(opts: Partial<MasterOptions> = {}, farmOpts: FarmOptions = {}): Promise<TestFarm> {
  const dir = await tempDir();
  if (farmOpts.shareCa) await cp(await sharedCa(), dir, { recursive: true });
  else await initCa({ dir });
  let options: MasterOptions = { listen: '127.0.0.1:0', enrollListen: '127.0.0.1:0', ...opts, dir };
  let master = new Master(options);
  const { main, enroll } = await master.start();
  const peers = new Set<RpcPeer>();
  let n = 0;
  const farm: TestFarm = {
    dir,
    master,
    mainAddress: `127.0.0.1:${main.port}`,
    enrollAddress: `127.0.0.1:${enroll.port}`,
    async identity(name, role, validity = {}) {
      const ca = await loadCa(dir);
      const reg = await PkiRegistry.open(ca.paths.registry);
      try {
        const out = join(dir, 'identities', `${name}-${++n}`);
        await issueIdentity(ca, reg, { name, role, outDir: out, keys: await keyFor(name), ...validity });
        return out;
      } finally {
        await reg.close();
      }
    },
    async enroll(name) {
      const ca = await loadCa(dir);
      const reg = await PkiRegistry.open(caPaths(dir).registry);
      let token: string;
      try {
        token = (await reg.createToken(60_000)).token;
      } finally {
        await reg.close();
      }
      const out = join(dir, 'identities', `${name}-${++n}`);
      await enrollSlave({ master: farm.enrollAddress, token, caFingerprint: certFingerprint(ca.certPem), dir: out, name });
      return out;
    },
    async connect(identityDir, rpc = {}) {
      const id = await loadIdentity(identityDir);
      const peer = await connectRpc({ ...rpc, tls: mutualTlsClientOptions(id, '127.0.0.1', main.port), remote: { role: 'master', name: 'master' } });
      peers.add(peer);
      peer.on('close', () => peers.delete(peer));
      return peer;
    },
    async restart(more = {}) {
      await master.stop();
      options = { ...options, ...more, listen: `127.0.0.1:${main.port}`, enrollListen: `127.0.0.1:${enroll.port}`, dir };
      master = new Master(options);
      await master.start();
      farm.master = master;
    },
    async close() {
      for (const p of peers) p.destroy();
      await master.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return farm;
}
