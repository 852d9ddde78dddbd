import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync, sign } from 'node:crypto';
import { once } from 'node:events';
import { readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { certMatchesKey, identityPaths, renewalProofMessage } from '../../../pki/index.js';
import { type RpcPeer } from '../../../protocol/index.js';
import { SlaveAgent } from '../../../slave/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';
import { recordingLogger } from '../../helpers/logs.js';

const DAY = 86_400_000;

/** cert.renew params for a fresh key, proving possession against the certificate in `identityDir` (or signed by another key: `forge`). */
async function renewParams(identityDir: string, opts: { forge?: boolean } = {}): Promise<{ publicKey: string; proof: Uint8Array<ArrayBuffer> }> {
  const serial = new X509Certificate(await readFile(identityPaths(identityDir).cert, 'utf8')).serialNumber;
  const mk = () => generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const key = mk();
  const signer = opts.forge === true ? mk() : key;
  return { publicKey: key.publicKey, proof: sign('sha256', renewalProofMessage(serial), signer.privateKey) };
}


describe('slave certificate renewal over the connection (real master, real TLS)', function () {
  this.timeout(60_000);
  let farm: TestFarm;
  let masterLines: Array<Record<string, unknown>>;
  let agent: SlaveAgent | undefined;
  const peers: RpcPeer[] = [];

  beforeEach(async () => {
    const rec = recordingLogger();
    masterLines = rec.lines;
    farm = await startFarm({ logger: rec.logger, certRenewRetryMs: 1_500 }, { shareCa: true });
  });
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    for (const p of peers.splice(0)) await p.close(200);
    await farm.close();
  });

  it('renews a certificate in its last third after connecting, stores the new pair, and reconnects with it', async () => {
    // 90 days of life, 20 left: due since 10 days.
    const dir = await farm.identity('renew-1', 'slave', { notBefore: new Date(Date.now() - 70 * DAY), notAfter: new Date(Date.now() + 20 * DAY) });
    const paths = identityPaths(dir);
    const [oldCert, oldKey] = [await readFile(paths.cert, 'utf8'), await readFile(paths.key, 'utf8')];
    const oldSerial = new X509Certificate(oldCert).serialNumber.toUpperCase();
    const { logger, lines } = recordingLogger();
    agent = new SlaveAgent({ dir, master: farm.mainAddress, logger });
    const renewed = once(agent, 'renewed') as Promise<[string, number]>;
    await agent.start();
    const [serial, notAfter] = await renewed;

    // On disk: a new key and a certificate for it, under the same name, for 90 more days.
    const cert = new X509Certificate(await readFile(paths.cert, 'utf8'));
    const key = await readFile(paths.key, 'utf8');
    assert.notEqual(key, oldKey);
    assert.ok(certMatchesKey(cert.toString(), key));
    assert.equal(cert.serialNumber.toUpperCase(), serial);
    assert.notEqual(serial, oldSerial);
    assert.match(cert.subject, /CN=renew-1/);
    assert.equal(Date.parse(cert.validTo), notAfter);
    assert.ok(Math.abs(notAfter - (Date.now() + 90 * DAY)) < 2 * DAY, `new end ${new Date(notAfter).toISOString()}`);
    assert.equal((await stat(paths.key)).mode & 0o777, 0o600);
    assert.deepEqual((await readdir(paths.root)).filter((f) => f.endsWith('.new')), []);
    assert.ok(lines.some((l) => l.msg === 'certificate renewed; the next connection uses it' && l.serial === serial), JSON.stringify(lines));
    const said = masterLines.find((l) => l.msg === 'slave certificate renewed');
    assert.ok(said, JSON.stringify(masterLines.filter((l) => Number(l.level) >= 30).map((l) => l.msg)));
    assert.equal(said.slave, 'renew-1');
    assert.equal(said.previous, oldSerial);
    assert.equal(said.serial, serial);

    // The next connection presents the new certificate, and asks for nothing more.
    const reconnected = once(agent, 'connected');
    for (const p of farm.master.peersNamed('renew-1')) p.destroy();
    await reconnected;
    const [now] = farm.master.peersNamed('renew-1');
    assert.equal(now?.remote.serial, serial);
    await agent.renewIfDue();
    assert.equal(masterLines.filter((l) => l.msg === 'slave certificate renewed').length, 1);
    // The new certificate in use, the old one is revoked (a copy of the old key is worth nothing now).
    const admin = await farm.connect(await farm.identity('root', 'admin'));
    peers.push(admin);
    const certs = (await admin.call('slave.list', {})).slaves.filter((c) => c.name === 'renew-1');
    assert.deepEqual(certs.map((c) => [c.serial, c.revoked]).sort(), [[oldSerial, true], [serial, false]].sort());
  });

  it('asks again on the next connection when the connection of a renewal in flight is lost', async () => {
    const dir = await farm.identity('renew-4', 'slave', { notBefore: new Date(Date.now() - 70 * DAY), notAfter: new Date(Date.now() + 20 * DAY) });
    const { logger, lines } = recordingLogger();
    // Reconnects within milliseconds: the new connection comes while the first renewal still makes its key.
    agent = new SlaveAgent({ dir, master: farm.mainAddress, logger, backoffMinMs: 5, backoffMaxMs: 10 });
    let drops = 0;
    agent.on('connected', () => {
      if (drops++ === 0) for (const p of farm.master.peersNamed('renew-4')) p.destroy();
    });
    const renewed = once(agent, 'renewed') as Promise<[string, number]>;
    await agent.start();
    const [serial] = await renewed;
    assert.ok(drops >= 2, `connections: ${drops}`);
    assert.equal(new X509Certificate(await readFile(identityPaths(dir).cert, 'utf8')).serialNumber.toUpperCase(), serial);
    assert.ok(lines.some((l) => l.msg === 'certificate renewal failed; trying again at the next connection and daily'), 'the first one failed with its connection');
  });

  it('refuses a renewal before the last third (a slave, a client or an admin alike), without proof of the key, and again before the retry time; a revocation of the name covers the renewed certificate', async () => {
    const freshDir = await farm.identity('fresh-1', 'slave');
    const fresh = await farm.connect(freshDir);
    peers.push(fresh);
    await assert.rejects(fresh.call('cert.renew', await renewParams(freshDir)), /not due for renewal before \d{4}-/);

    // Clients and admins renew by the same rule (the builder CLI does: builder-cli/identity-renewal.test.ts).
    const bobDir = await farm.identity('bob', 'client');
    const client = await farm.connect(bobDir);
    peers.push(client);
    await assert.rejects(client.call('cert.renew', await renewParams(bobDir)), /not due for renewal before \d{4}-/);
    const rootDir = await farm.identity('root', 'admin');
    const admin = await farm.connect(rootDir);
    peers.push(admin);
    await assert.rejects(admin.call('cert.renew', await renewParams(rootDir)), /not due for renewal before \d{4}-/);

    const dueDir = await farm.identity('renew-2', 'slave', { notBefore: new Date(Date.now() - 80 * DAY), notAfter: new Date(Date.now() + 10 * DAY) });
    const due = await farm.connect(dueDir);
    peers.push(due);
    // A key whose proof another key signed, a proof for another serial, a key that is not one.
    await assert.rejects(due.call('cert.renew', await renewParams(dueDir, { forge: true })), /proof of possession does not verify/);
    await assert.rejects(due.call('cert.renew', await renewParams(freshDir)), /proof of possession does not verify/);
    const good = await renewParams(dueDir);
    await assert.rejects(due.call('cert.renew', { ...good, publicKey: '-----BEGIN PUBLIC KEY-----\n' + 'A'.repeat(200) + '\n-----END PUBLIC KEY-----\n' }), /not a PEM public key/);
    // The name comes from the connection's certificate.
    const res = await due.call('cert.renew', good);
    assert.match(new X509Certificate(res.cert).subject, /CN=renew-2/);
    assert.ok(new X509Certificate(res.cert).publicKey.export({ type: 'spki', format: 'pem' }).toString() === good.publicKey);
    assert.equal(res.ca, await readFile(identityPaths(dueDir).ca, 'utf8'));
    // Asked again with the same certificate before the new one was used: not before the retry time.
    await assert.rejects(due.call('cert.renew', await renewParams(dueDir)), /was renewed at .*; ask again after/);
    await new Promise((r) => setTimeout(r, 1_600));
    const second = await due.call('cert.renew', await renewParams(dueDir));
    const certs = async () => new Map((await admin.call('slave.list', {})).slaves.filter((c) => c.name === 'renew-2').map((c) => [c.serial, c.revoked]));
    assert.deepEqual((await certs()).get(res.serial), true, 'the unused first renewal is revoked');
    assert.deepEqual((await certs()).get(second.serial), false);
    assert.equal(await farm.master.revokeSlave('renew-2'), 2, 'the old and the second renewed certificate');
  });

  it('gives one certificate to two renewals that cross (the second is told to ask again later)', async () => {
    const dir = await farm.identity('renew-5', 'slave', { notBefore: new Date(Date.now() - 80 * DAY), notAfter: new Date(Date.now() + 10 * DAY) });
    const peer = await farm.connect(dir);
    peers.push(peer);
    const [a, b] = await Promise.allSettled([peer.call('cert.renew', await renewParams(dir)), peer.call('cert.renew', await renewParams(dir))]);
    const won = [a, b].filter((r) => r.status === 'fulfilled');
    const lost = [a, b].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1, 'one of the two crossing requests gets a certificate');
    assert.match(String(lost[0]!.reason), /was renewed at .*; ask again after/);
  });

  it('refuses to renew a certificate that expired during the session', async () => {
    const dir = await farm.identity('ended-1', 'slave', { notAfter: new Date(Date.now() + 1_500) });
    const peer = await farm.connect(dir);
    peers.push(peer);
    await new Promise((r) => setTimeout(r, 2_000));
    await assert.rejects(peer.call('cert.renew', await renewParams(dir)), /has expired/);
  });

  it('settles a renewal cut short before a start: a new key without its certificate in place is completed', async () => {
    const dir = await farm.identity('renew-3', 'slave', { notBefore: new Date(Date.now() - 70 * DAY), notAfter: new Date(Date.now() + 20 * DAY) });
    // What a crash between the two renames leaves: the new key in place, its certificate beside it.
    const first = new SlaveAgent({ dir, master: farm.mainAddress });
    const renewed = once(first, 'renewed') as Promise<[string, number]>;
    await first.start();
    const [serial] = await renewed;
    await first.stop();
    const paths = identityPaths(dir);
    await rename(paths.cert, `${paths.cert}.new`);
    // In its place, the slave's previous certificate (another key pair of the same name will do).
    await writeFile(paths.cert, await readFile(identityPaths(await farm.identity('renew-3', 'slave')).cert, 'utf8'));
    const { logger, lines } = recordingLogger();
    agent = new SlaveAgent({ dir, master: farm.mainAddress, logger });
    const connected = once(agent, 'connected');
    await agent.start();
    await connected;
    assert.ok(lines.some((l) => l.msg === 'an interrupted certificate renewal was settled' && l.outcome === 'completed'), JSON.stringify(lines));
    assert.equal(farm.master.peersNamed('renew-3')[0]?.remote.serial, serial);
  });
});
