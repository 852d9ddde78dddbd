import assert from 'node:assert/strict';
import tls from 'node:tls';
import { loadCa } from '../../../pki/index.js';
import { DEFAULT_MAX_FRAME_BYTES, ErrorCodes, compileRpcPeerOptions, type RpcPeer } from '../../../protocol/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';
import { RawEnd, until } from '../../unit/protocol/helpers/raw-end.js';
import { frameHeader, rawTls } from './helpers/raw-tls.js';

/**
 * A well-behaved peer calling peer.echo in a loop for as long as it runs, recording every answer
 * that was wrong and every call that failed.
 */
class EchoLoop {
  ok = 0;
  readonly failures: string[] = [];
  private running = true;
  private readonly done: Promise<void>;

  constructor(private readonly peer: RpcPeer) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    for (let seq = 0; this.running; seq++) {
      const data = seq % 2 === 0 ? `echo ${seq}` : Uint8Array.from([seq & 0xff, (seq >> 8) & 0xff, 1, 2, 3]);
      try {
        const r = await this.peer.call('peer.echo', { seq, data }, { timeoutMs: 10_000 });
        const same =
          r.seq === seq &&
          (typeof data === 'string' ? r.data === data : r.data instanceof Uint8Array && Buffer.from(r.data).equals(Buffer.from(data)));
        if (same) this.ok++;
        else this.failures.push(`wrong answer to ${seq}: ${JSON.stringify(r)}`);
      } catch (e) {
        this.failures.push(`call ${seq} failed: ${String(e)}`);
        return;
      }
    }
  }

  /** Resolves once `n` more answers have come back right. */
  async progress(n = 3): Promise<void> {
    const target = this.ok + n;
    await until(() => this.ok >= target || this.failures.length > 0, `${n} more echo answers`);
    assert.deepEqual(this.failures, []);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

describe('when a peer with a valid certificate sends bad frames to a real master', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let mallory: string;
  let good: EchoLoop;
  let raws: RawEnd[] = [];
  const maxProtocolErrors = () => compileRpcPeerOptions(farm.master.options.rpc).maxProtocolErrors;

  async function bad(): Promise<RawEnd & { stream: tls.TLSSocket }> {
    const r = await rawTls(farm, mallory);
    raws.push(r);
    return r;
  }

  /** The master's connections from mallory: none once it dropped the bad one. */
  const malloryConnections = () => farm.master.peersNamed('mallory').length;

  before(async function () {
    farm = await startFarm();
    const [alice, m] = await Promise.all([farm.identity('alice', 'client'), farm.identity('mallory', 'client')]);
    mallory = m;
    good = new EchoLoop(await farm.connect(alice));
    await good.progress(5);
  });

  afterEach(async function () {
    for (const r of raws) r.stream.destroy();
    raws = [];
    // Every bad connection is gone, and the well-behaved peer is still answered.
    await until(() => malloryConnections() === 0, 'the bad connections to be dropped');
    await good.progress();
  });

  after(async function () {
    if (good) await good.stop();
    const failures = good?.failures ?? [];
    const ok = good?.ok ?? 0;
    for (const r of raws) r.stream.destroy();
    await farm?.close();
    assert.deepEqual(failures, [], 'the well-behaved peer saw wrong answers or failures');
    assert.ok(ok > 0);
  });

  it('closes the connection on a declared length over the limit, without waiting for the body', async function () {
    const raw = await bad();
    const limit = compileRpcPeerOptions(farm.master.options.rpc).maxFrameBytes;
    assert.equal(limit, DEFAULT_MAX_FRAME_BYTES);
    raw.sendBytes(frameHeader(limit + 1));
    await raw.closedByPeer();
    await good.progress();
  });

  it('closes cleanly on a truncated frame followed by the end of the stream', async function () {
    const raw = await bad();
    await until(() => malloryConnections() === 1, 'the master to accept the connection');
    raw.sendBytes(Buffer.concat([frameHeader(100), Buffer.from('only ten b')]));
    raw.stream.end();
    await raw.closedByPeer();
    await until(() => malloryConnections() === 0, 'the master to drop the connection');
    await good.progress();
  });

  it('answers the requests sent just before a half-close (one served from SQLite), then closes', async function () {
    const raw = await bad();
    await until(() => malloryConnections() === 1, 'the master to accept the connection');
    raw.send({ jsonrpc: '2.0', id: 1, method: 'job.list', params: { limit: 5 } });
    raw.send({ jsonrpc: '2.0', id: 2, method: 'peer.echo', params: { seq: 2, data: 'last words' } });
    // TLS close_notify, then FIN: the master reads no more but may still write.
    raw.stream.end();
    const replies = [await raw.next(), await raw.next()].sort((a, b) => Number(a.id) - Number(b.id));
    assert.equal(replies[0]!.id, 1);
    assert.deepEqual(replies[0]!.result, { jobs: [] }, JSON.stringify(replies[0]));
    assert.deepEqual(replies[1], { jsonrpc: '2.0', id: 2, result: { seq: 2, data: 'last words' } });
    await raw.closedByPeer();
    await until(() => malloryConnections() === 0, 'the master to drop the connection');
    await good.progress();
  });

  it('answers -32700 with id null to bytes that are not msgpack, and keeps serving the connection', async function () {
    const raw = await bad();
    const body = Buffer.from('this is not msgpack at all');
    raw.sendBytes(Buffer.concat([frameHeader(body.length), body]));
    const r = await raw.next();
    assert.equal(r.jsonrpc, '2.0');
    assert.equal(r.id, null);
    assert.equal(r.error?.code, ErrorCodes.PARSE_ERROR);
    raw.send({ jsonrpc: '2.0', id: 1, method: 'peer.echo', params: { seq: 1 } });
    assert.deepEqual(await raw.next(), { jsonrpc: '2.0', id: 1, result: { seq: 1 } });
    await good.progress();
  });

  it('answers -32600 to msgpack that is not JSON-RPC', async function () {
    const raw = await bad();
    raw.send({ hello: 'world', id: 3 });
    const r = await raw.next();
    assert.equal(r.id, 3);
    assert.equal(r.error?.code, ErrorCodes.INVALID_REQUEST);
    raw.send(['not', 'requests']);
    const r2 = await raw.next();
    assert.equal(r2.id, null);
    assert.equal(r2.error?.code, ErrorCodes.INVALID_REQUEST);
    await good.progress();
  });

  it('answers -32601 to an unknown method', async function () {
    const raw = await bad();
    raw.send({ jsonrpc: '2.0', id: 'u1', method: 'master.shutdown', params: {} });
    const r = await raw.next();
    assert.equal(r.id, 'u1');
    assert.equal(r.error?.code, ErrorCodes.METHOD_NOT_FOUND);
    raw.send({ jsonrpc: '2.0', id: 'u2', method: 'constructor', params: {} });
    assert.equal((await raw.next()).error?.code, ErrorCodes.METHOD_NOT_FOUND);
    await good.progress();
  });

  it('answers -32602 to params that fail the schema', async function () {
    const raw = await bad();
    raw.send({ jsonrpc: '2.0', id: 7, method: 'peer.echo', params: { seq: 'seven' } });
    const r = await raw.next();
    assert.equal(r.id, 7);
    assert.equal(r.error?.code, ErrorCodes.INVALID_PARAMS);
    assert.match(r.error.message, /seq/);
    raw.send({ jsonrpc: '2.0', id: 8, method: 'peer.echo', params: { data: 'x'.repeat((1 << 20) + 1) } });
    const r2 = await raw.next();
    assert.equal(r2.id, 8);
    assert.equal(r2.error?.code, ErrorCodes.INVALID_PARAMS);
    await good.progress();
  });

  it('closes the connection after maxProtocolErrors malformed messages, and not before', async function () {
    const raw = await bad();
    const n = maxProtocolErrors();
    for (let i = 0; i < n - 1; i++) raw.send({ malformed: i });
    for (let i = 0; i < n - 1; i++) assert.equal((await raw.next()).error?.code, ErrorCodes.INVALID_REQUEST);
    // Still open after n - 1: a good request is answered.
    raw.send({ jsonrpc: '2.0', id: 1, method: 'peer.echo', params: { seq: 1 } });
    assert.deepEqual((await raw.next()).result, { seq: 1 });
    raw.send({ malformed: n });
    await raw.closedByPeer();
    await good.progress();
  });

  it('serves the well-behaved peer while several bad connections misbehave at once', async function () {
    const [huge, noisy, truncated, forbidden] = await Promise.all([bad(), bad(), bad(), bad()]);
    const garbage = Buffer.from([0xc1, 0xc1, 0xc1]);
    huge.sendBytes(frameHeader(0xffffffff));
    for (let i = 0; i < maxProtocolErrors(); i++) noisy.sendBytes(Buffer.concat([frameHeader(garbage.length), garbage]));
    truncated.sendBytes(frameHeader(5));
    truncated.stream.end();
    forbidden.send({ jsonrpc: '2.0', id: 1, method: 'token.create', params: { ttlMs: 1000 } });
    assert.equal((await forbidden.next()).error?.code, ErrorCodes.FORBIDDEN);
    await Promise.all([huge, noisy, truncated].map((r) => r.closedByPeer()));
    await good.progress(10);
  });
});

describe('when an anonymous peer sends bad frames to the enrollment listener', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let caPem: string;
  let raws: RawEnd[] = [];

  /** A server-authenticated TLS connection to the enrollment port, as a slave without a certificate makes. */
  async function anonymous(): Promise<RawEnd> {
    const port = Number(farm.enrollAddress.split(':')[1]);
    const socket = tls.connect({ host: '127.0.0.1', port, ca: [caPem], minVersion: 'TLSv1.3' });
    const raw = new RawEnd(socket);
    raws.push(raw);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no TLS connection within 10 s')), 10_000);
      socket.once('secureConnect', () => {
        clearTimeout(t);
        resolve();
      });
      socket.once('error', (err: Error) => {
        clearTimeout(t);
        reject(err);
      });
    });
    return raw;
  }

  before(async function () {
    farm = await startFarm();
    caPem = (await loadCa(farm.dir)).certPem;
  });

  afterEach(function () {
    for (const r of raws) r.stream.destroy();
    raws = [];
  });

  after(async function () {
    await farm?.close();
  });

  it('closes the connection on a declared length over the enrollment limit', async function () {
    const raw = await anonymous();
    assert.equal(farm.master.options.enrollMaxFrameBytes, 16 * 1024);
    raw.sendBytes(frameHeader(16 * 1024 + 1));
    await raw.closedByPeer();
  });

  it('serves nothing but enrollment: authenticated methods are not found, not run', async function () {
    const raw = await anonymous();
    raw.send({ jsonrpc: '2.0', id: 1, method: 'peer.echo', params: { seq: 1 } });
    assert.equal((await raw.next()).error?.code, ErrorCodes.METHOD_NOT_FOUND);
    raw.send({ jsonrpc: '2.0', id: 2, method: 'token.create', params: { ttlMs: 1000 } });
    const r = await raw.next();
    assert.equal(r.id, 2);
    assert.equal(r.error?.code, ErrorCodes.METHOD_NOT_FOUND);
  });

  it('answers -32602 to enrollment params that fail the schema', async function () {
    const raw = await anonymous();
    raw.send({ jsonrpc: '2.0', id: 1, method: 'enroll.request', params: { token: 'short', name: 'x', csr: 'y' } });
    const r = await raw.next();
    assert.equal(r.id, 1);
    assert.equal(r.error?.code, ErrorCodes.INVALID_PARAMS);
  });

  it('closes the connection after its two tolerated malformed messages', async function () {
    const raw = await anonymous();
    raw.send({ malformed: 1 });
    assert.equal((await raw.next()).error?.code, ErrorCodes.INVALID_REQUEST);
    raw.send({ malformed: 2 });
    await raw.closedByPeer();
  });
});
