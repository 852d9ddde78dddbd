import assert from 'node:assert/strict';
import { once } from 'node:events';
import { isBuilderError } from '../../../protocol/index.js';
import { SlaveAgent } from '../../../slave/index.js';
import { startFarm, type TestFarm } from '../../helpers/farm.js';
import { recordingLogger } from '../../helpers/logs.js';

const DAY = 86_400_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a slave whose certificate is out of its dates (real master, real TLS)', function () {
  this.timeout(30_000);
  let farm: TestFarm;
  let agent: SlaveAgent | undefined;
  let masterLines: Array<Record<string, unknown>>;

  beforeEach(async () => {
    const rec = recordingLogger();
    masterLines = rec.lines;
    farm = await startFarm({ logger: rec.logger }, { shareCa: true });
  });
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    await farm.close();
  });

  it('refuses to start with an expired certificate, saying when it expired and how to enroll again, and never connects', async () => {
    const dir = await farm.identity('old-1', 'slave', { notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY) });
    agent = new SlaveAgent({ dir, master: farm.mainAddress });
    await assert.rejects(agent.start(), (e: unknown) => {
      assert.ok(isBuilderError(e, 'BUILDER_ERR_CERT'), String(e));
      assert.match(e.message, /expired on \d{4}-\d\d-\d\dT/);
      assert.match(e.message, /master token create/);
      assert.ok(e.message.includes(`slave enroll --dir ${dir} --force --name old-1`), e.message);
      return true;
    });
    assert.deepEqual(farm.master.connectedNames(), []);
  });

  it('refuses to start with a certificate not valid yet, pointing at the clock', async () => {
    const dir = await farm.identity('early-1', 'slave', { notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 90 * DAY) });
    agent = new SlaveAgent({ dir, master: farm.mainAddress });
    await assert.rejects(agent.start(), (e: unknown) => isBuilderError(e, 'BUILDER_ERR_CERT') && /not valid before .*check this host's clock/.test(e.message));
    assert.deepEqual(farm.master.connectedNames(), []);
  });

  it('connects with a certificate that ends in 3 days, and warns that it expires soon', async () => {
    const dir = await farm.identity('soon-1', 'slave', { notAfter: new Date(Date.now() + 3 * DAY) });
    const { logger, lines } = recordingLogger();
    agent = new SlaveAgent({ dir, master: farm.mainAddress, logger });
    const connected = once(agent, 'connected');
    await agent.start();
    await connected;
    assert.deepEqual(farm.master.connectedNames(), ['soon-1']);
    const warn = lines.find((l) => l.level === 40 && /certificate expires soon/.test(String(l.msg)));
    assert.ok(warn, JSON.stringify(lines));
    assert.equal(warn.daysLeft, 2);
    assert.match(String(warn.msg), /master slave revoke soon-1/);
    // The master says so too, at the connection.
    const said = masterLines.find((l) => l.level === 40 && l.conn === 'soon-1' && /slave certificate expires soon/.test(String(l.msg)));
    assert.ok(said, JSON.stringify(masterLines.filter((l) => Number(l.level) >= 40)));
    assert.equal(said.daysLeft, 2);
  });

  it('does not warn about a certificate with months left', async () => {
    const dir = await farm.identity('fresh-1', 'slave');
    const { logger, lines } = recordingLogger();
    agent = new SlaveAgent({ dir, master: farm.mainAddress, logger });
    const connected = once(agent, 'connected');
    await agent.start();
    await connected;
    assert.equal(lines.filter((l) => /certificate/.test(String(l.msg))).length, 0, JSON.stringify(lines));
    assert.equal(masterLines.filter((l) => /certificate expires/.test(String(l.msg))).length, 0);
  });

  it('says its certificate expired when it cannot reconnect after the certificate ended while it ran', async () => {
    const dir = await farm.identity('ending-1', 'slave', { notAfter: new Date(Date.now() + 2_500) });
    const { logger, lines } = recordingLogger();
    // Not renewed (it would be, at once: it is in the last third of its life).
    agent = new SlaveAgent({ dir, master: farm.mainAddress, logger, backoffMinMs: 100, backoffMaxMs: 300, renewCertificate: false });
    const connected = once(agent, 'connected');
    await agent.start();
    await connected;
    // The session outlives the certificate (TLS checks dates at the handshake only). Once it
    // has ended, the master restarts: it refuses the new handshake, and the slave says why.
    await sleep(3_000);
    const failures: Error[] = [];
    agent.on('connectFailed', (e) => failures.push(e));
    await farm.restart();
    // Refused by the restarted master after the TCP connection was taken (the TLS alert reaches
    // the slave as a closed connection), not a connection refused while it was down.
    const refused = () => failures.filter((e) => /connection closed/.test(e.message)).length;
    for (let i = 0; i < 200 && refused() < 2; i++) await sleep(25);
    assert.ok(refused() >= 2, failures.map((e) => e.message).join('; '));
    const err = lines.find((l) => l.level === 50 && /certificate expired/.test(String(l.msg)));
    assert.ok(err, JSON.stringify(lines.slice(-5)));
    assert.match(String(err.msg), /slave enroll --dir .* --force --name ending-1/);
    assert.deepEqual(farm.master.connectedNames(), []);
  });
});
