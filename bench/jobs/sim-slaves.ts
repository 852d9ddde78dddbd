/**
 * A simulated slave process holding many slave connections (issue 3: "a simulated slave process
 * may hold many connections"), for the master's memory with 1,000 slaves connected. Started by
 * bench/jobs/run.ts with IPC:
 *   node dist/bench/jobs/sim-slaves.js <identities.json> <master HOST:PORT>
 * identities.json: {ca, key, slaves: [{name, cert}]} (one key pair, a certificate per name).
 * Each connection says hello and subscribes like `slave run` (capacity 5, nothing running), then
 * idles (heartbeats only). Sends {connected: n} to the parent, then waits for SIGTERM.
 */
import { readFile } from 'node:fs/promises';
import { connectRpc, mutualTlsClientOptions, parseHostPort, type RpcPeer } from '../../protocol/index.js';

interface Identities {
  ca: string;
  key: string;
  slaves: Array<{ name: string; cert: string }>;
}

async function main(): Promise<void> {
  const [file, master] = process.argv.slice(2);
  if (!file || !master) throw new Error('usage: sim-slaves <identities.json> <HOST:PORT>');
  const ids = JSON.parse(await readFile(file, 'utf8')) as Identities;
  const { host, port } = parseHostPort(master);
  const peers: RpcPeer[] = [];
  let next = 0;
  let failed = 0;
  // A few connections at a time: the master's TLS handshakes are the cost.
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < ids.slaves.length) {
        const s = ids.slaves[next++]!;
        try {
          const peer = await connectRpc({ tls: mutualTlsClientOptions({ ca: ids.ca, cert: s.cert, key: ids.key }, host, port), remote: { role: 'master', name: 'master' } });
          await peer.call('session.hello', { version: '1', software: 'bench-sim-slave' });
          await peer.call('slave.subscribe', { channels: ['sim'], arches: ['x86_64'], capacity: 5, draining: false, running: [] });
          peers.push(peer);
        } catch (e) {
          failed++;
          if (failed <= 3) process.stderr.write(`sim slave ${s.name}: ${(e as Error).message}\n`);
        }
      }
    }),
  );
  process.send?.({ connected: peers.length, failed });
  const stop = () => {
    for (const p of peers) p.destroy();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('disconnect', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
