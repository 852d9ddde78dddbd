import assert from 'node:assert/strict';
import { Writable, type Duplex } from 'node:stream';
import pino from 'pino';
import {
  BuilderError,
  ErrorCodes,
  RpcCallError,
  RpcMethods,
  RpcPeer,
  type CallContext,
  type RemoteIdentity,
  type RpcPeerOptions,
  type RpcPeerSetup,
} from '../../../protocol/index.js';
import { RawEnd, duplexPair, settle, until } from './helpers/raw-end.js';

async function rejection(p: Promise<unknown>): Promise<RpcCallError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RpcCallError, `expected an RpcCallError, got ${String(e)}`);
    return e;
  }
  assert.fail('the call succeeded but should have failed');
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

const MASTER: RemoteIdentity = { role: 'master', name: 'master' };

describe('RpcMethods: one method table shared by many connections', function () {
  this.timeout(20_000);
  let opened: Array<RpcPeer | Duplex> = [];

  /** A serving end (seeing `remote`) using `methods`, and the calling end (seeing the master). */
  function connect(methods: RpcMethods, remote: RemoteIdentity, serverOpts: RpcPeerOptions & RpcPeerSetup = {}, callerOpts: RpcPeerOptions = {}) {
    const [a, b] = duplexPair();
    const server = new RpcPeer(a, remote, { ...serverOpts, methods });
    const caller = new RpcPeer(b, MASTER, callerOpts);
    opened.push(server, caller, a, b);
    return { server, caller, a, b };
  }

  afterEach(function () {
    for (const o of opened) o.destroy();
    opened = [];
  });

  describe('when two connections are served from one table', function () {
    it('gives each handler call the context of its own connection', async function () {
      const seen: CallContext[] = [];
      const methods = new RpcMethods().handle('session.hello', (_p, ctx) => {
        seen.push(ctx);
        return { name: ctx.remote.name, role: ctx.remote.role, masterVersion: 'test', serverTime: 0 };
      });
      const one = connect(methods, { role: 'slave', name: 'slave-1' });
      const two = connect(methods, { role: 'client', name: 'alice' });
      const hello = { version: '1', software: 'test' };
      const [r1, r2, r1b] = await Promise.all([one.caller.call('session.hello', hello), two.caller.call('session.hello', hello), one.caller.call('session.hello', hello)]);
      assert.deepEqual([r1.name, r1.role], ['slave-1', 'slave']);
      assert.deepEqual([r2.name, r2.role], ['alice', 'client']);
      assert.equal(r1b.name, 'slave-1');
      assert.equal(seen.length, 3);
      for (const ctx of seen) {
        const mine = ctx.remote.name === 'slave-1' ? one.server : two.server;
        assert.equal(ctx.peer, mine, `the call of ${ctx.remote.name} came with another connection's peer`);
        assert.equal(ctx.remote, mine.remote);
      }
      assert.ok(one.server.serves('session.hello') && two.server.serves('session.hello') && one.server.serves('peer.heartbeat'));
      assert.equal(one.server.serves('token.create'), false);
    });

    it('refuses a role with FORBIDDEN on one connection while serving an allowed role on another', async function () {
      let runs = 0;
      const methods = new RpcMethods().handle('token.create', ({ ttlMs }) => {
        runs++;
        return { token: 'tok', expiresAt: ttlMs, caFingerprint: 'f' };
      });
      const slave = connect(methods, { role: 'slave', name: 'slave-1' });
      const admin = connect(methods, { role: 'admin', name: 'root' });
      const [refused, allowed] = await Promise.allSettled([slave.caller.call('token.create', { ttlMs: 5 }), admin.caller.call('token.create', { ttlMs: 5 })]);
      assert.equal(refused.status, 'rejected');
      const err = (refused).reason as RpcCallError;
      assert.ok(err instanceof RpcCallError);
      assert.equal(err.rpcCode, ErrorCodes.FORBIDDEN);
      assert.equal(err.message, 'role slave may not call token.create');
      assert.deepEqual(err.data, { code: 'BUILDER_ERR_FORBIDDEN' });
      assert.deepEqual(allowed, { status: 'fulfilled', value: { token: 'tok', expiresAt: 5, caFingerprint: 'f' } });
      assert.equal(runs, 1);
      assert.equal(slave.server.closed, false);
    });

    it('answers INVALID_PARAMS naming the first bad field, without running the handler', async function () {
      let runs = 0;
      const methods = new RpcMethods().handle('peer.echo', (p) => {
        runs++;
        return p;
      });
      const { caller } = connect(methods, { role: 'slave', name: 'slave-1' });
      const wrongType = await rejection(caller.call('peer.echo', { seq: 'one' } as never));
      assert.equal(wrongType.rpcCode, ErrorCodes.INVALID_PARAMS);
      assert.match(wrongType.message, /^invalid params: seq: /);
      const notObject = await rejection(caller.call('peer.echo', [1] as never));
      assert.equal(notObject.rpcCode, ErrorCodes.INVALID_PARAMS);
      assert.equal(runs, 0);
      assert.deepEqual(await caller.call('peer.echo', { seq: 2 }), { seq: 2 });
      assert.equal(runs, 1);
    });

    it('answers a refused or invalid notification with nothing, and the next request normally', async function () {
      let runs = 0;
      const methods = new RpcMethods()
        .handle('token.create', () => {
          runs++;
          return { token: 't', expiresAt: 0, caFingerprint: 'f' };
        })
        .handle('peer.echo', (p) => {
          runs++;
          if (p.seq === 13) throw new Error('boom');
          return p;
        });
      const [a, b] = duplexPair();
      const server = new RpcPeer(a, { role: 'slave', name: 'slave-1' }, { methods });
      const raw = new RawEnd(b);
      opened.push(server, a, b);
      raw.send({ jsonrpc: '2.0', method: 'token.create', params: { ttlMs: 1 } });
      raw.send({ jsonrpc: '2.0', method: 'peer.echo', params: { seq: 'x' } });
      raw.send({ jsonrpc: '2.0', method: 'peer.echo', params: { seq: 13 } });
      raw.send({ jsonrpc: '2.0', id: 7, method: 'peer.echo', params: { seq: 7 } });
      const reply = await raw.next();
      assert.deepEqual(reply, { jsonrpc: '2.0', id: 7, result: { seq: 7 } });
      await settle();
      assert.equal(raw.pending, 0);
      assert.equal(runs, 2, 'the throwing notification ran, the refused and invalid ones did not');
      assert.equal(server.closed, false);
    });
  });

  describe('when a handler fails on one connection', function () {
    it('answers that call with an error and keeps serving every connection, that one included', async function () {
      const lines: string[] = [];
      const logger = pino(
        { level: 'error' },
        new Writable({
          write(chunk: Buffer, _enc, cb) {
            lines.push(chunk.toString());
            cb();
          },
        }),
      );
      const methods = new RpcMethods().handle('peer.echo', async (p, ctx) => {
        await Promise.resolve();
        if (ctx.remote.name === 'bad') throw new Error('disk on fire at /var/lib/builder');
        return { seq: p.seq, data: ctx.remote.name };
      });
      const bad = connect(methods, { role: 'slave', name: 'bad' }, { logger });
      const good = connect(methods, { role: 'slave', name: 'good' }, { logger });
      const calls = await Promise.allSettled([
        bad.caller.call('peer.echo', { seq: 1 }),
        good.caller.call('peer.echo', { seq: 2 }),
        bad.caller.call('peer.echo', { seq: 3 }),
        good.caller.call('peer.echo', { seq: 4 }),
      ]);
      for (const i of [0, 2]) {
        const r = calls[i]!;
        assert.equal(r.status, 'rejected');
        const err = (r).reason as RpcCallError;
        assert.equal(err.rpcCode, ErrorCodes.INTERNAL_ERROR);
        assert.equal(err.message, 'internal error');
        assert.equal(err.data, undefined);
      }
      assert.deepEqual(calls[1], { status: 'fulfilled', value: { seq: 2, data: 'good' } });
      assert.deepEqual(calls[3], { status: 'fulfilled', value: { seq: 4, data: 'good' } });
      assert.equal(bad.server.closed || good.server.closed, false);
      // The failure is logged with the name of the connection it happened on.
      await until(() => lines.length === 2, 'two handler failures logged');
      for (const l of lines) {
        const rec = JSON.parse(l) as { peer?: string; msg?: string };
        assert.equal(rec.peer, 'bad');
        assert.equal(rec.msg, 'handler failed');
      }
      // An exposed error keeps its code through the shared table.
      const table2 = new RpcMethods().handle('peer.echo', () => {
        throw new BuilderError('BUILDER_ERR_NOT_FOUND', 'no such thing');
      });
      const third = connect(table2, { role: 'slave', name: 'third' });
      const nf = await rejection(third.caller.call('peer.echo', {}));
      assert.equal(nf.rpcCode, ErrorCodes.NOT_FOUND);
      assert.equal((nf.data as { code?: unknown }).code, 'BUILDER_ERR_NOT_FOUND');
    });

    it('does not hold up another connection while one is stuck at its maxInFlight', async function () {
      const held = gate();
      let stuckRuns = 0;
      const methods = new RpcMethods().handle('peer.echo', async (p, ctx) => {
        if (ctx.remote.name === 'stuck') {
          stuckRuns++;
          await held.promise;
        }
        return p;
      });
      const stuck = connect(methods, { role: 'slave', name: 'stuck' }, { maxInFlight: 2 });
      const free = connect(methods, { role: 'slave', name: 'free' }, { maxInFlight: 2 });
      const waiting = [1, 2, 3, 4].map((seq) => stuck.caller.call('peer.echo', { seq }));
      await until(() => stuckRuns === 2, 'the stuck connection to run two handlers');
      const r = await Promise.all([5, 6, 7, 8].map((seq) => free.caller.call('peer.echo', { seq })));
      assert.deepEqual(
        r.map((x) => x.seq),
        [5, 6, 7, 8],
      );
      assert.equal(stuckRuns, 2, 'the stuck connection ran past its maxInFlight');
      held.open();
      assert.deepEqual((await Promise.all(waiting)).map((x) => x.seq), [1, 2, 3, 4]);
    });
  });

  describe('when one connection registers a method of its own with handle', function () {
    it('serves it on that connection alone, over the shared table', async function () {
      const methods = new RpcMethods().handle('peer.echo', (p) => ({ ...p, data: 'shared' }));
      const one = connect(methods, { role: 'slave', name: 'one' });
      const two = connect(methods, { role: 'slave', name: 'two' });
      one.server.handle('peer.echo', (p) => ({ ...p, data: 'own' }));
      one.server.handle('slave.list', () => ({ slaves: [] }));
      assert.deepEqual(await one.caller.call('peer.echo', { seq: 1 }), { seq: 1, data: 'own' });
      assert.deepEqual(await two.caller.call('peer.echo', { seq: 1 }), { seq: 1, data: 'shared' });
      // Own methods are checked against the catalogue the same way: slave.list is not for slaves.
      const err = await rejection(one.caller.call('slave.list', {}));
      assert.equal(err.rpcCode, ErrorCodes.FORBIDDEN);
      const missing = await rejection(two.caller.call('slave.list', {}));
      assert.equal(missing.rpcCode, -32601);
      assert.equal(two.server.serves('slave.list'), false);
    });
  });

  describe('when connections share the heartbeat ticker', function () {
    it('keeps the others alive after one of them closes', async function () {
      const opts = { heartbeatIntervalMs: 25, deadAfterMs: 300 };
      const methods = new RpcMethods().handle('peer.echo', (p) => p);
      const a = connect(methods, { role: 'slave', name: 'a' }, opts, opts);
      const b = connect(methods, { role: 'slave', name: 'b' }, opts, opts);
      const c = connect(methods, { role: 'slave', name: 'c' }, opts, opts);
      // A fourth connection whose far end only counts the heartbeats it gets (same tick period).
      const [x, y] = duplexPair();
      const counted = new RpcPeer(x, { role: 'slave', name: 'd' }, { heartbeatIntervalMs: 25, deadAfterMs: 10_000, methods });
      const raw = new RawEnd(y);
      opened.push(counted, x, y);
      let closes = 0;
      for (const p of [b.server, b.caller, c.server, c.caller, counted]) p.on('close', () => closes++);
      a.server.destroy();
      a.caller.destroy();
      const before = raw.heartbeats;
      await new Promise((r) => setTimeout(r, 3 * opts.deadAfterMs));
      assert.equal(closes, 0);
      assert.ok(raw.heartbeats >= before + 5, `only ${raw.heartbeats - before} heartbeats after a neighbour closed`);
      assert.deepEqual(await b.caller.call('peer.echo', { seq: 1 }), { seq: 1 });
      assert.deepEqual(await c.caller.call('peer.echo', { seq: 2 }), { seq: 2 });
    });

    it('still closes a silent connection after deadAfterMs while its neighbours live', async function () {
      const opts = { heartbeatIntervalMs: 20, deadAfterMs: 150 };
      const methods = new RpcMethods();
      const live = connect(methods, { role: 'slave', name: 'live' }, opts, opts);
      const [a, b] = duplexPair();
      const silent = new RpcPeer(a, { role: 'slave', name: 'silent' }, { ...opts, methods });
      const raw = new RawEnd(b);
      opened.push(silent, a, b);
      let closedWith: Error | undefined;
      silent.on('close', (err) => (closedWith = err));
      await until(() => silent.closed, 'the silent connection to be closed', 5_000);
      assert.ok(closedWith instanceof BuilderError && closedWith.code === 'BUILDER_ERR_HEARTBEAT', String(closedWith));
      assert.ok(raw.heartbeats >= 1);
      await new Promise((r) => setTimeout(r, 2 * opts.deadAfterMs));
      assert.equal(live.server.closed || live.caller.closed, false);
    });
  });

  describe('when a connection closes', function () {
    it('calls onClose once with the peer and the error, before the close event', async function () {
      const order: string[] = [];
      const methods = new RpcMethods();
      const onClose = (peer: RpcPeer, err: Error | undefined) => order.push(`hook:${peer.remote.name}:${err?.message ?? ''}`);
      const { server } = connect(methods, { role: 'slave', name: 's' }, { onClose });
      server.on('close', () => order.push('event'));
      server.destroy(new Error('gone'));
      server.destroy(new Error('again'));
      assert.deepEqual(order, ['hook:s:gone', 'event']);
    });
  });
});
