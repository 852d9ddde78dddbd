import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { MasterLink, type MasterLinkOptions } from '../../../cli/builder/lib/master-link.js';
import { BuilderError, isBuilderError } from '../../../protocol/errors.js';
import { RpcCallError, RpcPeer } from '../../../protocol/rpc-peer.js';
import { duplexPair } from '../protocol/helpers/raw-end.js';

describe('MasterLink (the CLI connection that survives a master restart)', function () {
  this.timeout(10_000);
  let opened: Array<RpcPeer | Duplex> = [];

  /**
   * A connection: the CLI's end and the master's end over an in-memory duplex; the master's end
   * serves peer.echo (or never answers, with `silent`).
   */
  function connection(o: { silent?: boolean } = {}): { cli: RpcPeer; masterSide: Duplex } {
    const [a, b] = duplexPair();
    const master = new RpcPeer(a, { role: 'client', name: 'alice' });
    master.handle('peer.echo', (p) => (o.silent ? new Promise<never>(() => undefined) : p));
    const cli = new RpcPeer(b, { role: 'master', name: 'master' });
    opened.push(master, cli, a, b);
    return { cli, masterSide: a };
  }

  /** A clock that only moves when the link sleeps, and the pauses it took. */
  function fakeTime(): Pick<MasterLinkOptions, 'now' | 'sleep'> & { pauses: number[] } {
    let t = 1_000_000;
    const pauses: number[] = [];
    return {
      pauses,
      now: () => t,
      sleep: (ms) => {
        pauses.push(ms);
        t += ms;
        return Promise.resolve();
      },
    };
  }

  afterEach(function () {
    for (const o of opened) o.destroy();
    opened = [];
  });

  describe('when the master closes the connection', function () {
    it('reconnects, makes the call again on the new connection, and tells the loss and the return once each', async function () {
      const first = connection();
      const second = connection();
      const told: string[] = [];
      const link = new MasterLink({
        peer: first.cli,
        connect: () => Promise.resolve(second.cli),
        onLost: (reason) => void told.push(`lost: ${reason}`),
        onRegained: () => void told.push('back'),
      });
      assert.deepEqual(await link.call('peer.echo', { seq: 1 }), { seq: 1 });
      first.masterSide.destroy();
      assert.deepEqual(await link.call('peer.echo', { seq: 2 }), { seq: 2 });
      assert.equal(link.peer, second.cli);
      assert.deepEqual(told, ['lost: connection closed', 'back']);
    });

    it('waits 200 ms doubling to 5 s between attempts, and gives up when the window has passed, naming the last error', async function () {
      const first = connection();
      const time = fakeTime();
      let attempts = 0;
      const link = new MasterLink({
        peer: first.cli,
        reconnectForMs: 20_000,
        lostHint: 'pick up again later',
        ...time,
        connect: () => {
          attempts++;
          return Promise.reject(new BuilderError('BUILDER_ERR_UNAVAILABLE', 'nothing listens at 127.0.0.1:7400'));
        },
      });
      first.masterSide.destroy();
      await assert.rejects(link.call('peer.echo', {}), (e: unknown) => {
        assert.ok(isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE'), String(e));
        assert.equal(e.message, 'lost the connection to the master (connection closed) and could not reconnect within 20s (last attempt: nothing listens at 127.0.0.1:7400)');
        assert.equal(e.hint, 'pick up again later');
        return true;
      });
      assert.deepEqual(time.pauses, [200, 400, 800, 1600, 3200, 5000, 5000, 3800]);
      assert.equal(attempts, 8);
    });

    it('makes no attempt in the last 100 ms of the window (a pause that lands 1 ms short), so the last error is a real one', async function () {
      const first = connection();
      let t = 1_000_000;
      const budgets: number[] = [];
      const link = new MasterLink({
        peer: first.cli,
        reconnectForMs: 1_000,
        now: () => t,
        // Timers and a millisecond clock: the pause to the deadline ends 1 ms before it.
        sleep: (ms) => {
          t += ms - 1;
          return Promise.resolve();
        },
        connect: (timeoutMs) => {
          budgets.push(timeoutMs);
          return Promise.reject(new BuilderError('BUILDER_ERR_UNAVAILABLE', timeoutMs < 100 ? `no TLS connection within ${timeoutMs} ms` : 'nothing listens at 127.0.0.1:7400'));
        },
      });
      first.masterSide.destroy();
      await assert.rejects(link.call('peer.echo', {}), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE') && /\(last attempt: nothing listens at 127\.0\.0\.1:7400\)$/.test(e.message));
      assert.ok(budgets.every((b) => b >= 100), `attempt budgets ${budgets.join(', ')}`);
      assert.equal(budgets.length, 3);
    });

    it('with a window of 0, fails at once and never reconnects', async function () {
      const first = connection();
      let attempts = 0;
      const link = new MasterLink({
        peer: first.cli,
        reconnectForMs: 0,
        connect: () => {
          attempts++;
          return Promise.resolve(connection().cli);
        },
      });
      first.masterSide.destroy();
      await assert.rejects(link.call('peer.echo', {}), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_UNAVAILABLE') && e.message === 'lost the connection to the master (connection closed)');
      assert.equal(attempts, 0);
    });

    it('stops at once on an identity that cannot be used (BUILDER_ERR_CONFIG)', async function () {
      const first = connection();
      const time = fakeTime();
      const link = new MasterLink({ peer: first.cli, ...time, connect: () => Promise.reject(new BuilderError('BUILDER_ERR_CONFIG', 'cannot read identity file')) });
      first.masterSide.destroy();
      await assert.rejects(link.call('peer.echo', {}), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
      assert.deepEqual(time.pauses, []);
    });

    it('calls that fail together share one reconnect', async function () {
      const first = connection({ silent: true });
      const second = connection();
      let attempts = 0;
      const link = new MasterLink({
        peer: first.cli,
        connect: () => {
          attempts++;
          return Promise.resolve(second.cli);
        },
      });
      const calls = [link.call('peer.echo', { seq: 1 }), link.call('peer.echo', { seq: 2 })];
      first.masterSide.destroy();
      assert.deepEqual(await Promise.all(calls), [{ seq: 1 }, { seq: 2 }]);
      assert.equal(attempts, 1);
    });
  });

  describe('when the master answers', function () {
    it('passes its error on as it is, without reconnecting', async function () {
      const [a, b] = duplexPair();
      const master = new RpcPeer(a, { role: 'client', name: 'alice' });
      master.handle('peer.echo', () => {
        throw new BuilderError('BUILDER_ERR_NOT_FOUND', 'no job 9');
      });
      const cli = new RpcPeer(b, { role: 'master', name: 'master' });
      opened.push(master, cli, a, b);
      let attempts = 0;
      const link = new MasterLink({
        peer: cli,
        connect: () => {
          attempts++;
          return Promise.resolve(cli);
        },
      });
      await assert.rejects(link.call('peer.echo', {}), (e: unknown) => e instanceof RpcCallError && e.message === 'no job 9');
      assert.equal(attempts, 0);
    });

    it('but not within the call\'s timeout, drops that connection and makes the call again on a new one', async function () {
      const first = connection({ silent: true });
      const second = connection();
      const link = new MasterLink({ peer: first.cli, connect: () => Promise.resolve(second.cli) });
      assert.deepEqual(await link.call('peer.echo', { seq: 3 }, { timeoutMs: 50 }), { seq: 3 });
      assert.equal(first.cli.closed, true);
      assert.equal(link.peer, second.cli);
    });
  });

  it('refuses options out of range', function () {
    const { cli } = connection();
    assert.throws(() => new MasterLink({ peer: cli, reconnectForMs: -1 }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    assert.throws(() => new MasterLink({ peer: cli, firstDelayMs: 0 }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
    assert.throws(() => new MasterLink({ peer: cli, maxDelayMs: Number.NaN }), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CONFIG'));
  });
});
