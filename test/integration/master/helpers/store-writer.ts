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
  const job = await store.createJob({ name: `j${i}`, channel: 'stable', arch: 'any', command: { kind: 'argv', argv: ['true'] }, env: { I: String(i) } });
  ack(job.id, 'queued');
  const d = await store.dispatchJob(job.id, 'w1');
  if (d.ok) ack(job.id, 'dispatched');
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
