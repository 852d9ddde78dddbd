import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Master, type MasterOptions } from '../../master/index.js';
import { PkiRegistry, initCa, issueIdentity, loadCa, loadIdentity, type Role, type Validity } from '../../pki/index.js';
import { connectRpc, mutualTlsClientOptions, type RpcPeer, type RpcPeerOptions } from '../../protocol/index.js';

/** A fresh temporary directory; remove it with `rm(dir, { recursive: true, force: true })`. */
export function tempDir(prefix = 'builder-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A master with a fresh CA in a temp dir, listening on 127.0.0.1 with OS-assigned ports. */
export interface TestFarm {
  dir: string;
  master: Master;
  mainAddress: string;
  enrollAddress: string;
  /** Issues an identity directory for `name` with `role` (key made here), optionally with custom validity. */
  identity(name: string, role: Role, validity?: Validity): Promise<string>;
  /** Connects with an identity directory; the caller closes the peer. */
  connect(identityDir: string, rpc?: RpcPeerOptions): Promise<RpcPeer>;
  close(): Promise<void>;
}

export async function startFarm(opts: Partial<MasterOptions> = {}): Promise<TestFarm> {
  const dir = await tempDir();
  await initCa({ dir });
  const master = new Master({ listen: '127.0.0.1:0', enrollListen: '127.0.0.1:0', ...opts, dir });
  const { main, enroll } = await master.start();
  const peers = new Set<RpcPeer>();
  let n = 0;
  return {
    dir,
    master,
    mainAddress: `127.0.0.1:${main.port}`,
    enrollAddress: `127.0.0.1:${enroll.port}`,
    async identity(name, role, validity = {}) {
      const ca = await loadCa(dir);
      const reg = await PkiRegistry.open(ca.paths.registry);
      try {
        const out = join(dir, 'identities', `${name}-${++n}`);
        await issueIdentity(ca, reg, { name, role, outDir: out, ...validity });
        return out;
      } finally {
        await reg.close();
      }
    },
    async connect(identityDir, rpc = {}) {
      const id = await loadIdentity(identityDir);
      const peer = await connectRpc({ ...rpc, tls: mutualTlsClientOptions(id, '127.0.0.1', main.port), remote: { role: 'master', name: 'master' } });
      peers.add(peer);
      return peer;
    },
    async close() {
      for (const p of peers) p.destroy();
      await master.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
