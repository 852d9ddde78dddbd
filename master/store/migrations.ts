/**
 * The schema, as an ordered list of migrations. Migration i (0-based) brings `PRAGMA
 * user_version` from i to i + 1; each runs in its own transaction together with the version
 * bump, so a crash mid-migration leaves the previous version intact. Never edit a released
 * migration: append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: jobs, attempts, events (written by triggers, so no state change can skip the log),
  // slaves, schedules, artifacts.
  `
  CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    channel TEXT NOT NULL,
    arch TEXT NOT NULL,
    slots INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    command TEXT NOT NULL,
    inputs TEXT NOT NULL,
    env TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued','dispatched','running','succeeded','failed','timed_out','cancelled')),
    attempt INTEGER NOT NULL DEFAULT 0,
    slave TEXT,
    exit_code INTEGER,
    signal TEXT,
    reason TEXT,
    schedule_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    dispatched_at INTEGER,
    started_at INTEGER,
    ended_at INTEGER
  );
  CREATE INDEX jobs_state ON jobs (state, id);
  CREATE INDEX jobs_channel ON jobs (channel, id);

  CREATE TABLE attempts (
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    slave TEXT NOT NULL,
    state TEXT NOT NULL,
    dispatched_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    exit_code INTEGER,
    signal TEXT,
    reason TEXT,
    setup_failure INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
  ) WITHOUT ROWID;

  CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT
  );
  CREATE INDEX events_job ON events (job_id, id);

  CREATE TRIGGER jobs_event_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO events (job_id, attempt, from_state, to_state, at, reason)
    VALUES (NEW.id, NEW.attempt, NULL, NEW.state, NEW.updated_at, NEW.reason);
  END;
  CREATE TRIGGER jobs_event_update AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state BEGIN
    INSERT INTO events (job_id, attempt, from_state, to_state, at, reason)
    VALUES (NEW.id, NEW.attempt, OLD.state, NEW.state, NEW.updated_at, NEW.reason);
  END;

  -- Attempt rows follow the job's state in the same statement: a transition is one UPDATE.
  CREATE TRIGGER jobs_attempt_open AFTER UPDATE OF state ON jobs WHEN NEW.state = 'dispatched' AND OLD.state IS NOT 'dispatched' BEGIN
    INSERT INTO attempts (job_id, attempt, slave, state, dispatched_at) VALUES (NEW.id, NEW.attempt, NEW.slave, 'dispatched', NEW.updated_at);
  END;
  CREATE TRIGGER jobs_attempt_start AFTER UPDATE OF state ON jobs WHEN NEW.state = 'running' AND OLD.state = 'dispatched' BEGIN
    UPDATE attempts SET state = 'running', started_at = NEW.started_at WHERE job_id = NEW.id AND attempt = NEW.attempt;
  END;
  CREATE TRIGGER jobs_attempt_end AFTER UPDATE OF state ON jobs
    WHEN OLD.state IN ('dispatched','running') AND NEW.state NOT IN ('dispatched','running') BEGIN
    UPDATE attempts SET state = CASE NEW.state WHEN 'queued' THEN 'requeued' ELSE NEW.state END,
      ended_at = NEW.updated_at, exit_code = NEW.exit_code, signal = NEW.signal, reason = NEW.reason
      WHERE job_id = NEW.id AND attempt = NEW.attempt;
  END;

  CREATE TABLE slaves (
    name TEXT PRIMARY KEY,
    channels TEXT NOT NULL,
    arches TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    drained INTEGER NOT NULL DEFAULT 0,
    quarantined_until INTEGER,
    last_seen INTEGER,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    tz TEXT NOT NULL,
    template TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    next_fire_at INTEGER,
    last_fired_at INTEGER,
    last_job_id INTEGER,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('package','image')),
    path TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (job_id, attempt, name)
  );
  `,
  // 2: a job can be created already dispatched (one statement, one commit, for a job that can
  // start at once). The insert triggers write what creating it queued and then dispatching it
  // would have written: the same events and attempt row. Only those two states can be inserted.
  `
  DROP TRIGGER jobs_event_insert;
  CREATE TRIGGER jobs_event_insert AFTER INSERT ON jobs WHEN NEW.state = 'queued' BEGIN
    INSERT INTO events (job_id, attempt, from_state, to_state, at, reason)
    VALUES (NEW.id, NEW.attempt, NULL, NEW.state, NEW.updated_at, NEW.reason);
  END;
  CREATE TRIGGER jobs_insert_dispatched AFTER INSERT ON jobs WHEN NEW.state = 'dispatched' BEGIN
    INSERT INTO events (job_id, attempt, from_state, to_state, at, reason) VALUES (NEW.id, 0, NULL, 'queued', NEW.created_at, NULL);
    INSERT INTO events (job_id, attempt, from_state, to_state, at, reason) VALUES (NEW.id, NEW.attempt, 'queued', 'dispatched', NEW.updated_at, NEW.reason);
    INSERT INTO attempts (job_id, attempt, slave, state, dispatched_at) VALUES (NEW.id, NEW.attempt, NEW.slave, 'dispatched', NEW.updated_at);
  END;
  CREATE TRIGGER jobs_insert_state BEFORE INSERT ON jobs
    WHEN NEW.state NOT IN ('queued', 'dispatched') OR (NEW.state = 'dispatched' AND (NEW.slave IS NULL OR NEW.attempt <> 1)) BEGIN
    SELECT RAISE(ABORT, 'a job is created queued, or dispatched to a slave as attempt 1');
  END;
  `,
  // 3: log retention. When an attempt's log was removed; the partial index holds only the ended
  // attempts whose log is still kept, so the sweep's lookup stays small as history grows.
  `
  ALTER TABLE attempts ADD COLUMN log_removed_at INTEGER;
  CREATE INDEX attempts_log_kept ON attempts (ended_at) WHERE log_removed_at IS NULL AND ended_at IS NOT NULL;
  `,
  // 4: image retention. When an artifact's file was removed; the partial index holds only the
  // images still kept, by job, so the sweep walks them without reading the packages or history.
  `
  ALTER TABLE artifacts ADD COLUMN removed_at INTEGER;
  CREATE INDEX artifacts_image_kept ON artifacts (job_id, created_at) WHERE removed_at IS NULL AND kind = 'image';
  CREATE INDEX jobs_name ON jobs (name, id);
  -- Job retention: final jobs by end; the jobs whose rows are gone and whose files are being removed.
  CREATE INDEX jobs_ended ON jobs (ended_at) WHERE ended_at IS NOT NULL;
  CREATE TABLE job_purges (job_id INTEGER PRIMARY KEY, name TEXT NOT NULL, attempts INTEGER NOT NULL);
  `,
  // 5: why a schedule's last fire failed by its own fault (a template that no longer validates),
  // and when; cleared by the next fire that succeeds. schedule.list shows it.
  `
  ALTER TABLE schedules ADD COLUMN last_error TEXT;
  ALTER TABLE schedules ADD COLUMN last_error_at INTEGER;
  `,
];
