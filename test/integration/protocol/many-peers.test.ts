import assert from 'node:assert/strict';
import type { RpcPeer } from '../../../protocol/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';
import { until } from '../../unit/protocol/helpers/raw-end.js';

const PEERS = 100;
// RSA key generation is the slow part of an identity: a few, each used by many connections.
const IDENTITIES = 4;

describe('when 100 peers are connected to a real master at once', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let names: string[];
  let peers: RpcPeer[] = [];
  /** How often the master called each client peer. */
  let calledBy: number[];

  before(async function () {
    farm = await startFarm();
    names = Array.from({ length: IDENTITIES }, (_, i) => `load-${i}`);
    const dirs = await Promise.all(names.map((n) => farm.identity(n, 'client')));
    calledBy = new Array<number>(PEERS).fill(0);
    peers = await Promise.all(
      Array.from({ length: PEERS }, async (_, i) => {
        const peer = await farm.connect(dirs[i % IDENTITIES]!, { requestTimeoutMs: 30_000 });
        peer.handle('peer.echo', (p) => {
          calledBy[i]!++;
          return p;
        });
        return peer;
      }),
    );
    const total = () => names.reduce((n, name) => n + farm.master.peersNamed(name).length, 0);
    await until(() => total() === PEERS, `the master to register ${PEERS} connections`, 30_000);
  });

  after(async function () {
    for (const p of peers) p.destroy();
    peers = [];
    await farm?.close();
  });

  it('answers every peer and is answered by every peer, all calls at the same time, with the right data', async function () {
    const masterSide = names.flatMap((n) => farm.master.peersNamed(n));
    assert.equal(masterSide.length, PEERS);
    const payload = (tag: string, i: number) => `${tag}-${i}-${'x'.repeat(i * 37)}`;

    const fromPeers = peers.map(async (peer, i) => {
      const r = await peer.call('peer.echo', { seq: i, data: payload('up', i) });
      assert.deepEqual(r, { seq: i, data: payload('up', i) });
    });
    const fromMaster = masterSide.map(async (peer, i) => {
      const bytes = Uint8Array.from({ length: 64 + i }, (_, k) => (k * 7 + i) & 0xff);
      const r = await peer.call('peer.echo', { seq: 1000 + i, data: bytes });
      assert.equal(r.seq, 1000 + i);
      assert.ok(r.data instanceof Uint8Array);
      assert.deepEqual(new Uint8Array(r.data), bytes);
    });
    const results = await Promise.allSettled([...fromPeers, ...fromMaster]);
    const failed = results.filter((r) => r.status === 'rejected');
    assert.deepEqual(failed, [], `${failed.length} of ${results.length} calls failed`);

    // The master's connection objects and the client peers are the same 100 connections, one to one.
    assert.deepEqual(calledBy, new Array<number>(PEERS).fill(1));
    assert.ok(peers.every((p) => !p.closed));
  });

  it('answers a second round from every peer on the same connections', async function () {
    const r = await Promise.all(peers.map((p, i) => p.call('peer.echo', { seq: i })));
    assert.deepEqual(
      r.map((x) => x.seq),
      peers.map((_, i) => i),
    );
  });
});
