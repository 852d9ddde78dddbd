import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import sqlite3 from 'sqlite3';
import { BuilderError } from '../../protocol/errors.js';
import { checkName, checkRelativePath } from '../../protocol/names.js';
import { checkNewJob, type CheckedJob } from './job-spec.js';
import { MIGRATIONS } from './migrations.js';
import {
  toArtifact,
  toAttempt,
  toEvent,
  toJob,
  toSchedule,
  toSlave,
  type ArtifactRow,
  type AttemptRow,
  type EventRow,
  JOB_JSON,
  type JobJsonRow,
  type ScheduleRow,
  type SlaveRow,
} from './rows.js';
import { Checkpointer } from './checkpointer.js';
import { SqliteConn, type SqlValue } from './sqlite-conn.js';
import { compileStoreOptions, type CompiledStoreOptions, type StoreOptions } from './store-options.js';
import { isFinalState, type Artifact, type ArtifactKind, type Attempt, type Job, type JobEvent, type JobState, type NewJob, type Schedule, type SlaveRecord, type TransitionResult } from './types.js';
import { WriteQueue, type GroupWrite, type WriteOp } from './write-queue.js';

/** Filters of {@link MasterStore.listJobs}; newest first. */
export interface ListJobsQuery {
  state?: JobState;
  channel?: string;
  /** Default 100, at most the store's `maxListLimit`. */
  limit?: number;
  /** Only jobs with a smaller id (the next page after the last id seen). */
  beforeId?: number;
}

/** Filters of {@link MasterStore.listEvents}; oldest first, so a reader can follow with `afterId`. */
export interface ListEventsQuery {
  jobId?: number;
  afterId?: number;
  limit?: number;
}

/** How an attempt ended with a result. */
export interface FinishOutcome {
  state: 'succeeded' | 'failed' | 'timed_out';
  exitCode?: number | null;
  signal?: string | null;
  reason?: string;
}

export interface RequeueOptions {
  reason: string;
  /** The attempt failed before the job's process ran (counts toward the slave's quarantine). */
  setupFailure?: boolean;
  /** Only from dispatched (an assignment not accepted in time): a running attempt is left alone. */
  onlyDispatched?: boolean;
}

export interface SlaveUpsert {
  name: string;
  channels: string[];
  arches: string[];
  capacity: number;
}

export interface NewSchedule {
  id: string;
  cron: string;
  tz: string;
  template: NewJob;
  paused?: boolean;
  /** The first fire time (computed by the caller from the cron expression); null when paused. */
  nextFireAt: number | null;
}

export interface NewArtifact {
  jobId: number;
  attempt: number;
  name: string;
  size: number;
  sha256: string;
  kind: ArtifactKind;
  path: string;
}

/** The result of {@link MasterStore.fireSchedule}. */
export type FireResult = { ok: true; schedule: Schedule; job: Job } | { ok: false; schedule: Schedule | undefined };

function notFoundOrState(job: Job | undefined): { ok: false; job: Job | undefined } {
  return { ok: false, job };
}

/** What a merged statement's rows may hold: JSON carries no Buffer nor bigint. */
type JsonValue = string | number | null;

/**
 * The one parameter of a merged statement: its rows as a JSON array of arrays. A string with a
 * lone surrogate (a reason clipped inside a pair, say) is made well formed first, as binding it
 * would (U+FFFD): in JSON it would be an escape that SQLite decodes into bytes that are not UTF-8.
 */
function jsonParam(rows: JsonValue[][]): string {
  return `[${rows.map(jsonRow).join(',')}]`;
}

/** One row of {@link jsonParam}. */
function jsonRow(row: JsonValue[]): string {
  return JSON.stringify(row.map((v) => (typeof v === 'string' ? v.toWellFormed() : v)));
}

/** A merged statement's parameter at most this long stays bound to the cached statement (UTF-16 units). */
const CACHED_PARAM_MAX = 64 * 1024;

const TRANSITION_OPS = ['dispatch', 'start', 'finish'] as const;
type TransitionOp = (typeof TRANSITION_OPS)[number];
/** The values a transition binds, as columns of the statement's `v` table. */
const TRANSITION_PARAMS = ['v_slave', 'v_attempt', 'v_state', 'v_exit', 'v_signal', 'v_reason', 'v_now'] as const;
type TransitionParam = (typeof TRANSITION_PARAMS)[number];
interface TransitionItem {
  id: number;
  op: TransitionOp;
  params: Partial<Record<TransitionParam, JsonValue>>;
}

/**
 * The compare-and-set transitions of a job row: the state it must be in (`where`, over the old
 * row `jobs` and the bound values `v`) and the columns it sets (expressions over the old row).
 */
const TRANSITIONS: Record<TransitionOp, { from: JobState; where: string; set: Readonly<Record<string, string>> }> = {
  dispatch: {
    from: 'queued',
    where: `jobs.state = 'queued' AND jobs.attempt < jobs.max_attempts`,
    set: {
      state: `'dispatched'`,
      attempt: 'jobs.attempt + 1',
      slave: 'v.v_slave',
      reason: 'v.v_reason',
      updated_at: 'v.v_now',
      dispatched_at: 'v.v_now',
      started_at: 'NULL',
      ended_at: 'NULL',
      exit_code: 'NULL',
      signal: 'NULL',
    },
  },
  start: {
    from: 'dispatched',
    where: `jobs.state = 'dispatched' AND jobs.attempt = v.v_attempt`,
    set: { state: `'running'`, reason: 'v.v_reason', updated_at: 'v.v_now', started_at: 'v.v_now' },
  },
  finish: {
    from: 'running',
    where: `jobs.state = 'running' AND jobs.attempt = v.v_attempt`,
    set: { state: 'v.v_state', exit_code: 'v.v_exit', signal: 'v.v_signal', reason: 'v.v_reason', updated_at: 'v.v_now', ended_at: 'v.v_now' },
  },
};

/**
 * One UPDATE for transitions of distinct jobs, whatever their ops: with one op, its own SET and
 * condition; with several, each set column and the condition are a CASE on the row's `v.v_op`
 * (a column an op does not set keeps its value). The rows come as ONE parameter, a JSON array of
 * arrays read by `json_each` (see {@link transitionParams}), so the text depends only on which
 * ops are present: at most 7 statements, each prepared once and cached, where a VALUES list of
 * n rows was a new statement for each n, prepared for one use, with 9 parameters per row bound
 * one by one on the main thread. `NOT INDEXED` leaves the planner one way in: each row of `v`
 * looks up its job by id. Without it, the planner (which cannot tell how many rows json_each
 * holds) scanned the jobs of the expected state through `jobs_state` instead: with 100,000
 * queued, each dispatch took 48 ms.
 */
export function transitionSql(items: ReadonlyArray<Pick<TransitionItem, 'op'>>): string {
  // Which ops are present, as bits in TRANSITION_OPS order: the text's cache key.
  let key = 0;
  for (const it of items) key |= 1 << TRANSITION_OPS.indexOf(it.op);
  let sql = TRANSITION_SQL[key];
  if (sql === undefined) {
    sql = buildTransitionSql(TRANSITION_OPS.filter((_, i) => (key & (1 << i)) !== 0));
    TRANSITION_SQL[key] = sql;
  }
  return sql;
}

/** {@link transitionSql}'s texts by the bits of the ops present (at most 7; built on first use). */
const TRANSITION_SQL: string[] = [];

function buildTransitionSql(ops: readonly TransitionOp[]): string {
  const pick = (f: (op: TransitionOp) => string | undefined, otherwise: string): string => {
    if (ops.length === 1) return f(ops[0]!) ?? otherwise;
    return `CASE v.v_op ${ops.map((op) => `WHEN '${op}' THEN ${f(op) ?? otherwise}`).join(' ')} END`;
  };
  const cols = [...new Set(ops.flatMap((op) => Object.keys(TRANSITIONS[op].set)))];
  const set = cols.map((col) => `${col} = ${pick((op) => TRANSITIONS[op].set[col], `jobs.${col}`)}`).join(', ');
  const where = pick((op) => `(${TRANSITIONS[op].where})`, '0');
  const vcols = ['v_id', 'v_op', ...TRANSITION_PARAMS].map((c, i) => `value ->> ${i} AS ${c}`).join(', ');
  return `WITH v AS (SELECT ${vcols} FROM json_each(?))
    UPDATE jobs NOT INDEXED SET ${set} FROM v WHERE jobs.id = v.v_id AND ${where} RETURNING ${JOB_JSON}`;
}

/** The one parameter of {@link transitionSql}: `[[id, op, v_slave, v_attempt, ...], ...]` as JSON. */
function transitionParams(items: readonly TransitionItem[]): SqlValue[] {
  return [jsonParam(items.map((it) => [it.id, it.op, ...TRANSITION_PARAMS.map((p) => it.params[p] ?? null)]))];
}

/**
 * The master's persistent store: SQLite in WAL mode, one writer connection behind a group-commit
 * queue and one read-only connection. Every write method resolves only after the COMMIT that
 * holds it has returned (durable before announced); reads go to the reader connection and so
 * never see a write before it is committed.
 */
export class MasterStore {
  private closed = false;

  private constructor(
    readonly options: CompiledStoreOptions,
    private readonly writer: SqliteConn,
    private readonly reader: SqliteConn,
    private readonly queue: WriteQueue,
    private readonly ckptConn: SqliteConn | undefined,
  ) {
    if (ckptConn !== undefined) {
      const policy = { everyCommits: options.checkpointEveryCommits, maxDelayMs: options.checkpointMaxDelayMs, idleMs: options.checkpointIdleMs, maxWalFrames: options.maxWalFrames };
      const sql = 'PRAGMA wal_checkpoint(PASSIVE)';
      type Row = { busy: number; log: number; checkpointed: number };
      this.checkpointer = new Checkpointer(
        () => ckptConn.get<Row>(sql),
        () => queue.enqueueAlone((c) => c.get<Row>(sql)),
        policy,
        // A failed checkpoint loses nothing (the WAL keeps the pages); the next one retries.
        options.onCheckpointError,
      );
      const cp = this.checkpointer;
      queue.onCommit = () => cp.committed();
    }
  }

  /** The background checkpointer (undefined with `checkpoint: 'commit'`). */
  readonly checkpointer: Checkpointer | undefined;

  /** Opens (creating if needed) `<dir>/master.db`, applies pending migrations, opens the reader. */
  static async open(opts: StoreOptions): Promise<MasterStore> {
    const o = compileStoreOptions(opts);
    await mkdir(dirname(o.file), { recursive: true });
    const writer = await SqliteConn.open(o.file, sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE);
    let reader: SqliteConn | undefined;
    let ckpt: SqliteConn | undefined;
    try {
      await writer.exec(`PRAGMA busy_timeout = ${o.busyTimeoutMs}`);
      const mode = await writer.get<{ journal_mode: string }>('PRAGMA journal_mode = WAL');
      if (mode?.journal_mode !== 'wal') throw new BuilderError('BUILDER_ERR_CONFIG', `cannot put ${o.file} in WAL mode`);
      await writer.exec(`PRAGMA synchronous = ${o.synchronous}; PRAGMA foreign_keys = ON;`);
      await migrate(writer);
      reader = await SqliteConn.open(o.file, sqlite3.OPEN_READONLY);
      await reader.exec(`PRAGMA busy_timeout = ${o.busyTimeoutMs}`);
      if (o.checkpoint === 'background') {
        // No COMMIT of the writer runs a checkpoint; the checkpointer's own connection does.
        await writer.exec('PRAGMA wal_autocheckpoint = 0');
        ckpt = await SqliteConn.open(o.file, sqlite3.OPEN_READWRITE);
        await ckpt.exec(`PRAGMA busy_timeout = ${o.busyTimeoutMs}; PRAGMA synchronous = ${o.synchronous}; PRAGMA wal_autocheckpoint = 0;`);
      }
    } catch (e) {
      if (ckpt) await ckpt.close().catch(() => undefined);
      if (reader) await reader.close().catch(() => undefined);
      await writer.close().catch(() => undefined);
      throw e;
    }
    return new MasterStore(o, writer, reader, new WriteQueue(writer, o.maxBatch), ckpt);
  }

  /** The schema version of the open database. */
  async schemaVersion(): Promise<number> {
    const r = await this.reader.get<{ user_version: number }>('PRAGMA user_version');
    return r?.user_version ?? 0;
  }

  /** COMMITs done so far (writes per commit shows how well group commit batches). */
  get commits(): number {
    return this.queue.commits;
  }

  /** Waits for pending writes, then closes both connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.idle();
    await this.checkpointer?.close();
    await this.ckptConn?.close();
    await this.reader.close();
    // Last: closing the last connection checkpoints what is left and removes the WAL.
    await this.writer.close();
  }

  private async write<T>(op: WriteOp<T>): Promise<T> {
    if (this.closed) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the store is closed');
    return this.queue.enqueue(op);
  }

  private async writeGroup<I, R>(g: GroupWrite<I, R>): Promise<R> {
    if (this.closed) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the store is closed');
    return this.queue.enqueueGroup(g);
  }

  /** The clock, checked: a timestamp is a whole number of milliseconds (SQLite would store a fraction as REAL, and JSON reads it back rounded to 15 digits). */
  private now(): number {
    const t = this.options.now();
    if (!Number.isSafeInteger(t)) throw new BuilderError('BUILDER_ERR_CONFIG', `the store's clock returned ${String(t)}, not a whole number of milliseconds`);
    return t;
  }

  // ---- jobs ----

  /** Validates a job submission and applies the defaults (what {@link createJob} stores). */
  checkJob(spec: NewJob): CheckedJob {
    return checkNewJob(spec, this.options);
  }

  /**
   * Validates and stores a new job in state `queued`; or, with `dispatchTo`, already dispatched
   * to that slave (attempt 1). The second form is ONE statement, so one commit where
   * createJob + dispatchJob take two: the row is inserted as dispatched and triggers write what
   * the two would (the event log shows it created queued, then queued -> dispatched, at the same
   * time; the attempt row). For a job that can start at once, it takes a commit off the path
   * from submission to start. Either the job exists dispatched or it does not exist.
   */
  async createJob(spec: NewJob, dispatchTo?: string): Promise<Job> {
    const checked = checkNewJob(spec, this.options);
    if (dispatchTo !== undefined) checkName('slave', dispatchTo);
    const row = newJobRow(checked, this.now(), dispatchTo ?? null);
    return this.writeGroup({ kind: 'create', jobId: null, item: row, bytes: row.json.length, run: insertJobs, oneStatement: true });
  }

  async getJob(id: number): Promise<Job | undefined> {
    const r = await this.reader.get<JobJsonRow>(`SELECT ${JOB_JSON} FROM jobs WHERE id = ?`, [id]);
    return r && toJob(r);
  }

  /** Jobs newest first, filtered by state and channel. */
  async listJobs(q: ListJobsQuery = {}): Promise<Job[]> {
    const where: string[] = [];
    const params: SqlValue[] = [];
    if (q.state !== undefined) {
      where.push('state = ?');
      params.push(q.state);
    }
    if (q.channel !== undefined) {
      where.push('channel = ?');
      params.push(q.channel);
    }
    if (q.beforeId !== undefined) {
      where.push('id < ?');
      params.push(q.beforeId);
    }
    params.push(this.limit(q.limit));
    const sql = `SELECT ${JOB_JSON} FROM jobs ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT ?`;
    return (await this.reader.all<JobJsonRow>(sql, params)).map(toJob);
  }

  /**
   * Recovery on open: every job still queued, dispatched or running, oldest first, so the master
   * can rebuild its queue and start grace timers for the slaves that held jobs.
   */
  async listActiveJobs(): Promise<Job[]> {
    const rows = await this.reader.all<JobJsonRow>(`SELECT ${JOB_JSON} FROM jobs WHERE state IN ('queued','dispatched','running') ORDER BY id`);
    return rows.map(toJob);
  }

  /**
   * Recovery: queued jobs whose last attempt failed in setup, with that slave, so the restarted
   * dispatcher keeps steering them away from it (`SchedJob.avoid`).
   */
  async listSetupFailureAvoids(): Promise<Array<{ jobId: number; slave: string }>> {
    return this.reader.all<{ jobId: number; slave: string }>(
      `SELECT a.job_id AS jobId, a.slave AS slave FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt
       WHERE j.state = 'queued' AND a.setup_failure = 1 ORDER BY j.id`,
    );
  }

  private limit(n: number | undefined): number {
    const l = n ?? 100;
    if (!Number.isSafeInteger(l) || l < 1) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'limit must be a positive integer');
    return Math.min(l, this.options.maxListLimit);
  }

  /**
   * One compare-and-set transition (see {@link TRANSITIONS}), mergeable with every other one:
   * the transitions of a batch, whatever their kinds, run as ONE statement
   * `WITH v AS (SELECT ... FROM json_each(?)) UPDATE jobs NOT INDEXED SET ... FROM v WHERE
   * jobs.id = v.v_id AND <expected state> RETURNING ...` ({@link transitionSql}), where each set
   * column and the condition pick the row's own transition by `v.v_op` (attempt rows and the
   * event log follow by trigger, per row). A batch of such writes alone is one statement, so it
   * commits in autocommit mode: one round trip through the binding's worker. A job with no
   * returned row did not match: `explain` reads its current row for the caller's diagnosis.
   */
  private transition(op: TransitionOp, jobId: number, params: Partial<Record<TransitionParam, JsonValue>>): Promise<TransitionResult> {
    return this.writeGroup<TransitionItem, TransitionResult>({
      kind: 'transition',
      jobId,
      item: { id: jobId, op, params },
      // One UPDATE ... RETURNING (its triggers run inside it).
      oneStatement: true,
      run: async (c, items) => {
        const rows = await c.all<JobJsonRow>(transitionSql(items), transitionParams(items));
        const byId = new Map(rows.map((r) => toJob(r)).map((j) => [j.id, j]));
        return items.map((it): TransitionResult | undefined => {
          const job = byId.get(it.id);
          return job && { ok: true, from: TRANSITIONS[it.op].from, job };
        });
      },
      // A refused transition: the job's current row, for the caller's diagnosis.
      explain: async (c, items) => {
        const ids = items.map((it) => it.id);
        const current = new Map<number, Job>();
        for (const r of await c.all<JobJsonRow>(`SELECT ${JOB_JSON} FROM jobs WHERE id IN (${ids.map(() => '?').join(', ')})`, ids, ids.length === 1)) {
          const job = toJob(r);
          current.set(job.id, job);
        }
        return items.map((it) => notFoundOrState(current.get(it.id)));
      },
    });
  }

  /** queued -> dispatched: starts attempt `attempt + 1` on `slave` (refused when no attempt is left). */
  async dispatchJob(jobId: number, slave: string, reason: string | null = null): Promise<TransitionResult> {
    checkName('slave', slave);
    return this.transition('dispatch', jobId, { v_slave: slave, v_reason: reason, v_now: this.now() });
  }

  /** dispatched -> running, for the given attempt (the slave accepted and started it). */
  startJob(jobId: number, attempt: number, reason: string | null = null): Promise<TransitionResult> {
    return this.transition('start', jobId, { v_attempt: attempt, v_reason: reason, v_now: this.now() });
  }

  /**
   * running -> succeeded | failed | timed_out, for the given attempt only: a stale report (an
   * older attempt, or a job already finished or cancelled) changes nothing. A job still
   * `dispatched` must be started first (the slave's report that it started may arrive with its
   * result; call {@link startJob} then this).
   */
  async finishJob(jobId: number, attempt: number, outcome: FinishOutcome): Promise<TransitionResult> {
    const to = outcome.state;
    if (to !== 'succeeded' && to !== 'failed' && to !== 'timed_out') throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `a job cannot finish as ${String(to)}`);
    return this.transition('finish', jobId, {
      v_attempt: attempt,
      v_state: to,
      v_exit: outcome.exitCode ?? null,
      v_signal: outcome.signal ?? null,
      v_reason: outcome.reason ?? null,
      v_now: this.now(),
    });
  }

  /**
   * dispatched | running -> queued (the attempt ended without a result: slave lost, assignment
   * not accepted in time, setup failure), or -> failed when no attempt is left. With
   * `onlyDispatched`, a running attempt is refused.
   */
  requeueJob(jobId: number, attempt: number, o: RequeueOptions): Promise<TransitionResult> {
    return this.write(async (c) => {
      const job = await loadJob(c, jobId);
      if ((job?.state !== 'dispatched' && (job?.state !== 'running' || o.onlyDispatched === true)) || job.attempt !== attempt) return notFoundOrState(job);
      const now = this.now();
      const exhausted = job.attempt >= job.maxAttempts;
      const reason = exhausted ? `${o.reason}; no attempt left (${job.attempt} of ${job.maxAttempts})` : o.reason;
      const r = await c.get<JobJsonRow>(
        exhausted
          ? `UPDATE jobs SET state = 'failed', reason = ?, updated_at = ?, ended_at = ?, exit_code = NULL, signal = NULL
             WHERE id = ? AND attempt = ? AND state = ? RETURNING ${JOB_JSON}`
          : `UPDATE jobs SET state = 'queued', reason = ?, updated_at = ?, ended_at = NULL, exit_code = NULL, signal = NULL,
               slave = NULL, dispatched_at = NULL, started_at = NULL
             WHERE id = ? AND attempt = ? AND state = ? RETURNING ${JOB_JSON}`,
        exhausted ? [reason, now, now, jobId, attempt, job.state] : [reason, now, jobId, attempt, job.state],
      );
      // Another op of the same batch moved the job between the read and the write.
      if (r === undefined) return notFoundOrState(await loadJob(c, jobId));
      // The attempt ended without a result whatever the job's new state; record whether it was a setup failure.
      await c.run(`UPDATE attempts SET state = 'requeued', reason = ?, setup_failure = ? WHERE job_id = ? AND attempt = ?`, [o.reason, o.setupFailure ? 1 : 0, jobId, attempt]);
      return { ok: true, from: job.state, job: toJob(r) };
    });
  }

  /** queued | dispatched | running -> cancelled. `from` and `job.slave` tell the caller whom to tell. */
  cancelJob(jobId: number, reason = 'cancelled'): Promise<TransitionResult> {
    return this.write(async (c) => {
      const job = await loadJob(c, jobId);
      if (job === undefined || (job.state !== 'queued' && job.state !== 'dispatched' && job.state !== 'running')) return notFoundOrState(job);
      const now = this.now();
      const r = await c.get<JobJsonRow>(`UPDATE jobs SET state = 'cancelled', reason = ?, updated_at = ?, ended_at = ? WHERE id = ? AND state = ? RETURNING ${JOB_JSON}`, [
        reason,
        now,
        now,
        jobId,
        job.state,
      ]);
      if (r === undefined) return notFoundOrState(await loadJob(c, jobId));
      return { ok: true, from: job.state, job: toJob(r) };
    });
  }

  async listAttempts(jobId: number): Promise<Attempt[]> {
    return (await this.reader.all<AttemptRow>('SELECT * FROM attempts WHERE job_id = ? ORDER BY attempt', [jobId])).map(toAttempt);
  }

  /**
   * Attempts that ended before `before` and whose log is still kept, oldest first: the log
   * retention's work list.
   */
  async attemptLogsEndedBefore(before: number, limit: number): Promise<Array<{ jobId: number; attempt: number; endedAt: number }>> {
    const rows = await this.reader.all<{ job_id: number; attempt: number; ended_at: number }>(
      'SELECT job_id, attempt, ended_at FROM attempts WHERE log_removed_at IS NULL AND ended_at IS NOT NULL AND ended_at < ? ORDER BY ended_at LIMIT ?',
      [before, limit],
    );
    return rows.map((r) => ({ jobId: r.job_id, attempt: r.attempt, endedAt: r.ended_at }));
  }

  /** Records that these attempts' logs were removed at `at` (one transaction). */
  markLogsRemoved(list: ReadonlyArray<{ jobId: number; attempt: number }>, at = this.now()): Promise<void> {
    return this.write(async (c) => {
      for (const a of list) await c.run('UPDATE attempts SET log_removed_at = ? WHERE job_id = ? AND attempt = ?', [at, a.jobId, a.attempt]);
    });
  }

  /** When an attempt's log was removed by the retention; null while it is kept (or no such attempt). */
  async logRemovedAt(jobId: number, attempt: number): Promise<number | null> {
    const r = await this.reader.get<{ log_removed_at: number | null }>('SELECT log_removed_at FROM attempts WHERE job_id = ? AND attempt = ?', [jobId, attempt]);
    return r?.log_removed_at ?? null;
  }

  /** The append-only log of state changes, oldest first. */
  async listEvents(q: ListEventsQuery = {}): Promise<JobEvent[]> {
    const after = q.afterId ?? 0;
    const limit = this.limit(q.limit);
    const rows =
      q.jobId === undefined
        ? await this.reader.all<EventRow>('SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?', [after, limit])
        : await this.reader.all<EventRow>('SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?', [q.jobId, after, limit]);
    return rows.map(toEvent);
  }

  // ---- slaves ----

  /** Records a slave's subscription (on connect); keeps drained, quarantine and creation time. */
  async upsertSlave(s: SlaveUpsert): Promise<SlaveRecord> {
    checkName('slave', s.name);
    for (const ch of s.channels) checkName('channel', ch);
    for (const a of s.arches) checkName('arch', a);
    if (!Number.isSafeInteger(s.capacity) || s.capacity < 1) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'capacity must be a positive integer');
    const channels = JSON.stringify([...new Set(s.channels)].sort());
    const arches = JSON.stringify([...new Set(s.arches)].sort());
    return this.write(async (c) => {
      const now = this.now();
      await c.run(
        `INSERT INTO slaves (name, channels, arches, capacity, last_seen, created_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET channels = excluded.channels, arches = excluded.arches, capacity = excluded.capacity, last_seen = excluded.last_seen`,
        [s.name, channels, arches, s.capacity, now, now],
      );
      return toSlave((await c.get<SlaveRow>('SELECT * FROM slaves WHERE name = ?', [s.name]))!);
    });
  }

  setSlaveDrained(name: string, drained: boolean): Promise<boolean> {
    return this.write(async (c) => (await c.run('UPDATE slaves SET drained = ? WHERE name = ?', [drained ? 1 : 0, name])).changes === 1);
  }

  /** Sets (or clears, with null) a slave's quarantine end. */
  setSlaveQuarantine(name: string, until: number | null): Promise<boolean> {
    return this.write(async (c) => (await c.run('UPDATE slaves SET quarantined_until = ? WHERE name = ?', [until, name])).changes === 1);
  }

  /** Records that these slaves were seen at `at` (one transaction for the lot). */
  touchSlaves(names: readonly string[], at = this.now()): Promise<void> {
    return this.write(async (c) => {
      for (const n of names) await c.run('UPDATE slaves SET last_seen = ? WHERE name = ?', [at, n]);
    });
  }

  async getSlave(name: string): Promise<SlaveRecord | undefined> {
    const r = await this.reader.get<SlaveRow>('SELECT * FROM slaves WHERE name = ?', [name]);
    return r && toSlave(r);
  }

  async listSlaves(): Promise<SlaveRecord[]> {
    return (await this.reader.all<SlaveRow>('SELECT * FROM slaves ORDER BY name')).map(toSlave);
  }

  // ---- schedules ----

  /** Stores a new schedule; the template is validated as a job now, so a bad one fails here, not at 3 am. */
  async createSchedule(s: NewSchedule): Promise<Schedule> {
    checkName('schedule', s.id);
    const template = checkNewJob(s.template, this.options);
    return this.write(async (c) => {
      const now = this.now();
      const exists = await c.get<{ id: string }>('SELECT id FROM schedules WHERE id = ?', [s.id]);
      if (exists) throw new BuilderError('BUILDER_ERR_CONFLICT', `schedule ${s.id} already exists`);
      await c.run('INSERT INTO schedules (id, cron, tz, template, paused, next_fire_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
        s.id,
        s.cron,
        s.tz,
        JSON.stringify(template),
        s.paused ? 1 : 0,
        s.paused ? null : s.nextFireAt,
        now,
      ]);
      return toSchedule((await c.get<ScheduleRow>('SELECT * FROM schedules WHERE id = ?', [s.id]))!);
    });
  }

  async getSchedule(id: string): Promise<Schedule | undefined> {
    const r = await this.reader.get<ScheduleRow>('SELECT * FROM schedules WHERE id = ?', [id]);
    return r && toSchedule(r);
  }

  async listSchedules(): Promise<Schedule[]> {
    return (await this.reader.all<ScheduleRow>('SELECT * FROM schedules ORDER BY id')).map(toSchedule);
  }

  /** Pauses (nextFireAt null) or resumes (with the next fire time computed from now). */
  setSchedulePaused(id: string, paused: boolean, nextFireAt: number | null): Promise<Schedule | undefined> {
    return this.write(async (c) => {
      await c.run('UPDATE schedules SET paused = ?, next_fire_at = ? WHERE id = ?', [paused ? 1 : 0, paused ? null : nextFireAt, id]);
      const r = await c.get<ScheduleRow>('SELECT * FROM schedules WHERE id = ?', [id]);
      return r && toSchedule(r);
    });
  }

  removeSchedule(id: string): Promise<boolean> {
    return this.write(async (c) => (await c.run('DELETE FROM schedules WHERE id = ?', [id])).changes === 1);
  }

  /**
   * Fires a schedule: in ONE transaction, compare-and-set `next_fire_at` from `expectedNextFireAt`
   * to `nextFireAt` (and `last_fired_at` to `firedAt`) and create the job from the template.
   * Either both are durable or neither is, so a crash can neither fire twice nor lose a fire;
   * a second caller with the same expectation (a race, a replay) gets `ok: false`.
   */
  fireSchedule(id: string, expectedNextFireAt: number, nextFireAt: number, firedAt: number): Promise<FireResult> {
    return this.write(async (c) => {
      const r = await c.get<ScheduleRow>('SELECT * FROM schedules WHERE id = ?', [id]);
      if (r === undefined || r.paused !== 0 || r.next_fire_at !== expectedNextFireAt) return { ok: false, schedule: r && toSchedule(r) };
      const template = checkNewJob(JSON.parse(r.template) as NewJob, this.options);
      const job = await insertJob(c, template, id, this.now(), `schedule ${id} fired`);
      await c.run('UPDATE schedules SET next_fire_at = ?, last_fired_at = ?, last_job_id = ?, last_error = NULL, last_error_at = NULL WHERE id = ? AND next_fire_at = ?', [
        nextFireAt,
        firedAt,
        job.id,
        id,
        expectedNextFireAt,
      ]);
      return { ok: true, job, schedule: toSchedule({ ...r, next_fire_at: nextFireAt, last_fired_at: firedAt, last_job_id: job.id, last_error: null, last_error_at: null }) };
    });
  }

  /**
   * Records why a fire of the schedule failed by its own fault, and moves its next fire time
   * (compare-and-set on `expectedNextFireAt`, as fireSchedule). Returns the schedule as it now
   * is (unchanged if someone moved it meanwhile), or undefined if it is gone.
   */
  noteScheduleFailure(id: string, expectedNextFireAt: number, nextFireAt: number, error: string, at: number): Promise<Schedule | undefined> {
    return this.write(async (c) => {
      await c.run('UPDATE schedules SET next_fire_at = ?, last_error = ?, last_error_at = ? WHERE id = ? AND paused = 0 AND next_fire_at = ?', [nextFireAt, error, at, id, expectedNextFireAt]);
      const r = await c.get<ScheduleRow>('SELECT * FROM schedules WHERE id = ?', [id]);
      return r && toSchedule(r);
    });
  }

  /** Moves a schedule's next fire time without firing (CAS on the expected value). */
  advanceSchedule(id: string, expectedNextFireAt: number | null, nextFireAt: number | null): Promise<boolean> {
    return this.write(async (c) => (await c.run('UPDATE schedules SET next_fire_at = ? WHERE id = ? AND next_fire_at IS ?', [nextFireAt, id, expectedNextFireAt])).changes === 1);
  }

  // ---- artifacts ----

  async addArtifact(a: NewArtifact): Promise<Artifact> {
    checkRelativePath(a.name);
    if (a.kind !== 'package' && a.kind !== 'image') throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'artifact kind must be package or image');
    if (!/^[0-9a-f]{64}$/.test(a.sha256)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'artifact sha256 must be 64 lowercase hex digits');
    if (!Number.isSafeInteger(a.size) || a.size < 0) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', 'artifact size must be a non-negative integer');
    return this.write(async (c) => {
      const now = this.now();
      const r = await c.run('INSERT INTO artifacts (job_id, attempt, name, size, sha256, kind, path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
        a.jobId,
        a.attempt,
        a.name,
        a.size,
        a.sha256,
        a.kind,
        a.path,
        now,
      ]);
      return { id: r.lastID, ...a, createdAt: now, removedAt: null };
    });
  }

  /** One artifact by id (for downloads). */
  async getArtifact(id: number): Promise<Artifact | undefined> {
    const r = await this.reader.get<ArtifactRow>('SELECT * FROM artifacts WHERE id = ?', [id]);
    return r && toArtifact(r);
  }

  /**
   * Jobs in a final state whose kept images are all older than `before`, by job id from
   * `afterJobId` up (a cursor: the caller skips the ones it keeps), at most `limit` (scanned
   * through the partial index of kept images), with their job name and the newest image's time.
   * A job that may still run (queued again, dispatched, running) is never one: its next attempt
   * files images into the same directory.
   */
  async imageJobsBefore(before: number, afterJobId: number, limit: number): Promise<Array<{ jobId: number; name: string; newest: number }>> {
    const rows = await this.reader.all<{ job_id: number; name: string; newest: number }>(
      `SELECT a.job_id, j.name, MAX(a.created_at) AS newest FROM artifacts a JOIN jobs j ON j.id = a.job_id
       WHERE a.removed_at IS NULL AND a.kind = 'image' AND a.job_id > ? AND j.state IN ('succeeded', 'failed', 'timed_out', 'cancelled')
       GROUP BY a.job_id HAVING newest < ? ORDER BY a.job_id LIMIT ?`,
      [afterJobId, before, limit],
    );
    return rows.map((r) => ({ jobId: r.job_id, name: r.name, newest: r.newest }));
  }

  /**
   * The ids of the newest `n` succeeded jobs named `name` that still have images kept, newest
   * first (a failed build never takes the place of the last good one). Walks the jobs of that
   * name newest first (index jobs_name), each checked against the kept images' index.
   */
  async newestImageJobs(name: string, n: number): Promise<number[]> {
    if (n <= 0) return [];
    const rows = await this.reader.all<{ id: number }>(
      `SELECT j.id FROM jobs j WHERE j.name = ? AND j.state = 'succeeded'
       AND EXISTS (SELECT 1 FROM artifacts a WHERE a.job_id = j.id AND a.removed_at IS NULL AND a.kind = 'image')
       ORDER BY j.id DESC LIMIT ?`,
      [name, n],
    );
    return rows.map((r) => r.id);
  }

  /** Records that these jobs' images were removed at `at` (one transaction). */
  markImagesRemoved(jobIds: readonly number[], at = this.now()): Promise<void> {
    return this.write(async (c) => {
      for (const id of jobIds) await c.run("UPDATE artifacts SET removed_at = ? WHERE job_id = ? AND kind = 'image' AND removed_at IS NULL", [at, id]);
    });
  }

  /**
   * Jobs in a final state that ended before `before`, oldest end first, from after the cursor
   * `after` (the last one of the previous batch), at most `limit`: the job retention's candidates.
   */
  async jobsEndedBefore(before: number, after: { endedAt: number; id: number }, limit: number): Promise<Array<{ id: number; name: string; endedAt: number }>> {
    return this.reader.all<{ id: number; name: string; endedAt: number }>(
      `SELECT id, name, ended_at AS endedAt FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ? AND (ended_at, id) > (?, ?)
       AND state IN ('succeeded', 'failed', 'timed_out', 'cancelled') ORDER BY ended_at, id LIMIT ?`,
      [before, after.endedAt, after.id, limit],
    );
  }

  /**
   * Removes these jobs with their attempts, events and artifacts in one transaction, and lists
   * them in job_purges (for the removal of their files, which follows: see {@link pendingPurges}).
   * A job that is no longer in a final state (retried meanwhile) is left alone. Returns the jobs removed.
   */
  purgeJobs(ids: readonly number[]): Promise<Array<{ jobId: number; name: string; attempts: number }>> {
    return this.write(async (c) => {
      const done: Array<{ jobId: number; name: string; attempts: number }> = [];
      for (const id of ids) {
        const j = await c.get<{ name: string; attempt: number; state: string }>('SELECT name, attempt, state FROM jobs WHERE id = ?', [id]);
        if (j === undefined || !isFinalState(j.state as JobState)) continue;
        await c.run('INSERT OR REPLACE INTO job_purges (job_id, name, attempts) VALUES (?, ?, ?)', [id, j.name, j.attempt]);
        for (const t of ['events', 'attempts', 'artifacts']) await c.run(`DELETE FROM ${t} WHERE job_id = ?`, [id]);
        await c.run('DELETE FROM jobs WHERE id = ?', [id]);
        done.push({ jobId: id, name: j.name, attempts: j.attempt });
      }
      return done;
    });
  }

  /** Jobs removed whose files are still to be removed (a pass cut short, or the one in progress). */
  async pendingPurges(): Promise<Array<{ jobId: number; name: string; attempts: number }>> {
    return (await this.reader.all<{ job_id: number; name: string; attempts: number }>('SELECT job_id, name, attempts FROM job_purges ORDER BY job_id')).map((r) => ({ jobId: r.job_id, name: r.name, attempts: r.attempts }));
  }

  /** Forgets a purge whose files are gone. */
  purgeDone(jobId: number): Promise<void> {
    return this.write(async (c) => {
      await c.run('DELETE FROM job_purges WHERE job_id = ?', [jobId]);
    });
  }

  /** The highest job id ever given (0 before the first job), for "removed" versus "never was". */
  async maxJobId(): Promise<number> {
    const r = await this.reader.get<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'");
    return r?.seq ?? 0;
  }

  /** The sha256 of every input named by a job that may still run (queued, dispatched, running) or by a schedule's template. */
  async inputsInUse(): Promise<Set<string>> {
    const rows = await this.reader.all<{ sha256: string | null }>(
      `SELECT json_extract(i.value, '$.sha256') AS sha256 FROM jobs j, json_each(j.inputs) i WHERE j.state IN ('queued', 'dispatched', 'running')
       UNION SELECT json_extract(i.value, '$.sha256') FROM schedules s, json_each(s.template, '$.inputs') i`,
    );
    return new Set(rows.map((r) => r.sha256).filter((s): s is string => typeof s === 'string'));
  }

  async listArtifacts(jobId: number): Promise<Artifact[]> {
    return (await this.reader.all<ArtifactRow>('SELECT * FROM artifacts WHERE job_id = ? ORDER BY id', [jobId])).map(toArtifact);
  }
}

async function loadJob(c: SqliteConn, id: number): Promise<Job | undefined> {
  const r = await c.get<JobJsonRow>(`SELECT ${JOB_JSON} FROM jobs WHERE id = ?`, [id]);
  return r && toJob(r);
}

const INSERT_COLS = 'name, channel, arch, slots, priority, command, inputs, env, timeout_ms, max_attempts, state, attempt, slave, reason, schedule_id, created_at, updated_at, dispatched_at';
/**
 * A multi-row INSERT of new jobs whose rows come as one JSON parameter (an array of arrays in
 * INSERT_COLS order, read by `json_each` in array order): one statement text for any number of
 * jobs, prepared once (see transitionSql).
 */
const INSERT_JOBS_SQL = `INSERT INTO jobs (${INSERT_COLS})
  SELECT ${INSERT_COLS.split(', ').map((_, i) => `value ->> ${i}`).join(', ')} FROM json_each(?) ORDER BY key RETURNING id`;

/** A job to insert: the checked spec, and its row as JSON (INSERT_COLS order; its length is the group write's `bytes`). */
interface NewJobRow {
  j: CheckedJob;
  now: number;
  slave: string | null;
  json: string;
}

function newJobRow(j: CheckedJob, now: number, slave: string | null): NewJobRow {
  const d = slave !== null;
  const values = [
    j.name, j.channel, j.arch, j.slots, j.priority, JSON.stringify(j.command), JSON.stringify(j.inputs), JSON.stringify(j.env), j.timeoutMs, j.maxAttempts,
    d ? 'dispatched' : 'queued', d ? 1 : 0, slave, null, null, now, now, d ? now : null,
  ];
  return { j, now, slave, json: jsonRow(values) };
}

/**
 * Inserts new jobs with one multi-row INSERT (a group write, INSERT_JOBS_SQL); ids come back in insertion order.
 * An item with a slave is inserted dispatched to it (attempt 1; migration 2's trigger writes its
 * events and attempt row).
 */
async function insertJobs(c: SqliteConn, items: NewJobRow[]): Promise<Job[]> {
  const param = `[${items.map((it) => it.json).join(',')}]`;
  // A large parameter is not kept bound to a cached statement until the next insert.
  const rows = await c.all<{ id: number }>(INSERT_JOBS_SQL, [param], param.length <= CACHED_PARAM_MAX);
  // SQLite assigns AUTOINCREMENT ids in the order of the rows (ORDER BY key); RETURNING's order is not promised, so sort.
  const ids = rows.map((r) => r.id).sort((a, b) => a - b);
  return items.map(({ j, now, slave }, n) => {
    const job = jobOf(ids[n]!, j, null, now, null);
    return slave === null ? job : { ...job, state: 'dispatched', attempt: 1, slave, dispatchedAt: now };
  });
}

function jobOf(id: number, j: CheckedJob, scheduleId: string | null, now: number, reason: string | null): Job {
  return {
    id,
    ...j,
    state: 'queued',
    attempt: 0,
    slave: null,
    exitCode: null,
    signal: null,
    reason,
    scheduleId,
    createdAt: now,
    updatedAt: now,
    dispatchedAt: null,
    startedAt: null,
    endedAt: null,
  };
}

async function insertJob(c: SqliteConn, j: CheckedJob, scheduleId: string | null, now: number, reason: string | null = null): Promise<Job> {
  const command = JSON.stringify(j.command);
  const inputs = JSON.stringify(j.inputs);
  const env = JSON.stringify(j.env);
  const r = await c.run(
    `INSERT INTO jobs (name, channel, arch, slots, priority, command, inputs, env, timeout_ms, max_attempts, state, attempt, reason, schedule_id, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?)`,
    [j.name, j.channel, j.arch, j.slots, j.priority, command, inputs, env, j.timeoutMs, j.maxAttempts, reason, scheduleId, now, now],
  );
  return jobOf(r.lastID, j, scheduleId, now, reason);
}

/** Applies every migration above the database's `user_version`, each in its own transaction. */
async function migrate(c: SqliteConn): Promise<void> {
  const v = (await c.get<{ user_version: number }>('PRAGMA user_version'))?.user_version ?? 0;
  if (v > MIGRATIONS.length) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `the database schema (version ${v}) is newer than this master knows (${MIGRATIONS.length})`, {
      hint: 'run a newer master, or restore a backup made for this version',
    });
  }
  for (let i = v; i < MIGRATIONS.length; i++) {
    await c.exec('BEGIN IMMEDIATE');
    try {
      await c.exec(MIGRATIONS[i]!);
      await c.exec(`PRAGMA user_version = ${i + 1}`);
      await c.exec('COMMIT');
    } catch (e) {
      await c.exec('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }
}
