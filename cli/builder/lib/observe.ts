import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ResultOf } from '../../../protocol/catalogue.js';
import type { RpcPeer } from '../../../protocol/rpc-peer.js';
import { duration, outcome } from './format.js';
import { MasterLink } from './master-link.js';

type JobView = ResultOf<'job.get'>['job'];
export type JobState = JobView['state'];

/** States a job does not leave. */
export const FINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'timed_out', 'cancelled'];

/**
 * Exit codes of `builder observe` (and `builder schedule --observe`) for how the job ended.
 * Distinct from the codes of command errors (1-5), so a script can tell "the job failed" from
 * "the CLI could not ask".
 */
export const JOB_EXIT_CODES: Readonly<Record<JobState, number>> = {
  succeeded: 0,
  failed: 10,
  timed_out: 11,
  cancelled: 12,
  // Not final; only used if observing stops early.
  queued: 1,
  dispatched: 1,
  running: 1,
};

/** Options of {@link observeJob}; every limit named, with its default. */
export interface ObserveOptions {
  peer: RpcPeer;
  jobId: number;
  /** Replay this attempt instead of following the latest. */
  attempt?: number | undefined;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Colour the job's stderr and the state lines (a terminal that allows it). Default false. */
  color?: boolean;
  /** Long-poll wait of one log.read. Default 20 s. */
  waitMs?: number;
  /** Bytes per log.read answer. Default 1 MiB. */
  maxBytes?: number;
  /** Pause between polls when the master answers at once with nothing new. Default 250 ms, doubled up to 2 s. */
  idlePauseMs?: number;
  /** Stops following (the job keeps running). */
  signal?: AbortSignal;
  /**
   * Opens a new connection to the master when the one in use is lost (the master restarted):
   * following then resumes at the first record not yet written. Without it, a lost connection
   * ends observing with BUILDER_ERR_UNAVAILABLE.
   */
  reconnect?: ((timeoutMs: number) => Promise<RpcPeer>) | undefined;
  /** How long to try to reconnect (see MasterLink); 0 disables. Default 60 s. */
  reconnectForMs?: number;
  /** First pause between connection attempts, doubled up to `reconnectMaxDelayMs`. Default 200 ms. */
  reconnectFirstDelayMs?: number;
  /** Longest pause between connection attempts. Default 5 s. */
  reconnectMaxDelayMs?: number;
}

/** How observing ended. */
export interface ObserveResult {
  job: JobView;
  /** True when the job reached a final state; false when observing was stopped first. */
  final: boolean;
}

const RED = '\x1b[31m';
const CYAN = '\x1b[36m';
const RESET = '\x1b[0m';

async function write(stream: NodeJS.WritableStream, data: string | Uint8Array): Promise<void> {
  // Respect backpressure: a job that printed a flood is replayed at the speed the reader takes it.
  if (!stream.write(data)) await once(stream, 'drain');
}

/**
 * Replays a job's log from the start, then follows it live with log.read long polls until the
 * job reaches a final state. Records arrive in seq order (stdout and stderr share one seq), so
 * the job's two streams are written in the order it produced them. State changes are written
 * to `stderr` as lines starting with `[builder]`.
 */
export async function observeJob(o: ObserveOptions): Promise<ObserveResult> {
  const waitMs = o.waitMs ?? 20_000;
  const maxBytes = o.maxBytes ?? 1024 * 1024;
  const idleBase = o.idlePauseMs ?? 250;
  const color = o.color ?? false;
  const { jobId } = o;
  const note = (line: string) => write(o.stderr, color ? `${CYAN}[builder] ${line}${RESET}\n` : `[builder] ${line}\n`);
  let fromSeq = 1;
  // Every call below is a read, safe to make again on a new connection after the master restarted.
  const master = new MasterLink({
    peer: o.peer,
    connect: o.reconnect,
    ...(o.reconnectForMs === undefined ? {} : { reconnectForMs: o.reconnectForMs }),
    ...(o.reconnectFirstDelayMs === undefined ? {} : { firstDelayMs: o.reconnectFirstDelayMs }),
    ...(o.reconnectMaxDelayMs === undefined ? {} : { maxDelayMs: o.reconnectMaxDelayMs }),
    signal: o.signal,
    lostHint: `the job keeps running on the farm; builder observe ${jobId} follows it again`,
    onLost: (reason) => note(`lost the master (${reason}); reconnecting for up to ${duration(o.reconnectForMs ?? 60_000)}`),
    onRegained: (downMs) => note(`reconnected to the master after ${duration(downMs)}; resuming job ${jobId}'s log at record ${fromSeq}`),
  });

  let info = await master.call('job.get', { id: jobId });
  let shownState: string | undefined;
  // A final state is told once, after the whole log (see the end of observeJob).
  const showState = async (job: JobView, waiting: string | null) => {
    if (job.state === shownState || FINAL_STATES.includes(job.state)) return;
    shownState = job.state;
    switch (job.state) {
      case 'queued':
        await note(`job ${jobId} (${job.name}) queued${waiting ? `: ${waiting}` : ''}`);
        break;
      default:
        await note(`job ${jobId} ${job.state} on ${job.slave ?? '?'} (attempt ${job.attempt})`);
    }
  };
  await showState(info.job, info.waiting);

  let attempt = o.attempt ?? 0;
  let fixedAttempt = o.attempt !== undefined;
  let idle = idleBase;
  let graceRounds = 0;
  const aborted = () => o.signal?.aborted === true;

  while (!aborted()) {
    const t0 = Date.now();
    const res = await master.call(
      'log.read',
      { jobId, fromSeq, maxBytes, waitMs, ...(attempt > 0 ? { attempt } : {}) },
      { timeoutMs: waitMs + 15_000 },
    );
    if (aborted()) break;
    if (attempt === 0 && res.attempt > 0) {
      attempt = res.attempt;
      if (attempt > 1) await note(`attempt ${attempt}`);
    }
    let wrote = false;
    for (const r of res.records) {
      if (r.seq < fromSeq) continue;
      if (r.kind === 'data') {
        if (r.stream === 'stdout') await write(o.stdout, r.data);
        else if (color) await write(o.stderr, Buffer.concat([Buffer.from(RED), r.data, Buffer.from(RESET)]));
        else await write(o.stderr, r.data);
        wrote = true;
      } else if (r.kind === 'dropped') {
        await note(`the slave dropped ${r.droppedBytes} bytes of output (records ${r.fromSeq}-${r.toSeq})`);
      }
    }
    fromSeq = Math.max(fromSeq, res.nextSeq);
    const final = FINAL_STATES.includes(res.state);
    if (res.state !== shownState || final) {
      info = await master.call('job.get', { id: jobId });
      // The job's own state is authoritative for the line shown; the log's answer may trail it.
      await showState(info.job, info.waiting);
    }
    if (res.records.length > 0) idle = idleBase;
    if (final || FINAL_STATES.includes(info.job.state)) {
      if (res.ended && !fixedAttempt && attempt > 0 && info.job.attempt > attempt) {
        // The attempt followed ended, and a later one ran to the job's end meanwhile (a slow
        // reader, a long reconnect): that attempt's log is the one to show next.
        attempt = 0;
        fromSeq = 1;
        continue;
      }
      if (res.ended || res.attempt === 0) break;
      // Final but the log not complete: read on while records come (a long log pages in
      // maxBytes at a time); once they stop (e.g. cancelled while the slave still flushes),
      // wait a few short rounds at most.
      if (wrote) {
        graceRounds = 0;
        continue;
      }
      if (++graceRounds > 3 || fixedAttempt) break;
      await sleep(idleBase, undefined, { signal: o.signal }).catch(() => undefined);
      continue;
    }
    if (res.ended && attempt > 0) {
      // This attempt is over but the job is not: it went back to the queue for another attempt.
      while (!aborted()) {
        info = await master.call('job.get', { id: jobId });
        await showState(info.job, info.waiting);
        if (FINAL_STATES.includes(info.job.state) || info.job.attempt > attempt) break;
        await sleep(Math.min(idle, 1000));
      }
      if (FINAL_STATES.includes(info.job.state) && info.job.attempt <= attempt) break;
      attempt = 0;
      fixedAttempt = false;
      fromSeq = 1;
      continue;
    }
    if (res.records.length === 0 && Date.now() - t0 < waitMs / 2) {
      // The master answered at once with nothing new (e.g. the job is still queued): back off.
      await sleep(idle, undefined, { signal: o.signal }).catch(() => undefined);
      idle = Math.min(idle * 2, 2000);
    }
  }
  if (aborted()) return { job: info.job, final: false };
  info = await master.call('job.get', { id: jobId });
  const job = info.job;
  const final = FINAL_STATES.includes(job.state);
  if (final) {
    const took = job.startedAt !== null && job.endedAt !== null ? ` after ${duration(job.endedAt - job.startedAt)}` : '';
    const how = outcome(job);
    await note(`job ${jobId} ${job.state}${how ? ` (${how})` : ''}${took}`);
  }
  return { job, final };
}
