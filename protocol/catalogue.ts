import { z } from 'zod';
import type { Role } from '../pki/roles.js';

/**
 * Who is on the other end of a connection. `anonymous` is an unauthenticated peer on the
 * enrollment listener; `master` is the master as seen by a slave.
 */
export type PeerRole = Role | 'anonymous' | 'master';

/** Which side serves a method. */
export type Direction = 'to-master' | 'to-slave' | 'both';

export interface MethodDef<P extends z.ZodType = z.ZodType, R extends z.ZodType = z.ZodType> {
  /** Who serves it. */
  direction: Direction;
  /** Roles allowed to call it. */
  roles: readonly PeerRole[];
  params: P;
  result: R;
  /** Sent as a notification (no id, no reply). */
  notification?: boolean;
  /** One line for docs/protocol.md. */
  summary: string;
}

/**
 * A method's entry. Its schemas are built on the first read of `params` or `result`: a process
 * builds only those of the methods it serves or calls (a slave, about a third of them). Built
 * all at once, they held about 0.8 MiB of heap in every process.
 */
function def<P extends z.ZodType, R extends z.ZodType>(
  d: Omit<MethodDef<P, R>, 'params' | 'result'> & { schemas: () => { params: P; result: R } },
): MethodDef<P, R> {
  const { schemas, ...meta } = d;
  let built: { params: P; result: R } | undefined;
  return {
    ...meta,
    get params() {
      return (built ??= schemas()).params;
    },
    get result() {
      return (built ??= schemas()).result;
    },
  };
}

// Reused schema pieces. Names are checked again with protocol/names at storage boundaries.
const name = z.string().min(1).max(64);
const bytes = z.instanceof(Uint8Array);
const authenticated: readonly PeerRole[] = ['slave', 'client', 'admin'];
const people: readonly PeerRole[] = ['client', 'admin'];

// Job plumbing pieces. Job ids are the master's integers; an attempt counts from 1.
const JOB_STATE_NAMES = ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;
const jobId = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const attempt = z.number().int().min(1).max(1000);
const slotCount = z.number().int().min(1).max(4096);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'sha256 must be 64 lower-case hex digits');
const relPath = z.string().min(1).max(4096);
const scheduleId = z.string().min(1).max(64);
const chunkLength = z.number().int().min(1).max(4 * 1024 * 1024);
const jobCommand = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('script'), text: z.string().min(1).max(1024 * 1024) }),
  z.strictObject({ kind: z.literal('argv'), argv: z.array(z.string().max(64 * 1024)).min(1).max(4096) }),
]);
const envMap = z.record(z.string().max(256), z.string().max(64 * 1024));
const inputFile = z.strictObject({ name: relPath, sha256, size: z.number().int().min(0) });
/** One log record: output of one stream, a marker for output the slave had to drop, or the end. */
const logRecord = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('data'), seq: z.number().int().min(1), stream: z.enum(['stdout', 'stderr']), data: bytes }),
  z.strictObject({ kind: z.literal('dropped'), seq: z.number().int().min(1), fromSeq: z.number().int().min(1), toSeq: z.number().int().min(1), droppedBytes: z.number().int().min(0) }),
  z.strictObject({ kind: z.literal('end'), seq: z.number().int().min(1) }),
]);
/** What a client submits; checked again in full by the master store. */
const newJob = z.strictObject({
  name,
  channel: name,
  arch: name,
  slots: slotCount.optional(),
  priority: z.number().int().optional(),
  command: jobCommand,
  inputs: z.array(inputFile).max(1000).optional(),
  env: envMap.optional(),
  timeoutMs: z.number().int().min(0).optional(),
  maxAttempts: z.number().int().min(1).max(1000).optional(),
});
const jobView = z.strictObject({
  id: z.number().int(),
  name: z.string(),
  channel: z.string(),
  arch: z.string(),
  slots: z.number().int(),
  priority: z.number().int(),
  command: jobCommand,
  inputs: z.array(inputFile),
  env: z.record(z.string(), z.string()),
  timeoutMs: z.number().int(),
  maxAttempts: z.number().int(),
  state: z.enum(JOB_STATE_NAMES),
  attempt: z.number().int(),
  slave: z.string().nullable(),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  reason: z.string().nullable(),
  scheduleId: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
  dispatchedAt: z.number().nullable(),
  startedAt: z.number().nullable(),
  endedAt: z.number().nullable(),
});
const attemptView = z.strictObject({
  attempt: z.number().int(),
  slave: z.string(),
  state: z.string(),
  dispatchedAt: z.number(),
  startedAt: z.number().nullable(),
  endedAt: z.number().nullable(),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  reason: z.string().nullable(),
  setupFailure: z.boolean(),
});
const artifactView = z.strictObject({
  id: z.number().int(),
  jobId: z.number().int(),
  attempt: z.number().int(),
  name: z.string(),
  size: z.number().int(),
  sha256: z.string(),
  kind: z.enum(['package', 'image']),
  createdAt: z.number(),
  /** Set when the image retention removed its file (master run --image-retention). */
  removedAt: z.number().optional(),
});
const scheduleView = z.strictObject({
  id: z.string(),
  cron: z.string(),
  tz: z.string(),
  template: newJob,
  paused: z.boolean(),
  nextFireAt: z.number().nullable(),
  lastFiredAt: z.number().nullable(),
  lastJobId: z.number().int().nullable(),
  createdAt: z.number(),
  /** Set while its last fire failed by its own fault (a template that no longer validates): why, and when; it is tried again at its next tick. */
  lastError: z.string().optional(),
  lastErrorAt: z.number().optional(),
});

/** The one catalogue of methods; both ends use it. Method names are `noun.verb`. */
export const catalogue = {
  'enroll.request': def({
    direction: 'to-master',
    roles: ['anonymous'],
    summary: 'Trade a one-time token and a CSR for a signed slave certificate and the CA certificate.',
    schemas: () => ({
      params: z.strictObject({ token: z.string().min(16).max(128), name, csr: z.string().min(100).max(8192) }),
      result: z.strictObject({ cert: z.string(), ca: z.string() }),
    }),
  }),
  'session.hello': def({
    direction: 'to-master',
    roles: authenticated,
    summary: 'First call on a connection: the peer says who it is; the master answers with its view.',
    schemas: () => ({
      params: z.strictObject({
        version: z.string().max(32),
        software: z.string().max(64).optional(),
      }),
      result: z.strictObject({ name: z.string(), role: z.string(), masterVersion: z.string(), serverTime: z.number() }),
    }),
  }),
  'peer.heartbeat': def({
    direction: 'both',
    roles: ['anonymous', 'slave', 'client', 'admin', 'master'],
    notification: true,
    summary: 'Liveness notification, sent when a connection has been quiet for one heartbeat interval.',
    schemas: () => ({
      params: z.strictObject({ t: z.number() }),
      result: z.null(),
    }),
  }),
  'peer.echo': def({
    direction: 'both',
    roles: ['slave', 'client', 'admin', 'master'],
    summary: 'Returns its params: a diagnostic round trip in either direction (also used by the benchmarks).',
    schemas: () => ({
      params: z.strictObject({ data: z.union([bytes, z.string().max(1 << 20)]).optional(), seq: z.number().optional() }),
      result: z.strictObject({ data: z.union([bytes, z.string()]).optional(), seq: z.number().optional() }),
    }),
  }),
  'slave.info': def({
    direction: 'to-slave',
    roles: ['master'],
    summary: 'The master asks a slave about itself.',
    schemas: () => ({
      params: z.strictObject({}),
      result: z.strictObject({ name: z.string(), pid: z.number(), uptimeMs: z.number(), software: z.string() }),
    }),
  }),
  'token.create': def({
    direction: 'to-master',
    roles: ['admin'],
    summary: 'Create a one-time enrollment token.',
    schemas: () => ({
      params: z.strictObject({ ttlMs: z.number().int().positive().max(30 * 24 * 3600 * 1000) }),
      result: z.strictObject({ token: z.string(), expiresAt: z.number(), caFingerprint: z.string() }),
    }),
  }),
  'slave.list': def({
    direction: 'to-master',
    roles: people,
    summary: 'List enrolled slaves, their certificates and whether they are connected.',
    schemas: () => ({
      params: z.strictObject({}),
      result: z.strictObject({
        slaves: z.array(
          z.strictObject({
            name: z.string(),
            serial: z.string(),
            notAfter: z.number(),
            revoked: z.boolean(),
            connected: z.boolean(),
          }),
        ),
      }),
    }),
  }),
  'slave.revoke': def({
    direction: 'to-master',
    roles: ['admin'],
    summary: "Revoke every certificate of a slave and drop its connections.",
    schemas: () => ({
      params: z.strictObject({ name }),
      result: z.strictObject({ revoked: z.number() }),
    }),
  }),

  // ---- Jobs: the slave side (see docs/protocol.md "Running jobs") ----
  'cert.renew': def({
    direction: 'to-master',
    roles: ['slave', 'client', 'admin'],
    summary:
      'A slave, client or admin trades a new public key, with a signature proving it holds the private key, for a certificate under its own name and role, once its current one is in the last third of its life.',
    schemas: () => ({
      params: z.strictObject({ publicKey: z.string().min(100).max(8192), proof: bytes }),
      result: z.strictObject({ cert: z.string(), ca: z.string(), serial: z.string(), notAfter: z.number() }),
    }),
  }),
  'slave.subscribe': def({
    direction: 'to-master',
    roles: ['slave'],
    summary:
      'After hello, a slave says what it runs (channels, arches, capacity) and which attempts it is still running; the master answers which of those to keep and from which log seq to resend.',
    schemas: () => ({
      params: z.strictObject({
        channels: z.array(name).min(1).max(64),
        arches: z.array(name).min(1).max(32),
        capacity: slotCount,
        draining: z.boolean(),
        running: z.array(z.strictObject({ jobId, attempt, slots: slotCount })).max(4096),
      }),
      result: z.strictObject({
        keep: z.array(z.strictObject({ jobId, attempt, nextSeq: z.number().int().min(1) })),
        abandon: z.array(z.strictObject({ jobId, attempt, reason: z.string() })),
      }),
    }),
  }),
  'slave.draining': def({
    direction: 'to-master',
    roles: ['slave'],
    summary: 'A slave stops (or resumes) taking new jobs on its own, e.g. while it shuts down after SIGTERM.',
    schemas: () => ({
      params: z.strictObject({ draining: z.boolean() }),
      result: z.strictObject({}),
    }),
  }),
  'attempt.assign': def({
    direction: 'to-slave',
    roles: ['master'],
    summary:
      'The master gives a slave one attempt of a job. The reply means accepted (the master marks it running); no reply within the accept timeout and the master takes it back.',
    schemas: () => ({
      params: z.strictObject({
        jobId,
        attempt,
        name,
        channel: name,
        arch: name,
        slots: slotCount,
        command: jobCommand,
        env: envMap,
        timeoutMs: z.number().int().min(0),
        inputs: z.array(inputFile).max(1000),
      }),
      result: z.strictObject({ accepted: z.literal(true) }),
    }),
  }),
  'attempt.cancel': def({
    direction: 'to-slave',
    roles: ['master'],
    summary: 'Kill an attempt (its process group): cancelled by a user, timed out on the master, or no longer the current attempt.',
    schemas: () => ({
      params: z.strictObject({ jobId, attempt, reason: z.enum(['cancelled', 'timed_out', 'abandoned']) }),
      result: z.strictObject({ found: z.boolean() }),
    }),
  }),
  'attempt.log': def({
    direction: 'to-master',
    roles: ['slave'],
    summary:
      'A batch of an attempt’s log records in seq order (stdout and stderr share one seq). The reply comes once they are on the master’s disk; a record the master already has is skipped.',
    schemas: () => ({
      params: z.strictObject({ jobId, attempt, records: z.array(logRecord).min(1).max(10_000) }),
      result: z.strictObject({ storedThrough: z.number().int().min(0) }),
    }),
  }),
  'input.read': def({
    direction: 'to-master',
    roles: ['slave', 'client', 'admin'],
    summary: 'Read a range of a job input file by its sha256 (a slave only for inputs of an attempt it holds).',
    schemas: () => ({
      params: z.strictObject({ sha256, offset: z.number().int().min(0), length: chunkLength }),
      result: z.strictObject({ data: bytes }),
    }),
  }),
  'artifact.begin': def({
    direction: 'to-master',
    roles: ['slave'],
    summary: 'Start or resume the upload of one artifact of an attempt; the reply says how many bytes the master already holds.',
    schemas: () => ({
      params: z.strictObject({ jobId, attempt, path: relPath, size: z.number().int().min(0), sha256 }),
      result: z.strictObject({ offset: z.number().int().min(0) }),
    }),
  }),
  'artifact.chunk': def({
    direction: 'to-master',
    roles: ['slave'],
    summary: 'Bytes of an artifact at an offset; several may be in flight.',
    schemas: () => ({
      params: z.strictObject({ jobId, attempt, path: relPath, offset: z.number().int().min(0), data: bytes }),
      result: z.strictObject({}),
    }),
  }),
  'artifact.finish': def({
    direction: 'to-master',
    roles: ['slave'],
    summary: 'Check size and sha256 of an uploaded artifact and commit it; a mismatch is BUILDER_ERR_CHECKSUM and the bytes are dropped.',
    schemas: () => ({
      params: z.strictObject({ jobId, attempt, path: relPath }),
      result: z.strictObject({ size: z.number().int(), sha256 }),
    }),
  }),
  'attempt.finish': def({
    direction: 'to-master',
    roles: ['slave'],
    summary:
      'How an attempt ended, sent after its whole log is stored and its artifacts are uploaded. A stale attempt gets BUILDER_ERR_BAD_STATE and the slave drops it. With `logEnd`, it also carries the log’s end record, stored first (every record before it must be stored already); an end at seq 1 with nothing stored is not stored when this call ends the attempt (the attempt’s end stands for it).',
    schemas: () => ({
      params: z.strictObject({
        jobId,
        attempt,
        /**
         * The seq of the log's end record, when the slave sends it here instead of in an
         * attempt.log of its own (one round trip less per attempt). Optional: absent, the end came
         * through attempt.log.
         */
        logEnd: z.number().int().min(1).optional(),
        state: z.enum(['succeeded', 'failed', 'timed_out', 'cancelled']),
        exitCode: z.number().int().nullable(),
        signal: z.string().max(16).nullable(),
        reason: z.string().max(1024).nullable(),
        /** The attempt failed before the job's process ran (a broken slave, not a broken job). */
        setupFailure: z.boolean(),
        /** Entries of BUILDER_OUTPUT that were not uploaded, and why. */
        refused: z.array(z.strictObject({ path: z.string().max(4096), reason: z.string().max(32), detail: z.string().max(1024).optional() })).max(1000),
        /** Artifacts named like an input file but with other content. */
        conflicts: z.array(z.strictObject({ path: relPath, inputSha256: sha256, artifactSha256: sha256 })).max(1000),
        /** Artifacts (already committed with artifact.finish) that belong to this attempt. */
        artifacts: z.array(z.strictObject({ path: relPath, size: z.number().int().min(0), sha256 })).max(10_000),
      }),
      result: z.strictObject({}),
    }),
  }),

  // ---- Jobs: the client side (builder CLI); see docs/cli.md ----
  'input.begin': def({
    direction: 'to-master',
    roles: people,
    summary: 'Start or resume the upload of a job input file, addressed by its sha256; the reply says how many bytes the master holds (size when it has the file).',
    schemas: () => ({
      params: z.strictObject({ sha256, size: z.number().int().min(0) }),
      result: z.strictObject({ offset: z.number().int().min(0) }),
    }),
  }),
  'input.chunk': def({
    direction: 'to-master',
    roles: people,
    summary: 'Bytes of an input file at an offset.',
    schemas: () => ({
      params: z.strictObject({ sha256, offset: z.number().int().min(0), data: bytes }),
      result: z.strictObject({}),
    }),
  }),
  'input.finish': def({
    direction: 'to-master',
    roles: people,
    summary: 'Check and commit an uploaded input file.',
    schemas: () => ({
      params: z.strictObject({ sha256 }),
      result: z.strictObject({ size: z.number().int(), sha256 }),
    }),
  }),
  'job.submit': def({
    direction: 'to-master',
    roles: people,
    summary: 'Queue a job (its input files uploaded first with input.*). Replies once the job is stored.',
    schemas: () => ({
      params: z.strictObject({ job: newJob }),
      result: z.strictObject({ job: jobView }),
    }),
  }),
  'job.get': def({
    direction: 'to-master',
    roles: people,
    summary: 'A job, its attempts, and, while it is queued, why it is not running.',
    schemas: () => ({
      params: z.strictObject({ id: jobId }),
      result: z.strictObject({ job: jobView, attempts: z.array(attemptView), waiting: z.string().nullable() }),
    }),
  }),
  'job.list': def({
    direction: 'to-master',
    roles: people,
    summary: 'Jobs, newest first, filtered by state and channel.',
    schemas: () => ({
      params: z.strictObject({
        state: z.enum(JOB_STATE_NAMES).optional(),
        channel: name.optional(),
        limit: z.number().int().min(1).max(10_000).optional(),
        beforeId: jobId.optional(),
      }),
      result: z.strictObject({ jobs: z.array(jobView) }),
    }),
  }),
  'job.cancel': def({
    direction: 'to-master',
    roles: people,
    summary: 'Cancel a queued or running job; a running one has its process group killed on the slave.',
    schemas: () => ({
      params: z.strictObject({ id: jobId }),
      result: z.strictObject({ job: jobView }),
    }),
  }),
  'job.retry': def({
    direction: 'to-master',
    roles: people,
    summary: 'Queue a new job with the spec of a finished one (the old one stays as it was).',
    schemas: () => ({
      params: z.strictObject({ id: jobId }),
      result: z.strictObject({ job: jobView }),
    }),
  }),
  'log.read': def({
    direction: 'to-master',
    roles: people,
    summary:
      'Read an attempt’s log from a seq on (default: the latest attempt, from the start). With waitMs, waits for new records while the attempt runs (long poll). `ended` says the attempt’s log is complete.',
    schemas: () => ({
      params: z.strictObject({
        jobId,
        attempt: attempt.optional(),
        fromSeq: z.number().int().min(1).optional(),
        maxBytes: z.number().int().min(1).max(4 * 1024 * 1024).optional(),
        waitMs: z.number().int().min(0).max(60_000).optional(),
      }),
      result: z.strictObject({
        attempt: z.number().int().min(0),
        records: z.array(logRecord),
        nextSeq: z.number().int().min(1),
        ended: z.boolean(),
        state: z.enum(JOB_STATE_NAMES),
      }),
    }),
  }),
  'schedule.create': def({
    direction: 'to-master',
    roles: people,
    summary: 'Create a recurring job: a cron expression (5 fields or an @ alias; 6 with a leading seconds field, and @secondly, only on a master run with --cron-seconds), an optional time zone and a job template.',
    schemas: () => ({
      params: z.strictObject({ cron: z.string().min(1).max(256), tz: z.string().max(64).optional(), template: newJob }),
      result: z.strictObject({ schedule: scheduleView }),
    }),
  }),
  'schedule.list': def({
    direction: 'to-master',
    roles: people,
    summary: 'Every schedule with its next and last firing.',
    schemas: () => ({
      params: z.strictObject({}),
      result: z.strictObject({ schedules: z.array(scheduleView) }),
    }),
  }),
  'schedule.pause': def({
    direction: 'to-master',
    roles: people,
    summary: 'Pause or resume a schedule.',
    schemas: () => ({
      params: z.strictObject({ id: scheduleId, paused: z.boolean() }),
      result: z.strictObject({ schedule: scheduleView }),
    }),
  }),
  'schedule.remove': def({
    direction: 'to-master',
    roles: people,
    summary: 'Remove a schedule (jobs it already queued stay).',
    schemas: () => ({
      params: z.strictObject({ id: scheduleId }),
      result: z.strictObject({}),
    }),
  }),
  'slave.status': def({
    direction: 'to-master',
    roles: people,
    summary: 'Every slave the scheduler knows: what it runs, its capacity and slots in use, connection, drain and quarantine.',
    schemas: () => ({
      params: z.strictObject({}),
      result: z.strictObject({
        slaves: z.array(
          z.strictObject({
            name: z.string(),
            channels: z.array(z.string()),
            arches: z.array(z.string()),
            capacity: z.number().int(),
            slotsInUse: z.number().int(),
            running: z.array(z.number().int()),
            connected: z.boolean(),
            connectedSince: z.number().nullable(),
            lastSeen: z.number().nullable(),
            drained: z.boolean(),
            quarantinedUntil: z.number().nullable(),
          }),
        ),
      }),
    }),
  }),
  'slave.drain': def({
    direction: 'to-master',
    roles: ['admin'],
    summary: 'Drain a slave (it finishes what it runs and gets nothing new) or undrain it. Persisted.',
    schemas: () => ({
      params: z.strictObject({ name, drained: z.boolean() }),
      result: z.strictObject({}),
    }),
  }),
  'artifact.list': def({
    direction: 'to-master',
    roles: people,
    summary: 'The artifacts of a job (all attempts), with size, sha256 and kind, and `removedAt` for an image the retention removed.',
    schemas: () => ({
      params: z.strictObject({ jobId }),
      result: z.strictObject({ artifacts: z.array(artifactView) }),
    }),
  }),
  'artifact.read': def({
    direction: 'to-master',
    roles: people,
    summary: 'Read a range of an artifact (download in chunks; check its sha256 from artifact.list).',
    schemas: () => ({
      params: z.strictObject({ id: z.number().int().min(1), offset: z.number().int().min(0), length: chunkLength }),
      result: z.strictObject({ data: bytes }),
    }),
  }),
  'image.list': def({
    direction: 'to-master',
    roles: people,
    summary: 'Images (non-package artifacts) by job name, newest first, and which job is the promoted release of each name.',
    schemas: () => ({
      params: z.strictObject({ name: name.optional() }),
      result: z.strictObject({
        images: z.array(
          z.strictObject({
            name: z.string(),
            jobId: z.number().int(),
            files: z.array(artifactView),
            promoted: z.boolean(),
            createdAt: z.number(),
          }),
        ),
      }),
    }),
  }),
  'image.promote': def({
    direction: 'to-master',
    roles: ['admin'],
    summary: 'Make the images of a succeeded job the official release of its name (images/<name>/current).',
    schemas: () => ({
      params: z.strictObject({ jobId, name }),
      result: z.strictObject({}),
    }),
  }),
} as const;

export type Catalogue = typeof catalogue;
export type MethodName = keyof Catalogue;
export type ParamsOf<M extends MethodName> = z.output<Catalogue[M]['params']>;
export type ResultOf<M extends MethodName> = z.output<Catalogue[M]['result']>;

/** Methods a given side serves. */
export function methodsServedBy(side: 'master' | 'slave'): MethodName[] {
  return (Object.keys(catalogue) as MethodName[]).filter((m) => {
    const d = catalogue[m].direction;
    return d === 'both' || (side === 'master' ? d === 'to-master' : d === 'to-slave');
  });
}
