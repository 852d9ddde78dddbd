import assert from 'node:assert/strict';
import { ErrorCodes, RpcCallError, compileRpcPeerOptions, type RpcPeer } from '../../../protocol/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';

async function forbidden(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RpcCallError, String(e));
    assert.equal(e.rpcCode, ErrorCodes.FORBIDDEN, e.message);
    assert.deepEqual(e.data, { code: 'BUILDER_ERR_FORBIDDEN' });
    return;
  }
  assert.fail('the call was allowed');
}

describe('when peers of each role call the master over mutual TLS', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let slave: RpcPeer;
  let client: RpcPeer;
  let admin: RpcPeer;

  before(async function () {
    farm = await startFarm();
    const [s, c, a] = await Promise.all([farm.identity('build-1', 'slave'), farm.identity('alice', 'client'), farm.identity('root', 'admin')]);
    [slave, client, admin] = await Promise.all([farm.connect(s), farm.connect(c), farm.connect(a)]);
  });

  after(async function () {
    for (const p of [slave, client, admin]) p?.destroy();
    await farm?.close();
  });

  describe('when a slave calls admin methods', function () {
    it('is refused token.create with FORBIDDEN and the same connection then serves peer.echo', async function () {
      await forbidden(slave.call('token.create', { ttlMs: 60_000 }));
      assert.deepEqual(await slave.call('peer.echo', { seq: 1, data: 'after token.create' }), { seq: 1, data: 'after token.create' });
    });

    it('is refused slave.revoke with FORBIDDEN, revokes nothing, and the connection then serves peer.echo', async function () {
      await forbidden(slave.call('slave.revoke', { name: 'build-1' }));
      assert.deepEqual(await slave.call('peer.echo', { seq: 2 }), { seq: 2 });
      const { slaves } = await admin.call('slave.list', {});
      assert.deepEqual(
        slaves.filter((s) => s.name === 'build-1').map((s) => s.revoked),
        [false],
      );
    });

    it('is refused slave.list, which is for people', async function () {
      await forbidden(slave.call('slave.list', {}));
    });

    it('is not disconnected by more refusals than maxProtocolErrors', async function () {
      const n = compileRpcPeerOptions(farm.master.options.rpc).maxProtocolErrors;
      for (let i = 0; i < n + 2; i++) await forbidden(slave.call('token.create', { ttlMs: 1000 }));
      assert.deepEqual(await slave.call('peer.echo', { seq: 3 }), { seq: 3 });
      assert.equal(slave.closed, false);
    });
  });

  describe('when a client calls', function () {
    it('may list slaves, and sees the connected slave', async function () {
      const { slaves } = await client.call('slave.list', {});
      const b1 = slaves.find((s) => s.name === 'build-1');
      assert.ok(b1, JSON.stringify(slaves));
      assert.equal(b1.revoked, false);
      assert.equal(b1.connected, true);
    });

    it('may not create tokens or revoke slaves', async function () {
      await forbidden(client.call('token.create', { ttlMs: 60_000 }));
      await forbidden(client.call('slave.revoke', { name: 'build-1' }));
      assert.deepEqual(await client.call('peer.echo', { seq: 4 }), { seq: 4 });
    });
  });

  describe('when an admin calls', function () {
    it('may create an enrollment token', async function () {
      const before = Date.now();
      const t = await admin.call('token.create', { ttlMs: 60_000 });
      assert.equal(typeof t.token, 'string');
      assert.ok(t.token.length >= 16);
      assert.ok(t.expiresAt >= before + 60_000 - 1000 && t.expiresAt <= Date.now() + 60_000 + 1000, String(t.expiresAt));
      assert.match(t.caFingerprint, /\S/);
    });

    it('may list slaves', async function () {
      const { slaves } = await admin.call('slave.list', {});
      assert.ok(slaves.some((s) => s.name === 'build-1'));
    });
  });
});
