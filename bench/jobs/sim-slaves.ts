/**
 * A simulated slave process holding many slave connections (issue 3: "a simulated slave process
 * may hold many connections"). Started by bench/jobs/run.ts with IPC:
 *   node dist/bench/jobs/sim-slaves.js <identities.json> <master HOST:PORT> [--channel sim]
 *     [--capacity 5] [--run]
 * identities.json: {ca, key, slaves: [{name, cert}]} (one key pair, a certificate per name).
 * Each connection says hello and subscribes like `slave run` (nothing running), then:
 * - without `--run`, idles (heartbeats only): the master's memory with 1,000 slaves connected;
 * - with `--run`, runs each assignment as a no-op job that takes no time, through the slave's
 *   own protocol: it accepts `attempt.assign` (the master marks the job running), then at the
 *   next turn of the event loop sends `attempt.finish` (succeeded, exit 0) carrying the log's end
 *   record, as a real slave does for a job that printed nothing. What is left is the master's
 *   own cost per job: the wire, the durable transitions, the dispatch. No process is started.
 * Sends {connected: n, failed} to the parent, then waits for SIGTERM; on {count: true} it answers
 * {finished, finishErrors}.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { connectRpc, mutualTlsClientOptions, parseHostPort, type RpcPeer } from '../../protocol/index.js';

interface Identities {
  ca: string;
  key: string;
  slaves: Array<{ name: string; cert: string }>;
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { channel: { type: 'string', default: 'sim' }, capacity: { type: 'string', default: '5' }, run: { type: 'boolean', default: false } },
  });
  const [file, master] = positionals;
  if (!file || !master) throw new Error('usage: sim-slaves <identities.json> <HOST:PORT> [--channel C] [--capacity N] [--run]');
  const capacity = Number(values.capacity);
  const ids = JSON.parse(await readFile(file, 'utf8')) as Identities;
  const { host, port } = parseHostPort(master);
  const peers: RpcPeer[] = [];
  let next = 0;
  let failed = 0;
  let finished = 0;
  let finishErrors = 0;
  // A few connections at a time: the master's TLS handshakes are the cost.
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < ids.slaves.length) {
        const s = ids.slaves[next++]!;
        try {
          const peer = await connectRpc({ tls: mutualTlsClientOptions({ ca: ids.ca, cert: s.cert, key: ids.key }, host, port), remote: { role: 'master', name: 'master' } });
          if (values.run) {
            peer.handle('attempt.assign', (a) => {
              setImmediate(() => {
                const end = { jobId: a.jobId, attempt: a.attempt, logEnd: 1, state: 'succeeded' as const, exitCode: 0, signal: null, reason: null, setupFailure: false, refused: [], conflicts: [], artifacts: [] };
                peer.call('attempt.finish', end).then(
                  () => void finished++,
                  (e: unknown) => {
                    if (finishErrors++ < 3) process.stderr.write(`sim slave ${s.name}: attempt.finish of job ${a.jobId}: ${(e as Error).message}\n`);
                  },
                );
              });
              return { accepted: true as const };
            });
          }
          await peer.call('session.hello', { version: '1', software: 'bench-sim-slave' });
          await peer.call('slave.subscribe', { channels: [values.channel], arches: ['x86_64'], capacity, draining: false, running: [] });
          peers.push(peer);
        } catch (e) {
          failed++;
          if (failed <= 3) process.stderr.write(`sim slave ${s.name}: ${(e as Error).message}\n`);
        }
      }
    }),
  );
  process.send?.({ connected: peers.length, failed });
  process.on('message', (m: { count?: boolean }) => {
    if (m.count) process.send?.({ finished, finishErrors });
  });
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
