import { lstat, readdir, rename, symlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import ms from 'ms';
import { BuilderError, checkName, type ParamsOf, type ResultOf, type RpcMethods } from '../../protocol/index.js';
import { readChunk } from '../../protocol/transfer/index.js';
import { isFinalState, type Job } from '../store/index.js';
import type { JobService } from './job-service.js';
import type { LogWatch } from './log-store.js';
import { promotedOf } from './artifact-filing.js';
import { artifactView, attemptView, jobView, specOf } from './views.js';

/** Most images listed by one image.list call. */
const MAX_IMAGES_LISTED = 1000;

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function mustGetJob(svc: JobService, id: number): Promise<Job> {
  const j = await svc.store.getJob(id);
  if (j !== undefined) return j;
  if (svc.options.jobRetentionMs > 0 && Number.isSafeInteger(id) && id > 0 && id <= (await svc.store.maxJobId())) {
    throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no job ${id}: it was removed by the job retention`, {
      hint: `the master removes jobs ${ms(svc.options.jobRetentionMs, { long: true })} after they end (master run --job-retention)`,
    });
  }
  throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no job ${id}`);
}

/**
 * log.read: a page of an attempt's log from `fromSeq`, waiting up to `waitMs` for one. `watch`
 * was made before anything is read; each wait that ends makes a new one (given to `rewatch`, for
 * the caller to cancel) before the job and the page are read again.
 */
async function readLog(svc: JobService, p: ParamsOf<'log.read'>, watch: LogWatch, rewatch: (w: LogWatch) => void): Promise<ResultOf<'log.read'>> {
  let job = await mustGetJob(svc, p.jobId);
  let attempt = p.attempt ?? job.attempt;
  if (attempt > job.attempt) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `job ${job.id} has no attempt ${attempt} (it has ${job.attempt})`);
  const fromSeq = p.fromSeq ?? 1;
  const maxBytes = p.maxBytes ?? svc.options.logReadMaxBytes;
  const deadline = Date.now() + (p.waitMs ?? 0);
  // Only an attempt that is over can have lost its log to the retention.
  if (attempt > 0 && attemptOver(svc, job, attempt)) {
    const removedAt = await svc.store.logRemovedAt(job.id, attempt);
    if (removedAt !== null) {
      throw new BuilderError('BUILDER_ERR_NOT_FOUND', `the log of attempt ${attempt} of job ${job.id} was removed on ${new Date(removedAt).toISOString()} by the log retention`, {
        hint: `the master keeps logs for ${ms(svc.options.logRetentionMs, { long: true })} after an attempt ends (master run --log-retention)`,
      });
    }
  }
  for (;;) {
    // The job is read before the page: a state that says the attempt is over was committed after
    // its log was stored, so the page read next holds all of it (read the other way round,
    // records and the end stored in between were answered as an empty, ended log).
    const page = attempt === 0 ? { records: [], nextSeq: fromSeq, ended: false } : await svc.logs.read(job.id, attempt, fromSeq, maxBytes);
    // Complete: the end record is stored, or the attempt is over and nothing more will come.
    const ended = page.ended || (page.records.length === 0 && attemptOver(svc, job, attempt));
    const left = deadline - Date.now();
    if (page.records.length > 0 || ended || left <= 0) {
      return { attempt, records: page.records as ResultOf<'log.read'>['records'], nextSeq: page.nextSeq, ended, state: job.state };
    }
    await watch.wait(left);
    if (svc.logs.isClosed) throw new BuilderError('BUILDER_ERR_UNAVAILABLE', 'the master is stopping');
    watch = svc.logs.watch(job.id);
    rewatch(watch);
    job = await mustGetJob(svc, job.id);
    // A follower of a job never dispatched follows its first attempt once there is one.
    if (attempt === 0 && p.attempt === undefined) attempt = job.attempt;
  }
}

/**
 * Whether an attempt's log can still grow. A running attempt's can. One the master cancelled or
 * timed out is still being killed: its slave sends the tail and the end record, so followers
 * wait for that, up to `slaveGraceMs + cancelTimeoutMs` after the job ended (a slave that never
 * delivers cannot hold a follower forever). A requeued or abandoned attempt's slave drops its log.
 */
function attemptOver(svc: JobService, job: Job, attempt: number): boolean {
  if (attempt === 0) return isFinalState(job.state);
  if (job.attempt !== attempt) return true;
  if (job.state === 'dispatched' || job.state === 'running') return false;
  if ((job.state === 'cancelled' || job.state === 'timed_out') && job.slave !== null) {
    return Date.now() - (job.endedAt ?? job.updatedAt) > svc.options.slaveGraceMs + svc.options.cancelTimeoutMs;
  }
  return true;
}

/**
 * Registers the methods people call (the builder CLI): jobs, logs, inputs, schedules, slaves,
 * artifacts, images. Once, in the table shared by every connection: who calls comes from ctx.
 */
export function registerClientHandlers(svc: JobService, methods: RpcMethods): void {
  const imagesDir = join(svc.dir, 'images');
  methods
    .handle('input.begin', async ({ sha256, size }, ctx) => ({ offset: await svc.beginInput(sha256, size, ctx.remote.name) }))
    .handle('input.chunk', async ({ sha256, offset, data }) => {
      await svc.inputs.chunk(sha256, offset, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      return {};
    })
    .handle('input.finish', async ({ sha256 }) => svc.inputs.finish(sha256))
    .handle('job.submit', async ({ job }, ctx) => ({ job: jobView(await svc.submit(job, ctx.remote.name)) }))
    .handle('job.get', async ({ id }) => {
      const job = await mustGetJob(svc, id);
      const attempts = (await svc.store.listAttempts(id)).map(attemptView);
      const waiting = job.state === 'queued' || job.state === 'dispatched' ? svc.sched.explain(id) : null;
      return { job: jobView(job), attempts, waiting };
    })
    .handle('job.list', async (q) => ({ jobs: (await svc.store.listJobs(q)).map(jobView) }))
    .handle('job.cancel', async ({ id }, ctx) => ({ job: jobView(await svc.cancel(id, ctx.remote.name)) }))
    .handle('job.retry', async ({ id }, ctx) => {
      const old = await mustGetJob(svc, id);
      if (!isFinalState(old.state)) throw new BuilderError('BUILDER_ERR_BAD_STATE', `job ${id} is still ${old.state}; cancel it or wait for it to end`);
      const job = await svc.submit(specOf(old), ctx.remote.name);
      svc.log.info({ job: job.id, retryOf: id }, 'job retried');
      return { job: jobView(job) };
    })
    .handle('log.read', async (p) => {
      // Listening from before the first read of the job: see AttemptLogStore.watch.
      let watch = svc.logs.watch(p.jobId);
      try {
        return await readLog(svc, p, watch, (w) => (watch = w));
      } finally {
        watch.cancel();
      }
    })
    .handle('schedule.create', async ({ cron, tz, template }, ctx) => {
      await svc.checkInputs(template);
      const schedule = await svc.schedules.add({ id: svc.newScheduleId(template.name), cron, ...(tz === undefined ? {} : { tz }), template });
      svc.log.info({ schedule: schedule.id, cron: schedule.cron, tz: schedule.tz, by: ctx.remote.name }, 'schedule created');
      return { schedule };
    })
    .handle('schedule.list', async () => ({ schedules: await svc.schedules.list() }))
    .handle('schedule.pause', async ({ id, paused }, ctx) => {
      const schedule = paused ? await svc.schedules.pause(id) : await svc.schedules.resume(id);
      svc.log.info({ schedule: id, paused, by: ctx.remote.name }, paused ? 'schedule paused' : 'schedule resumed');
      return { schedule };
    })
    .handle('schedule.remove', async ({ id }, ctx) => {
      await svc.schedules.remove(id);
      svc.log.info({ schedule: id, by: ctx.remote.name }, 'schedule removed');
      return {};
    })
    .handle('slave.status', async () => {
      const now = Date.now();
      const slaves: ResultOf<'slave.status'>['slaves'] = [];
      for (const rec of await svc.store.listSlaves()) {
        const v = svc.sched.slave(rec.name);
        const conn = svc.slaveConn(rec.name);
        slaves.push({
          name: rec.name,
          channels: v?.channels ?? rec.channels,
          arches: v?.arches ?? rec.arches,
          capacity: v?.capacity ?? rec.capacity,
          slotsInUse: v?.used ?? 0,
          running: v?.jobs ?? [],
          connected: conn !== undefined,
          connectedSince: conn?.since ?? null,
          lastSeen: conn !== undefined ? now : rec.lastSeen,
          drained: rec.drained || (conn?.selfDraining ?? false),
          quarantinedUntil: v?.quarantinedUntil ?? (rec.quarantinedUntil !== null && rec.quarantinedUntil > now ? rec.quarantinedUntil : null),
        });
      }
      return { slaves };
    })
    .handle('slave.drain', async ({ name, drained }, ctx) => {
      await svc.drain(name, drained, ctx.remote.name);
      return {};
    })
    .handle('artifact.list', async ({ jobId }) => {
      await mustGetJob(svc, jobId);
      return { artifacts: (await svc.store.listArtifacts(jobId)).map(artifactView) };
    })
    .handle('artifact.read', async ({ id, offset, length }) => {
      const a = await svc.store.getArtifact(id);
      if (a === undefined) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `no artifact ${id}`);
      if (a.removedAt !== null) {
        throw new BuilderError('BUILDER_ERR_NOT_FOUND', `artifact ${id} (${a.name}) of job ${a.jobId} was removed on ${new Date(a.removedAt).toISOString()} by the image retention`, {
          hint:
            svc.options.imageRetentionMs > 0
              ? `the master keeps images for ${ms(svc.options.imageRetentionMs, { long: true })}, and those of the newest ${svc.options.imageKeep} succeeded job(s) of each name and of the promoted one (master run --image-retention, --image-keep)`
              : 'the image retention was on when it was removed (master run --image-retention); it is off now',
        });
      }
      if (!(await exists(a.path))) throw new BuilderError('BUILDER_ERR_NOT_FOUND', `artifact ${id} (${a.name}) is no longer on the master`);
      return { data: (await readChunk(a.path, offset, length)) as Uint8Array<ArrayBuffer> };
    })
    .handle('image.list', async ({ name }) => {
      let names: string[];
      if (name !== undefined) names = [checkName('image', name)];
      else {
        try {
          names = (await readdir(imagesDir)).filter((n) => !n.startsWith('.')).sort();
        } catch {
          names = [];
        }
      }
      const images: ResultOf<'image.list'>['images'] = [];
      for (const n of names) {
        let ids: number[];
        try {
          ids = (await readdir(join(imagesDir, n))).filter((d) => /^\d+$/.test(d)).map(Number).sort((a, b) => b - a);
        } catch {
          continue;
        }
        const promoted = await promotedOf(imagesDir, n);
        for (const id of ids) {
          if (images.length >= MAX_IMAGES_LISTED) break;
          const files = (await svc.store.listArtifacts(id)).filter((a) => a.kind === 'image');
          if (files.length === 0) continue;
          images.push({ name: n, jobId: id, files: files.map(artifactView), promoted: promoted === id, createdAt: Math.min(...files.map((f) => f.createdAt)) });
        }
      }
      return { images };
    })
    .handle('image.promote', async ({ jobId, name }, ctx) => {
      const job = await mustGetJob(svc, jobId);
      checkName('image', name);
      if (job.name !== name) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `job ${jobId} is named ${job.name}, not ${name}`);
      if (job.state !== 'succeeded') throw new BuilderError('BUILDER_ERR_BAD_STATE', `job ${jobId} is ${job.state}; only a succeeded job can be promoted`);
      // Not while the image retention decides about this name: it never removes the promoted job.
      return svc.withImageName(name, async () => {
        if (!(await exists(join(imagesDir, name, String(jobId))))) {
          const removed = (await svc.store.listArtifacts(jobId)).find((a) => a.kind === 'image' && a.removedAt !== null);
          throw new BuilderError('BUILDER_ERR_NOT_FOUND', removed ? `the images of job ${jobId} were removed on ${new Date(removed.removedAt!).toISOString()} by the image retention` : `job ${jobId} has no images`);
        }
        // Atomic switch: a new symlink under a temporary name renamed over `current`.
        const tmp = join(imagesDir, name, `.current-${randomBytes(4).toString('hex')}`);
        await symlink(String(jobId), tmp);
        await rename(tmp, join(imagesDir, name, 'current'));
        svc.log.info({ job: jobId, image: name, by: ctx.remote.name }, 'image promoted');
        return {};
      });
    });
}
