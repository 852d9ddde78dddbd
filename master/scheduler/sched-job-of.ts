import type { Job } from '../store/index.js';
import type { SchedJob } from './scheduler.js';

/** The dispatcher's view of a stored job (what jobQueued / jobHeld take). */
export function schedJobOf(job: Pick<Job, 'id' | 'channel' | 'arch' | 'slots' | 'priority' | 'timeoutMs'>): SchedJob {
  return { id: job.id, channel: job.channel, arch: job.arch, slots: job.slots, priority: job.priority, timeoutMs: job.timeoutMs };
}
