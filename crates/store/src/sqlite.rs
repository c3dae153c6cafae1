//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a few reader
//! connections that WAL lets run beside it. Calls run on tokio's blocking pool. Every write
//! is one `BEGIN IMMEDIATE` transaction, so a crash leaves either all of it or none of it.
//!
//! Experiments are stored as JSON documents with the columns that queries filter on
//! projected beside them; the projection and the document are always written together.

use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use verdict_domain::{
    ApiKey, Assignment, Audience, Environment, EventRecord, Experiment, NewEvent, OutboxMessage,
    Scope,
};

use crate::error::StoreError;
use crate::model::{
    AppendOutcome, Attribution, AudienceDeletion, AuditEntry, ExperimentFilter, Page, PageRequest,
    StatusChange, SubjectRecord, TimeRange, VariantCounts, WinnerChange, from_millis, to_millis,
};
use crate::rollup::{Bucket, Granularity, RollupReport};
use crate::{Result, Store};

/// Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE experiments (
    id            TEXT PRIMARY KEY,
    environment   TEXT NOT NULL,
    organization  TEXT NOT NULL,          -- '' for global experiments
    key           TEXT NOT NULL,
    status        TEXT NOT NULL,
    audience      TEXT NOT NULL,          -- '' when none
    version       INTEGER NOT NULL,
    doc           TEXT NOT NULL,          -- the whole Experiment as JSON
    UNIQUE (environment, organization, key)
);
CREATE INDEX experiments_list ON experiments (environment, status);
CREATE INDEX experiments_by_audience ON experiments (environment, audience, status);

CREATE TABLE assignments (
    experiment_id TEXT NOT NULL,
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    assigned_at   INTEGER NOT NULL,        -- unix milliseconds
    PRIMARY KEY (experiment_id, subject)
) WITHOUT ROWID;

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- ingestion order, never reused
    experiment_id TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    dedupe        INTEGER NOT NULL,       -- dedupe_key(experiment_id, event_id)
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    event         TEXT NOT NULL,
    value         REAL NOT NULL,
    ts            INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    meta          TEXT
);
-- Idempotency: a compact 64-bit key instead of a unique index on two long strings. The
-- index is ~5x smaller, so inserts of random client ids touch far fewer pages; a match on
-- the key is confirmed on the full (experiment_id, event_id), so a hash collision can
-- never drop an event.
CREATE INDEX events_dedupe ON events (dedupe);

CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    details       TEXT NOT NULL
);
CREATE INDEX audit_by_experiment ON audit (experiment_id, id);

CREATE TABLE forced_variants (
    experiment_id TEXT NOT NULL,
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    PRIMARY KEY (experiment_id, subject)
) WITHOUT ROWID;

-- Small administrative collections: a key and the record as JSON.
CREATE TABLE environments (key TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE audiences (
    environment TEXT NOT NULL,
    key         TEXT NOT NULL,
    doc         TEXT NOT NULL,
    UNIQUE (environment, key)
);
CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
"#,
    r#"
-- Rollups (aggregator). Both tables only ever grow by adding the figures of events past
-- the watermark, in the transaction that advances the watermark.
CREATE TABLE buckets (
    experiment_id TEXT NOT NULL,
    event         TEXT NOT NULL,
    granularity   TEXT NOT NULL,          -- 'hour' | 'day'
    start         INTEGER NOT NULL,       -- unix ms, aligned to the granularity (UTC)
    variant       TEXT NOT NULL,
    count         INTEGER NOT NULL,
    sum           REAL NOT NULL,
    sum_sq        REAL NOT NULL,
    PRIMARY KEY (experiment_id, event, granularity, start, variant)
) WITHOUT ROWID;

-- Per (experiment, event, subject): the randomization unit's figures, so statistics count
-- subjects, not events.
CREATE TABLE subject_metrics (
    experiment_id TEXT NOT NULL,
    event         TEXT NOT NULL,
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    n             INTEGER NOT NULL,
    total         REAL NOT NULL,
    first_ts      INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, event, subject)
) WITHOUT ROWID;

CREATE TABLE rollup_state (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE evaluation_state (experiment_id TEXT PRIMARY KEY, state TEXT NOT NULL);
"#,
    r#"
-- Webhook outbox: written in the transaction of the change that caused each message.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    experiment_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
"#,
    r#"
-- Job leases (one row per job: the holder, its expiry, the fencing token, the last
-- scheduled tick granted) and run records.
CREATE TABLE leases (
    job           TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    token         INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,       -- unix ms
    last_tick     INTEGER                 -- unix ms
);
CREATE TABLE job_runs (
    id            TEXT PRIMARY KEY,
    job           TEXT NOT NULL,
    started_at    INTEGER NOT NULL,       -- unix ms
    finished_at   INTEGER,                -- unix ms; NULL while running
    doc           TEXT NOT NULL
);
CREATE INDEX job_runs_by_job ON job_runs (job, started_at);
CREATE INDEX job_runs_by_start ON job_runs (started_at);
CREATE INDEX job_runs_by_finish ON job_runs (finished_at);
"#,
    r#"
-- Compact per-subject rollups (issue 5: an incremental rollup's cost must follow the new
-- events, not the history). A rollup upserts the rows of the subjects it saw, at random
-- places in `subject_metrics`, so the pages it dirties (and writes at commit) grow with the
-- table; narrower rows mean fewer pages. Experiment ids and event names are stored once in
-- `rollup_names` and referenced by integers, and the variant is no longer copied into
-- every row (it is the subject's assignment, which never changes: reads join
-- `assignments`). The existing rows are converted, not rebuilt: raw events already
-- deleted by retention would be missing from a rebuild. The watermark is unchanged.
CREATE TABLE rollup_names (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO rollup_names (name)
    SELECT experiment_id FROM subject_metrics UNION SELECT event FROM subject_metrics;
ALTER TABLE subject_metrics RENAME TO subject_metrics_text_keys;
CREATE TABLE subject_metrics (
    experiment    INTEGER NOT NULL,       -- rollup_names.id of the experiment id
    event         INTEGER NOT NULL,       -- rollup_names.id of the event name
    subject       TEXT NOT NULL,
    n             INTEGER NOT NULL,
    total         REAL NOT NULL,
    first_ts      INTEGER NOT NULL,
    PRIMARY KEY (experiment, event, subject)
) WITHOUT ROWID;
INSERT INTO subject_metrics (experiment, event, subject, n, total, first_ts)
    SELECT x.id, v.id, o.subject, o.n, o.total, o.first_ts
    FROM subject_metrics_text_keys o
    JOIN rollup_names x ON x.name = o.experiment_id
    JOIN rollup_names v ON v.name = o.event;
DROP TABLE subject_metrics_text_keys;
"#,
    r#"
-- Webhook delivery (crates/store/src/sqlite_webhooks.rs).
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    created_seq INTEGER NOT NULL,         -- creation order, for lists
    doc         TEXT NOT NULL             -- the whole Endpoint as JSON
);
CREATE INDEX webhook_endpoints_by_environment ON webhook_endpoints (environment, created_seq);

-- One row per (endpoint, outbox message). `seq` is the creation order: claims take the
-- oldest due first, so an endpoint receives its messages in the order they were created.
CREATE TABLE webhook_deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id      TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    message          TEXT NOT NULL,       -- the OutboxMessage as JSON
    status           TEXT NOT NULL,       -- pending | delivered | failed
    attempts         INTEGER NOT NULL,    -- in the current round
    next_attempt_at  INTEGER,             -- unix ms; NULL unless pending
    lease_token      TEXT,
    lease_until      INTEGER NOT NULL DEFAULT 0,
    last_attempt_at  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, status, seq);

CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    status_code     INTEGER,
    latency_ms      INTEGER NOT NULL,
    response        TEXT,
    error           TEXT,
    result          TEXT NOT NULL,
    next_attempt_at INTEGER
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint_id, message_id, id);

-- The fan-out cursor: outbox rows up to this seq have their deliveries.
CREATE TABLE webhook_fanout (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"#,
];

const READERS: usize = 4;

// `impl WebhookStore for SqliteStore`: a child module, so it shares this file's helpers.
#[path = "sqlite_webhooks.rs"]
mod webhooks;

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Work for the writer thread, which alone holds the writer connection (see
    /// [`writer_thread`]).
    writes: std::sync::mpsc::Sender<Message>,
}

/// What the writer thread is asked to do.
enum Message {
    /// A hot-path write, committed with whatever others wait.
    Commit(WriteJob),
    /// Any other write (it makes its own transactions), run alone.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// One write waiting to be committed with whatever else is waiting: the hot-path writes
/// (event batches, new subjects' assignments), which come many at a time and each need
/// their own durable commit before they are answered.
enum WriteJob {
    Append {
        batch: Vec<NewEvent>,
        reply: tokio::sync::oneshot::Sender<Result<Vec<AppendOutcome>>>,
    },
    Assign {
        assignment: Assignment,
        reply: tokio::sync::oneshot::Sender<Result<(Assignment, bool)>>,
    },
}

/// What one job wrote, before it is answered.
enum Written {
    Appended(Vec<AppendOutcome>),
    Assigned(Assignment, bool),
}

impl WriteJob {
    fn apply(&self, tx: &Transaction<'_>) -> Result<Written> {
        match self {
            Self::Append { batch, .. } => append_in(tx, batch).map(Written::Appended),
            Self::Assign { assignment, .. } => {
                assign_in(tx, assignment).map(|(a, created)| Written::Assigned(a, created))
            }
        }
    }

    fn answer(self, result: Result<Written>) {
        match (self, result) {
            (Self::Append { reply, .. }, Ok(Written::Appended(o))) => {
                let _ = reply.send(Ok(o));
            }
            (Self::Assign { reply, .. }, Ok(Written::Assigned(a, created))) => {
                let _ = reply.send(Ok((a, created)));
            }
            (Self::Append { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Self::Assign { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            // Cannot happen (`apply` answers each kind with its own); never panic the writer.
            (job, Ok(_)) => {
                job.answer(Err(StoreError::corrupt("a write's result of another kind")))
            }
        }
    }
}

/// Most jobs committed together in one transaction.
const GROUP_COMMIT_MAX: usize = 64;

/// The writer thread: it alone holds the writer connection, so every write runs on it,
/// one at a time (SQLite has one writer anyway), and everything SQLite allocates for
/// writes (its page cache, the rollup's sorters) comes from one thread's malloc arena
/// instead of one arena per blocking-pool thread that happened to run a write.
///
/// Hot-path writes are group-committed: it takes every [`Message::Commit`] that is waiting
/// (up to [`GROUP_COMMIT_MAX`]), writes them all in ONE transaction, and answers each.
/// Under concurrent ingestion and assignment this pays one commit (fsync, WAL frames of the
/// shared index pages) per group instead of per request, while every caller still gets its
/// answer only after its write is durable. Ends when the store is dropped (the sender
/// closes).
fn writer_thread(mut conn: Connection, messages: std::sync::mpsc::Receiver<Message>) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(message) => message,
            None => match messages.recv() {
                Ok(message) => message,
                Err(_) => return,
            },
        };
        let job = match first {
            Message::Run(run) => {
                run(&mut conn);
                continue;
            }
            Message::Commit(job) => job,
        };
        let mut group = vec![job];
        let mut yielded = false;
        while group.len() < GROUP_COMMIT_MAX {
            match messages.try_recv() {
                Ok(Message::Commit(job)) => group.push(job),
                // Runs after this group, in arrival order.
                Ok(run) => {
                    next = Some(run);
                    break;
                }
                // Once, let whoever is runnable (e.g. the request that woke us, on a busy
                // core) send what it has: a bigger group shares one fsync.
                Err(std::sync::mpsc::TryRecvError::Empty) if !yielded => {
                    yielded = true;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
    }
}

/// Write `group` in one transaction and answer each job.
fn commit_group(conn: &mut Connection, group: Vec<WriteJob>) {
    let result: Result<Vec<Written>> = (|| {
        let tx = begin(conn)?;
        let written = group
            .iter()
            .map(|job| job.apply(&tx))
            .collect::<Result<Vec<_>>>()?;
        commit(tx)?;
        Ok(written)
    })();
    match result {
        Ok(all) => {
            for (job, written) in group.into_iter().zip(all) {
                job.answer(Ok(written));
            }
        }
        Err(e) => {
            // Rolled back: nothing of the group was written; each caller learns why.
            let retryable = e.is_retryable();
            let message = e.to_string();
            for job in group {
                let err = if retryable {
                    StoreError::Unavailable(message.clone().into())
                } else {
                    StoreError::corrupt(format!("writing: {message}"))
                };
                job.answer(Err(err));
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

pub(crate) fn internal(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        e => StoreError::internal(context, e),
    }
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, apply migrations, and return the
    /// store. `busy_timeout_ms` bounds how long a write waits for another process's lock.
    pub fn open(path: impl AsRef<Path>, busy_timeout_ms: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::internal(format!("cannot create data directory {}", dir.display()), e)
            })?;
        }
        let mut writer = open_connection(&path, busy_timeout_ms, false)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| open_connection(&path, busy_timeout_ms, true).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let (writes, messages) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_thread(writer, messages))
            .map_err(|e| StoreError::internal("starting the SQLite writer thread", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                readers,
                next_reader: AtomicUsize::new(0),
                writes,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` on the writer connection, on the writer thread (after the writes before it).
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let run = move |conn: &mut Connection| {
            // A panic fails this write, never the writer thread.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::corrupt("a write panicked")));
            let _ = reply.send(result);
        };
        self.send(Message::Run(Box::new(run)), answer).await
    }

    /// Run `f`, a lookup of a few rows by key, on a free reader connection right here on
    /// the calling thread. Such a read takes microseconds from SQLite's page cache, less
    /// than handing it to the blocking pool and back (two context switches, which dominated
    /// the assignment path on one core). When every reader is busy (e.g. with long scans)
    /// it waits for one on the blocking pool like any [`Self::read`].
    pub(crate) async fn read_point<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // The first free one: point reads keep going to the same few connections, whose
        // caches then hold the hot index pages (instead of a copy in every reader's).
        for reader in &self.inner.readers {
            match reader.try_lock() {
                Ok(conn) => return f(&conn),
                Err(std::sync::TryLockError::Poisoned(p)) => return f(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.read(f).await
    }

    /// Hand `message` to the writer thread and wait for its `answer`.
    async fn send<T>(
        &self,
        message: Message,
        answer: tokio::sync::oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        self.inner
            .writes
            .send(message)
            .map_err(|_| StoreError::corrupt("the SQLite writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::corrupt("the SQLite writer thread dropped a write"))?
    }

    /// Run `f` on one of the reader connections on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let conn = inner.readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::internal("sqlite reader task failed", e))?
    }
}

/// WAL pages (4 KiB each) after which a commit checkpoints.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

fn open_connection(path: &Path, busy_timeout_ms: u64, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::internal(format!("cannot open SQLite database {}", path.display()), e)
    })?;
    conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))
        .map_err(internal("setting busy timeout"))?;
    if !read_only {
        // WAL lets readers run beside the writer; NORMAL sync is durable across process
        // crashes (the WAL is fsynced at checkpoints, and on every commit against power loss
        // only with FULL: we keep FULL because an acknowledged event must not be lost).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(internal("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(internal("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(internal("foreign keys"))?;
        // Checkpoint every ~40 MB of WAL rather than SQLite's 4 MB: under ingestion a commit
        // is a few MB, mostly the same hot pages (index leaves, the table's tail), which a
        // checkpoint then copies once for many commits instead of once per commit. The WAL
        // file is cut back to this size after a checkpoint.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(internal("setting the checkpoint interval"))?;
        conn.pragma_update(None, "journal_size_limit", WAL_CHECKPOINT_PAGES * 4096)
            .map_err(internal("setting the WAL size limit"))?;
    }
    // Page caches (KiB): the writer's holds the pages every insert and rollup step touches;
    // a reader's serves point lookups and scans that the OS page cache backs anyway.
    let cache_kib = if read_only { 8_000 } else { 16_000 };
    conn.pragma_update(None, "cache_size", -cache_kib)
        .map_err(internal("setting cache size"))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(internal("starting migration"))?;
    let applied: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(internal("reading schema version"))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::corrupt(format!(
            "database schema version {applied} is newer than this build knows ({}); \
             upgrade Verdict",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)
            .map_err(internal("applying migration"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(internal("recording schema version"))?;
    }
    tx.commit().map_err(internal("committing migration"))
}

fn org_column(org: &Option<String>) -> &str {
    org.as_deref().unwrap_or("")
}

pub(crate) fn decode<T: DeserializeOwned>(doc: &str, what: &'static str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::internal(what, e))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::internal("encoding JSON", e))
}

fn load_experiment_by_id(conn: &Connection, id: &str) -> Result<Option<Experiment>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM experiments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(internal("reading experiment"))?;
    doc.map(|d| decode(&d, "stored experiment")).transpose()
}

pub(crate) fn begin(c: &mut Connection) -> Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(internal("starting a transaction"))
}

pub(crate) fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit().map_err(internal("committing"))
}

fn audit(
    tx: &Transaction<'_>,
    id: &str,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    details: &Value,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (experiment_id, at, actor, action, details) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            id,
            to_millis(at),
            actor,
            action,
            details.to_string()
        ])
    })
    .map_err(internal("writing audit entry"))?;
    Ok(())
}

/// Write the outbox messages announcing `before` → `after` (inside the change's transaction).
fn enqueue(
    tx: &Transaction<'_>,
    before: &Experiment,
    after: &Experiment,
    at: OffsetDateTime,
) -> Result<()> {
    for m in verdict_domain::outbox::messages_for_change(before, after, at) {
        let doc = encode(&m)?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO outbox (id, experiment_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![m.id, m.experiment_id, to_millis(m.created_at), doc]))
        .map_err(internal("writing outbox message"))?;
    }
    Ok(())
}

/// Rewrite the stored document and projections of `e` (inside a transaction).
fn save_experiment(tx: &Transaction<'_>, e: &Experiment) -> Result<()> {
    let res = tx.execute(
        "UPDATE experiments SET key = ?2, status = ?3, audience = ?4, version = ?5, doc = ?6
         WHERE id = ?1",
        params![
            e.id,
            e.key,
            e.status.as_str(),
            e.audience.as_deref().unwrap_or(""),
            e.version as i64,
            encode(e)?
        ],
    );
    match res {
        Ok(_) => Ok(()),
        Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!(
            "an experiment with key '{}' already exists in this environment and organization",
            e.key
        ))),
        Err(err) => Err(internal("updating experiment")(err)),
    }
}

/// Insert a JSON record into one of the small keyed tables.
fn insert_doc(c: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql], what: &str) -> Result<()> {
    match c.execute(sql, args) {
        Ok(_) => Ok(()),
        Err(err) if is_unique_violation(&err) => {
            Err(StoreError::Conflict(format!("{what} already exists")))
        }
        Err(err) => Err(internal("inserting record")(err)),
    }
}

/// Read a page of JSON records: `count_sql` counts, `list_sql` must end in `LIMIT ? OFFSET ?`
/// placeholders numbered after `args`.
fn page_of<T: DeserializeOwned>(
    c: &Connection,
    count_sql: &str,
    list_sql: &str,
    args: &[&dyn rusqlite::ToSql],
    page: PageRequest,
    what: &'static str,
) -> Result<Page<T>> {
    let total: i64 = c
        .query_row(count_sql, args, |r| r.get(0))
        .map_err(internal(what))?;
    let mut all: Vec<&dyn rusqlite::ToSql> = args.to_vec();
    let (limit, offset) = (page.limit() as i64, page.offset() as i64);
    all.push(&limit);
    all.push(&offset);
    let mut stmt = c.prepare_cached(list_sql).map_err(internal(what))?;
    let docs = stmt
        .query_map(all.as_slice(), |r| r.get::<_, String>(0))
        .map_err(internal(what))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal(what))?;
    let items = docs
        .iter()
        .map(|d| decode(d, what))
        .collect::<Result<_>>()?;
    Ok(Page {
        items,
        total: total as u64,
    })
}

fn get_doc<T: DeserializeOwned>(
    c: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    what: &'static str,
) -> Result<Option<T>> {
    let doc: Option<String> = c
        .query_row(sql, args, |r| r.get(0))
        .optional()
        .map_err(internal(what))?;
    doc.map(|d| decode(&d, what)).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(internal("ping"))?;
            Ok(())
        })
        .await
    }

    async fn create_experiment(&self, experiment: &Experiment, actor: &str) -> Result<()> {
        let e = experiment.clone();
        let actor = actor.to_owned();
        let doc = encode(&e)?;
        self.write(move |c| {
            let tx = begin(c)?;
            insert_doc(
                &tx,
                "INSERT INTO experiments
                     (id, environment, organization, key, status, audience, version, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    &e.id,
                    &e.scope.environment,
                    &org_column(&e.scope.organization),
                    &e.key,
                    &e.status.as_str(),
                    &e.audience.as_deref().unwrap_or(""),
                    &(e.version as i64),
                    &doc,
                ],
                &format!(
                    "an experiment with key '{}' in this environment and organization",
                    e.key
                ),
            )?;
            audit(
                &tx,
                &e.id,
                e.created_at,
                &actor,
                "created",
                &json!({"key": e.key}),
            )?;
            commit(tx)
        })
        .await
    }

    async fn get_experiment(&self, scope: &Scope, key_or_id: &str) -> Result<Option<Experiment>> {
        let env = scope.environment.clone();
        let org = org_column(&scope.organization).to_owned();
        let k = key_or_id.to_owned();
        self.read(move |c| {
            get_doc(
                c,
                "SELECT doc FROM experiments
                 WHERE environment = ?1 AND organization = ?2 AND (key = ?3 OR id = ?3)
                 ORDER BY key = ?3 DESC LIMIT 1",
                &[&env, &org, &k],
                "reading experiment",
            )
        })
        .await
    }

    async fn list_experiments(
        &self,
        filter: &ExperimentFilter,
        page: PageRequest,
    ) -> Result<Page<Experiment>> {
        let f = filter.clone();
        self.read(move |c| {
            let mut where_sql = String::from("1 = 1");
            let mut args: Vec<String> = Vec::new();
            let mut add = |column: &str, value: String| {
                args.push(value);
                where_sql.push_str(&format!(" AND {column} = ?{}", args.len()));
            };
            if let Some(env) = f.environment {
                add("environment", env);
            }
            if let Some(org) = f.organization {
                add("organization", org.unwrap_or_default());
            }
            if let Some(st) = f.status {
                add("status", st.as_str().to_owned());
            }
            let n = args.len();
            let refs: Vec<&dyn rusqlite::ToSql> =
                args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
            page_of(
                c,
                &format!("SELECT COUNT(*) FROM experiments WHERE {where_sql}"),
                &format!(
                    "SELECT doc FROM experiments WHERE {where_sql}
                     ORDER BY rowid LIMIT ?{} OFFSET ?{}",
                    n + 1,
                    n + 2
                ),
                &refs,
                page,
                "listing experiments",
            )
        })
        .await
    }

    async fn update_experiment(&self, experiment: &Experiment, actor: &str) -> Result<Experiment> {
        let e = experiment.clone();
        let actor = actor.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let current = load_experiment_by_id(&tx, &e.id)?.ok_or(StoreError::NotFound)?;
            if current.version != e.version {
                return Err(StoreError::VersionConflict {
                    expected: e.version,
                    actual: current.version,
                });
            }
            let mut next = e;
            // Status, winner and lifecycle stamps change only through their own operations.
            next.status = current.status;
            next.winner = current.winner;
            next.started_at = current.started_at;
            next.completed_at = current.completed_at;
            next.created_at = current.created_at;
            next.version = current.version + 1;
            save_experiment(&tx, &next)?;
            audit(
                &tx,
                &next.id,
                next.updated_at,
                &actor,
                "updated",
                &json!({"version": next.version}),
            )?;
            commit(tx)?;
            Ok(next)
        })
        .await
    }

    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>> {
        let ch = change.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let Some(mut e) = load_experiment_by_id(&tx, &ch.experiment_id)? else {
                return Err(StoreError::NotFound);
            };
            // The compare of the compare-and-set: the writer connection serializes writers,
            // and the read and write share one IMMEDIATE transaction.
            if e.status != ch.from {
                return Ok(None);
            }
            let before = e.clone();
            e.apply_status(ch.to, ch.at);
            save_experiment(&tx, &e)?;
            enqueue(&tx, &before, &e, ch.at)?;
            audit(
                &tx,
                &e.id,
                ch.at,
                &ch.actor,
                "status_changed",
                &json!({"from": ch.from, "to": ch.to}),
            )?;
            commit(tx)?;
            Ok(Some(e))
        })
        .await
    }

    async fn set_winner(&self, change: &WinnerChange) -> Result<Experiment> {
        let ch = change.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let mut e =
                load_experiment_by_id(&tx, &ch.experiment_id)?.ok_or(StoreError::NotFound)?;
            if let Some(expected) = ch.expected_version
                && expected != e.version
            {
                return Err(StoreError::VersionConflict {
                    expected,
                    actual: e.version,
                });
            }
            let at = ch.winner.decided_at;
            let previous = e.winner.as_ref().map(|w| w.variant.clone());
            let before = e.clone();
            let from = e.apply_winner(ch.winner.clone(), ch.complete);
            save_experiment(&tx, &e)?;
            enqueue(&tx, &before, &e, at)?;
            audit(
                &tx,
                &e.id,
                at,
                &ch.actor,
                "winner_set",
                &json!({"from": previous, "to": ch.winner.variant, "source": ch.winner.source}),
            )?;
            if e.status != from {
                audit(
                    &tx,
                    &e.id,
                    at,
                    &ch.actor,
                    "status_changed",
                    &json!({"from": from, "to": e.status}),
                )?;
            }
            commit(tx)?;
            Ok(e)
        })
        .await
    }

    async fn list_audit(&self, experiment_id: &str, page: PageRequest) -> Result<Page<AuditEntry>> {
        let id = experiment_id.to_owned();
        self.read(move |c| {
            let total: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM audit WHERE experiment_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(internal("counting audit entries"))?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, at, actor, action, details FROM audit WHERE experiment_id = ?1
                     ORDER BY id DESC LIMIT ?2 OFFSET ?3",
                )
                .map_err(internal("listing audit entries"))?;
            let rows = stmt
                .query_map(
                    params![id, page.limit() as i64, page.offset() as i64],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    },
                )
                .map_err(internal("listing audit entries"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing audit entries"))?;
            let items = rows
                .into_iter()
                .map(|(aid, at, actor, action, details)| {
                    Ok(AuditEntry {
                        id: aid as u64,
                        experiment_id: id.clone(),
                        at: from_millis(at),
                        actor,
                        action,
                        details: decode(&details, "audit details")?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn list_outbox(&self, page: PageRequest) -> Result<Page<OutboxMessage>> {
        self.read(move |c| {
            let total: i64 = c
                .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
                .map_err(internal("counting outbox messages"))?;
            let mut stmt = c
                .prepare_cached("SELECT doc FROM outbox ORDER BY seq LIMIT ?1 OFFSET ?2")
                .map_err(internal("listing outbox messages"))?;
            let docs = stmt
                .query_map(params![page.limit() as i64, page.offset() as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(internal("listing outbox messages"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing outbox messages"))?;
            let items = docs
                .iter()
                .map(|d| decode(d, "stored outbox message"))
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read_point(move |c| select_assignment(c, &eid, &s))
            .await
    }

    async fn get_or_create_assignment(
        &self,
        assignment: &Assignment,
    ) -> Result<(Assignment, bool)> {
        // Callers look for a stored assignment first; new subjects arrive many at a time,
        // so they are committed in groups like event batches.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = WriteJob::Assign {
            assignment: assignment.clone(),
            reply,
        };
        self.send(Message::Commit(job), answer).await
    }

    async fn set_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
        variant: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let (eid, s, v, actor) = (
            experiment_id.to_owned(),
            subject.to_owned(),
            variant.map(str::to_owned),
            actor.to_owned(),
        );
        self.write(move |c| {
            let tx = begin(c)?;
            match &v {
                Some(v) => tx.execute(
                    "INSERT INTO forced_variants (experiment_id, subject, variant) VALUES (?1, ?2, ?3)
                     ON CONFLICT (experiment_id, subject) DO UPDATE SET variant = excluded.variant",
                    params![eid, s, v],
                ),
                None => tx.execute(
                    "DELETE FROM forced_variants WHERE experiment_id = ?1 AND subject = ?2",
                    params![eid, s],
                ),
            }
            .map_err(internal("writing forced variant"))?;
            let now = OffsetDateTime::now_utc();
            audit(&tx, &eid, now, &actor, "forced_variant_set", &json!({"subject": s, "variant": v}))?;
            commit(tx)
        })
        .await
    }

    async fn get_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<String>> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read_point(move |c| {
            c.prepare_cached(
                "SELECT variant FROM forced_variants WHERE experiment_id = ?1 AND subject = ?2",
            )
            .and_then(|mut st| st.query_row(params![eid, s], |r| r.get(0)).optional())
            .map_err(internal("reading forced variant"))
        })
        .await
    }

    async fn has_forced_variants(&self, experiment_id: &str) -> Result<bool> {
        let eid = experiment_id.to_owned();
        self.read_point(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM forced_variants WHERE experiment_id = ?1)",
            )
            .and_then(|mut st| st.query_row(params![eid], |r| r.get(0)))
            .map_err(internal("looking for forced variants"))
        })
        .await
    }

    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read_point(move |c| {
            // One statement, so one read transaction (each takes the WAL's read lock).
            c.prepare_cached(
                "SELECT (SELECT variant FROM forced_variants
                         WHERE experiment_id = ?1 AND subject = ?2),
                        a.variant, a.assigned_at
                 FROM (SELECT 1)
                 LEFT JOIN assignments a ON a.experiment_id = ?1 AND a.subject = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![eid, s], |r| {
                    let variant: Option<String> = r.get(1)?;
                    let assigned_at: Option<i64> = r.get(2)?;
                    Ok(SubjectRecord {
                        forced: r.get(0)?,
                        assignment: variant.zip(assigned_at).map(|(variant, at)| Assignment {
                            experiment_id: eid.clone(),
                            subject: s.clone(),
                            variant,
                            assigned_at: from_millis(at),
                        }),
                    })
                })
            })
            .map_err(internal("reading the subject's state"))
        })
        .await
    }

    async fn append_events(&self, batch: Vec<NewEvent>) -> Result<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Message::Commit(WriteJob::Append { batch, reply }), answer)
            .await
    }

    async fn scan_events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRecord>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, experiment_id, event_id, subject, variant, event, value, ts,
                            received_at, meta
                     FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(internal("scanning events"))?;
            let rows = stmt
                .query_map(params![after_seq as i64, limit as i64], |r| {
                    Ok((
                        EventRecord {
                            seq: r.get::<_, i64>(0)? as u64,
                            experiment_id: r.get(1)?,
                            event_id: r.get(2)?,
                            subject: r.get(3)?,
                            variant: r.get(4)?,
                            event: r.get(5)?,
                            value: r.get(6)?,
                            ts: from_millis(r.get(7)?),
                            received_at: from_millis(r.get(8)?),
                            meta: None,
                        },
                        r.get::<_, Option<String>>(9)?,
                    ))
                })
                .map_err(internal("scanning events"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("scanning events"))?;
            rows.into_iter()
                .map(|(mut rec, meta)| {
                    rec.meta = meta.map(|m| decode(&m, "event meta")).transpose()?;
                    Ok(rec)
                })
                .collect()
        })
        .await
    }

    /// One query for every attribution: `starts` is each counted subject with its start (its
    /// assignment, or its first exposure at or after it: then only exposed subjects); a
    /// subject's figures are its `event` events from the start, within the window and range.
    /// The branch of `starts` not asked for is skipped (a constant-false condition), so the
    /// plain case scans the events once, the exposure case twice.
    async fn variant_counts(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: &Attribution,
    ) -> Result<Vec<VariantCounts>> {
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        let from = attribution.range.from.map(to_millis);
        let to = attribution.range.to.map(to_millis);
        let exposure = attribution.exposure_event.clone();
        let window = attribution.window_millis();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "WITH starts AS (
                         SELECT a.subject AS subject, a.variant AS variant, a.assigned_at AS start
                         FROM assignments a
                         WHERE ?5 IS NULL AND a.experiment_id = ?1
                         UNION ALL
                         SELECT e.subject, x.variant, MIN(e.ts)
                         FROM events e
                         JOIN assignments x
                           ON x.experiment_id = e.experiment_id AND x.subject = e.subject
                         WHERE ?5 IS NOT NULL AND e.experiment_id = ?1 AND e.event = ?5
                           AND e.ts >= x.assigned_at
                         GROUP BY e.subject
                     )
                     SELECT p.variant, COUNT(*), COUNT(s.n), COALESCE(SUM(s.n), 0),
                            COALESCE(SUM(s.total), 0.0), COALESCE(SUM(s.total * s.total), 0.0)
                     FROM starts p
                     LEFT JOIN (
                         SELECT e.subject AS subject, COUNT(*) AS n, SUM(e.value) AS total
                         FROM events e
                         JOIN starts q ON q.subject = e.subject
                         WHERE e.experiment_id = ?1 AND e.event = ?2 AND e.ts >= q.start
                           AND (?6 IS NULL OR e.ts < q.start + ?6)
                           AND (?3 IS NULL OR e.ts >= ?3) AND (?4 IS NULL OR e.ts < ?4)
                         GROUP BY e.subject
                     ) s ON s.subject = p.subject
                     GROUP BY p.variant ORDER BY p.variant",
                )
                .map_err(internal("counting variants"))?;
            stmt.query_map(params![eid, ev, from, to, exposure, window], |r| {
                Ok(VariantCounts {
                    variant: r.get(0)?,
                    subjects: r.get::<_, i64>(1)? as u64,
                    converted_subjects: r.get::<_, i64>(2)? as u64,
                    events: r.get::<_, i64>(3)? as u64,
                    sum: r.get(4)?,
                    sum_of_squares: r.get(5)?,
                })
            })
            .map_err(internal("counting variants"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal("counting variants"))
        })
        .await
    }

    async fn rollup(&self, max_events: usize) -> Result<RollupReport> {
        self.rollup_fenced(max_events, None).await
    }

    /// The fence is checked inside the step's own transaction: a stale holder's step writes
    /// nothing, whenever it wakes up.
    async fn rollup_fenced(
        &self,
        max_events: usize,
        fence: Option<&crate::Fence>,
    ) -> Result<RollupReport> {
        let fence = fence.cloned();
        let max = max_events.max(1) as i64;
        self.write(move |c| {
            let tx = begin(c)?;
            crate::sqlite_jobs::check_fence(&tx, fence.as_ref())?;
            let from: i64 = tx
                .query_row(
                    "SELECT COALESCE((SELECT seq FROM rollup_state WHERE name = 'events'), 0)",
                    [],
                    |r| r.get(0),
                )
                .map_err(internal("reading the rollup watermark"))?;
            let (to, events): (i64, i64) = tx
                .query_row(
                    "SELECT COALESCE(MAX(seq), ?1), COUNT(*)
                     FROM (SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
                    params![from, max],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(internal("choosing the rollup range"))?;
            if events == 0 {
                return Ok(RollupReport {
                    watermark: from as u64,
                    ..Default::default()
                });
            }
            // Only events at or after the subject's assignment count (attribution).
            let mut buckets_written = 0;
            for g in [Granularity::Hour, Granularity::Day] {
                buckets_written +=
                    tx.execute(
                        "INSERT INTO buckets
                             (experiment_id, event, granularity, start, variant, count, sum, sum_sq)
                         SELECT e.experiment_id, e.event, ?3, (e.ts / ?4) * ?4, e.variant,
                                COUNT(*), SUM(e.value), SUM(e.value * e.value)
                         FROM events e
                         JOIN assignments a
                           ON a.experiment_id = e.experiment_id AND a.subject = e.subject
                         WHERE e.seq > ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at
                         GROUP BY e.experiment_id, e.event, (e.ts / ?4) * ?4, e.variant
                         ON CONFLICT (experiment_id, event, granularity, start, variant) DO UPDATE
                         SET count = count + excluded.count,
                             sum = sum + excluded.sum,
                             sum_sq = sum_sq + excluded.sum_sq",
                        params![from, to, g.as_str(), g.millis()],
                    )
                    .map_err(internal("rolling up buckets"))? as u64;
            }
            // Per subject, keyed by the integer ids of the experiment and the event (see the
            // migration creating `rollup_names`): the range's names get theirs first.
            tx.execute(
                "INSERT OR IGNORE INTO rollup_names (name)
                 SELECT experiment_id FROM events WHERE seq > ?1 AND seq <= ?2
                 UNION SELECT event FROM events WHERE seq > ?1 AND seq <= ?2",
                params![from, to],
            )
            .map_err(internal("naming rollup keys"))?;
            let subjects_written =
                tx.execute(
                    "INSERT INTO subject_metrics (experiment, event, subject, n, total, first_ts)
                     SELECT x.id, v.id, e.subject, COUNT(*), SUM(e.value), MIN(e.ts)
                     FROM events e
                     JOIN assignments a
                       ON a.experiment_id = e.experiment_id AND a.subject = e.subject
                     JOIN rollup_names x ON x.name = e.experiment_id
                     JOIN rollup_names v ON v.name = e.event
                     WHERE e.seq > ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at
                     GROUP BY x.id, v.id, e.subject
                     ON CONFLICT (experiment, event, subject) DO UPDATE
                     SET n = n + excluded.n,
                         total = total + excluded.total,
                         first_ts = MIN(first_ts, excluded.first_ts)",
                    params![from, to],
                )
                .map_err(internal("rolling up subjects"))? as u64;
            tx.execute(
                "INSERT INTO rollup_state (name, seq) VALUES ('events', ?1)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                [to],
            )
            .map_err(internal("advancing the rollup watermark"))?;
            commit(tx)?;
            Ok(RollupReport {
                events: events as u64,
                buckets_written,
                subjects_written,
                watermark: to as u64,
            })
        })
        .await
    }

    async fn rollup_watermark(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE((SELECT seq FROM rollup_state WHERE name = 'events'), 0)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|s| s as u64)
            .map_err(internal("reading the rollup watermark"))
        })
        .await
    }

    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
    ) -> Result<Vec<VariantCounts>> {
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT a.variant, COUNT(*), COUNT(s.subject), COALESCE(SUM(s.n), 0),
                            COALESCE(SUM(s.total), 0.0), COALESCE(SUM(s.total * s.total), 0.0)
                     FROM assignments a
                     LEFT JOIN subject_metrics s
                       ON s.experiment = (SELECT id FROM rollup_names WHERE name = ?1)
                      AND s.event = (SELECT id FROM rollup_names WHERE name = ?2)
                      AND s.subject = a.subject
                     WHERE a.experiment_id = ?1
                     GROUP BY a.variant ORDER BY a.variant",
                )
                .map_err(internal("reading rolled-up counts"))?;
            stmt.query_map(params![eid, ev], |r| {
                Ok(VariantCounts {
                    variant: r.get(0)?,
                    subjects: r.get::<_, i64>(1)? as u64,
                    converted_subjects: r.get::<_, i64>(2)? as u64,
                    events: r.get::<_, i64>(3)? as u64,
                    sum: r.get(4)?,
                    sum_of_squares: r.get(5)?,
                })
            })
            .map_err(internal("reading rolled-up counts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal("reading rolled-up counts"))
        })
        .await
    }

    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>> {
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        let from = range.from.map(to_millis);
        let to = range.to.map(to_millis);
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT variant, start, count, sum, sum_sq FROM buckets
                     WHERE experiment_id = ?1 AND event = ?2 AND granularity = ?3
                       AND (?4 IS NULL OR start >= ?4) AND (?5 IS NULL OR start < ?5)
                     ORDER BY start, variant",
                )
                .map_err(internal("reading buckets"))?;
            stmt.query_map(params![eid, ev, granularity.as_str(), from, to], |r| {
                Ok(Bucket {
                    variant: r.get(0)?,
                    event: ev.clone(),
                    start: from_millis(r.get(1)?),
                    count: r.get::<_, i64>(2)? as u64,
                    sum: r.get(3)?,
                    sum_of_squares: r.get(4)?,
                })
            })
            .map_err(internal("reading buckets"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal("reading buckets"))
        })
        .await
    }

    async fn get_evaluation_state(&self, experiment_id: &str) -> Result<Option<Value>> {
        let eid = experiment_id.to_owned();
        self.read(move |c| {
            let raw: Option<String> = c
                .query_row(
                    "SELECT state FROM evaluation_state WHERE experiment_id = ?1",
                    [&eid],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal("reading evaluation state"))?;
            raw.map(|s| decode(&s, "evaluation state")).transpose()
        })
        .await
    }

    async fn put_evaluation_state(&self, experiment_id: &str, state: &Value) -> Result<()> {
        let (eid, state) = (experiment_id.to_owned(), state.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO evaluation_state (experiment_id, state) VALUES (?1, ?2)
                 ON CONFLICT (experiment_id) DO UPDATE SET state = excluded.state",
                params![eid, state],
            )
            .map_err(internal("writing evaluation state"))?;
            Ok(())
        })
        .await
    }

    async fn create_environment(&self, environment: &Environment) -> Result<()> {
        let env = environment.clone();
        let doc = encode(&env)?;
        self.write(move |c| {
            insert_doc(
                c,
                "INSERT INTO environments (key, doc) VALUES (?1, ?2)",
                &[&env.key, &doc],
                &format!("environment '{}'", env.key),
            )
        })
        .await
    }

    async fn get_environment(&self, key: &str) -> Result<Option<Environment>> {
        let key = key.to_owned();
        self.read(move |c| {
            get_doc(
                c,
                "SELECT doc FROM environments WHERE key = ?1",
                &[&key],
                "reading environment",
            )
        })
        .await
    }

    async fn list_environments(&self, page: PageRequest) -> Result<Page<Environment>> {
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM environments",
                "SELECT doc FROM environments ORDER BY rowid LIMIT ?1 OFFSET ?2",
                &[],
                page,
                "listing environments",
            )
        })
        .await
    }

    async fn create_audience(&self, audience: &Audience) -> Result<()> {
        let a = audience.clone();
        let doc = encode(&a)?;
        self.write(move |c| {
            insert_doc(
                c,
                "INSERT INTO audiences (environment, key, doc) VALUES (?1, ?2, ?3)",
                &[&a.environment, &a.key, &doc],
                &format!("audience '{}' in environment '{}'", a.key, a.environment),
            )
        })
        .await
    }

    async fn get_audience(&self, environment: &str, key: &str) -> Result<Option<Audience>> {
        let (env, key) = (environment.to_owned(), key.to_owned());
        self.read_point(move |c| {
            get_doc(
                c,
                "SELECT doc FROM audiences WHERE environment = ?1 AND key = ?2",
                &[&env, &key],
                "reading audience",
            )
        })
        .await
    }

    async fn list_audiences(&self, environment: &str, page: PageRequest) -> Result<Page<Audience>> {
        let env = environment.to_owned();
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM audiences WHERE environment = ?1",
                "SELECT doc FROM audiences WHERE environment = ?1 ORDER BY rowid LIMIT ?2 OFFSET ?3",
                &[&env],
                page,
                "listing audiences",
            )
        })
        .await
    }

    async fn update_audience(&self, audience: &Audience) -> Result<Audience> {
        let a = audience.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let current: Audience = get_doc(
                &tx,
                "SELECT doc FROM audiences WHERE environment = ?1 AND key = ?2",
                &[&a.environment, &a.key],
                "reading audience",
            )?
            .ok_or(StoreError::NotFound)?;
            let next = Audience {
                created_at: current.created_at,
                ..a
            };
            tx.execute(
                "UPDATE audiences SET doc = ?3 WHERE environment = ?1 AND key = ?2",
                params![next.environment, next.key, encode(&next)?],
            )
            .map_err(internal("updating audience"))?;
            commit(tx)?;
            Ok(next)
        })
        .await
    }

    async fn delete_audience(&self, environment: &str, key: &str) -> Result<AudienceDeletion> {
        let (env, key) = (environment.to_owned(), key.to_owned());
        self.write(move |c| {
            let tx = begin(c)?;
            let users = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT key FROM experiments
                         WHERE environment = ?1 AND audience = ?2 AND status = 'running'
                         ORDER BY key",
                    )
                    .map_err(internal("checking audience use"))?;
                stmt.query_map(params![env, key], |r| r.get::<_, String>(0))
                    .map_err(internal("checking audience use"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal("checking audience use"))?
            };
            if !users.is_empty() {
                return Ok(AudienceDeletion::InUse(users));
            }
            let n = tx
                .execute(
                    "DELETE FROM audiences WHERE environment = ?1 AND key = ?2",
                    params![env, key],
                )
                .map_err(internal("deleting audience"))?;
            commit(tx)?;
            Ok(if n == 1 {
                AudienceDeletion::Deleted
            } else {
                AudienceDeletion::NotFound
            })
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let k = key.clone();
        // The hash is not part of the serialized record (it never leaves the store in API
        // answers), so the document gets it back from its column on read.
        let doc = encode(&k)?;
        self.write(move |c| {
            insert_doc(
                c,
                "INSERT INTO api_keys (id, hash, doc) VALUES (?1, ?2, ?3)",
                &[&k.id, &k.hash, &doc],
                "an API key with this id or secret",
            )
        })
        .await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let found: Option<ApiKey> = get_doc(
                c,
                "SELECT doc FROM api_keys WHERE hash = ?1",
                &[&hash],
                "reading API key",
            )?;
            Ok(found.map(|k| ApiKey { hash, ..k }))
        })
        .await
    }

    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>> {
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM api_keys",
                "SELECT doc FROM api_keys ORDER BY rowid LIMIT ?1 OFFSET ?2",
                &[],
                page,
                "listing API keys",
            )
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let Some(mut key): Option<ApiKey> = get_doc(
                &tx,
                "SELECT doc FROM api_keys WHERE id = ?1",
                &[&id],
                "reading API key",
            )?
            else {
                return Ok(false);
            };
            if key.revoked_at.is_none() {
                key.revoked_at = Some(at);
            }
            tx.execute(
                "UPDATE api_keys SET doc = ?2 WHERE id = ?1",
                params![id, encode(&key)?],
            )
            .map_err(internal("revoking API key"))?;
            commit(tx)?;
            Ok(true)
        })
        .await
    }
}

/// Append one batch inside `tx`: attribute each event to its subject's assignment, skip
/// duplicates (confirmed on the full id), insert the rest.
fn append_in(tx: &Transaction<'_>, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut assigned = tx
        .prepare_cached("SELECT variant FROM assignments WHERE experiment_id = ?1 AND subject = ?2")
        .map_err(internal("preparing assignment lookup"))?;
    // Two statements, not one `INSERT … SELECT … WHERE NOT EXISTS`: reading the table it
    // inserts into, that one would build a temporary table per event (measured: slower).
    let mut seen = tx
        .prepare_cached(
            "SELECT 1 FROM events WHERE dedupe = ?1 AND experiment_id = ?2 AND event_id = ?3",
        )
        .map_err(internal("preparing duplicate check"))?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO events (experiment_id, event_id, dedupe, subject, variant,
                                 event, value, ts, received_at, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(internal("preparing event insert"))?;
    // Subjects repeat within a batch; look each up once.
    let mut variants: foldhash::HashMap<(&str, &str), Option<String>> =
        foldhash::HashMap::with_capacity_and_hasher(batch.len(), Default::default());
    for e in batch {
        let variant = match variants.entry((&e.experiment_id, &e.subject)) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(
                assigned
                    .query_row(params![e.experiment_id, e.subject], |r| r.get(0))
                    .optional()
                    .map_err(internal("looking up assignment"))?,
            ),
        };
        let Some(variant) = variant.as_deref() else {
            outcomes.push(AppendOutcome::NotInExperiment);
            continue;
        };
        if e.variant
            .as_deref()
            .is_some_and(|claimed| claimed != variant)
        {
            outcomes.push(AppendOutcome::VariantMismatch);
            continue;
        }
        let key = dedupe_key(&e.experiment_id, &e.event_id);
        if seen
            .exists(params![key, e.experiment_id, e.event_id])
            .map_err(internal("checking for a duplicate"))?
        {
            outcomes.push(AppendOutcome::Duplicate);
            continue;
        }
        let meta = e.meta.as_ref().map(encode).transpose()?;
        insert
            .execute(params![
                e.experiment_id,
                e.event_id,
                key,
                e.subject,
                variant,
                e.event,
                e.value,
                to_millis(e.ts),
                to_millis(e.received_at),
                meta
            ])
            .map_err(internal("inserting event"))?;
        outcomes.push(AppendOutcome::Accepted);
    }
    Ok(outcomes)
}

/// Store `a` unless its subject has an assignment; the stored one, and whether this made it.
fn assign_in(tx: &Transaction<'_>, a: &Assignment) -> Result<(Assignment, bool)> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO assignments (experiment_id, subject, variant, assigned_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(params![
                a.experiment_id,
                a.subject,
                a.variant,
                to_millis(a.assigned_at)
            ])
        })
        .map_err(internal("inserting assignment"))?;
    if inserted == 1 {
        // As it reads back: stored to the millisecond.
        let stored = Assignment {
            assigned_at: from_millis(to_millis(a.assigned_at)),
            ..a.clone()
        };
        return Ok((stored, true));
    }
    let stored = select_assignment(tx, &a.experiment_id, &a.subject)?
        .ok_or_else(|| StoreError::corrupt("assignment vanished after insert"))?;
    Ok((stored, false))
}

/// The 64-bit idempotency key of an event: FNV-1a over `experiment_id`, a 0 byte, and
/// `event_id`. Persisted, so it must never change (no `std` hasher, whose output may).
fn dedupe_key(experiment_id: &str, event_id: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    for b in experiment_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(event_id.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h as i64
}

fn select_assignment(
    c: &Connection,
    experiment_id: &str,
    subject: &str,
) -> Result<Option<Assignment>> {
    c.prepare_cached(
        "SELECT variant, assigned_at FROM assignments WHERE experiment_id = ?1 AND subject = ?2",
    )
    .map_err(internal("reading assignment"))?
    .query_row(params![experiment_id, subject], |r| {
        Ok(Assignment {
            experiment_id: experiment_id.to_owned(),
            subject: subject.to_owned(),
            variant: r.get(0)?,
            assigned_at: from_millis(r.get(1)?),
        })
    })
    .optional()
    .map_err(internal("reading assignment"))
}
