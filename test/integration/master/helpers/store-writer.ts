/**
 * A child process for the SIGKILL test: drives jobs through their transitions as fast as the
 * store allows, many in flight, and prints one line per ACKNOWLEDGED transition
 * ("<jobId> <state>") only after the store's promise resolved. The parent kills it mid-run.
 */
import { MasterStore } from '../../../../master/store/index.js';

const dir = process.argv[2]!;
const store = await MasterStore.open({ dir, synchronous: (process.argv[3] as 'FULL' | 'NORMAL' | undefined) ?? 'FULL' });
const ack = (id: number, state: string) => process.stdout.write(`${id} ${state}\n`);

async function lifecycle(i: number): Promise<void> {
  const spec = { name: `j${i}`, channel: 'stable', arch: 'any', command: { kind: 'argv' as const, argv: ['true'] }, env: { I: String(i) } };
  // Every other job is created already dispatched (one statement, one commit): both of its
  // first transitions are acknowledged by that one write.
  const direct = i % 2 === 1;
  const job = await store.createJob(spec, direct ? 'w1' : undefined);
  ack(job.id, 'queued');
  if (direct) ack(job.id, 'dispatched');
  else {
    const d = await store.dispatchJob(job.id, 'w1');
    if (d.ok) ack(job.id, 'dispatched');
  }
  const s = await store.startJob(job.id, 1);
  if (s.ok) ack(job.id, 'running');
  const f = await store.finishJob(job.id, 1, { state: 'succeeded', exitCode: 0 });
  if (f.ok) ack(job.id, 'succeeded');
}

let i = 0;
const lanes = Array.from({ length: 32 }, async () => {
  for (;;) await lifecycle(i++);
});
process.stdout.write('ready\n');
await Promise.all(lanes);
