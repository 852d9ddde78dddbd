import assert from 'node:assert/strict';
import { ErrorCodes, RpcCallError, type RpcPeer } from '../../../protocol/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';
import { until } from '../../unit/protocol/helpers/raw-end.js';

const HELLO = { version: '1', software: 'test' };

describe("when several connections are served from the master's one method table over mutual TLS", function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let slave: RpcPeer;
  let alice1: RpcPeer;
  let alice2: RpcPeer;
  let admin: RpcPeer;

  before(async function () {
    farm = await startFarm();
    const [s, c, a] = await Promise.all([farm.identity('build-1', 'slave'), farm.identity('alice', 'client'), farm.identity('root', 'admin')]);
    [slave, alice1, alice2, admin] = await Promise.all([farm.connect(s), farm.connect(c), farm.connect(c), farm.connect(a)]);
    await until(() => farm.master.peersNamed('alice').length === 2 && farm.master.connectedNames().length === 3, 'the master to register four connections');
  });

  after(async function () {
    await farm?.close();
  });

  it('tells each connection its own verified name and role', async function () {
    const [s, c1, c2, a] = await Promise.all([slave, alice1, alice2, admin].map((p) => p.call('session.hello', HELLO)));
    assert.deepEqual([s!.name, s!.role], ['build-1', 'slave']);
    assert.deepEqual([c1!.name, c1!.role], ['alice', 'client']);
    assert.deepEqual([c2!.name, c2!.role], ['alice', 'client']);
    assert.deepEqual([a!.name, a!.role], ['root', 'admin']);
  });

  it('refuses a role and bad params on some connections while serving the others at the same time', async function () {
    const [forbidden, invalid, token, echo] = await Promise.allSettled([
      slave.call('token.create', { ttlMs: 60_000 }),
      alice1.call('job.get', { id: 'seven' } as never),
      admin.call('token.create', { ttlMs: 60_000 }),
      alice2.call('peer.echo', { seq: 9 }),
    ]);
    assert.equal(forbidden.status, 'rejected');
    const f = (forbidden).reason as RpcCallError;
    assert.equal(f.rpcCode, ErrorCodes.FORBIDDEN);
    assert.deepEqual(f.data, { code: 'BUILDER_ERR_FORBIDDEN' });
    assert.equal(invalid.status, 'rejected');
    const i = (invalid).reason as RpcCallError;
    assert.equal(i.rpcCode, ErrorCodes.INVALID_PARAMS);
    assert.match(i.message, /^invalid params: id: /);
    assert.equal(token.status, 'fulfilled');
    assert.deepEqual(echo, { status: 'fulfilled', value: { seq: 9 } });
  });

  it('answers a failing call on one connection with its error and keeps the others serving', async function () {
    const [missing, listed] = await Promise.allSettled([admin.call('slave.revoke', { name: 'nobody' }), alice1.call('slave.list', {})]);
    assert.equal(missing.status, 'rejected');
    assert.equal(((missing).reason as RpcCallError).rpcCode, ErrorCodes.NOT_FOUND);
    assert.equal(listed.status, 'fulfilled');
    assert.deepEqual(await admin.call('peer.echo', { seq: 1 }), { seq: 1 });
    assert.equal(admin.closed, false);
  });

  it("forgets each closed connection once, keeping the name while another of its connections is open", async function () {
    alice1.destroy();
    await until(() => farm.master.peersNamed('alice').length === 1, "the master to drop alice's first connection");
    assert.ok(farm.master.connectedNames().includes('alice'));
    assert.equal((await alice2.call('session.hello', HELLO)).name, 'alice');
    alice2.destroy();
    await until(() => !farm.master.connectedNames().includes('alice'), 'the master to forget alice');
    assert.deepEqual(farm.master.connectedNames().sort(), ['build-1', 'root']);
    assert.equal((await slave.call('session.hello', HELLO)).name, 'build-1');
  });
});
