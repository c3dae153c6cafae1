//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a few reader
//! connections that WAL lets run beside it. Calls run on tokio's blocking pool. Every write
//! is one `BEGIN IMMEDIATE` transaction, so a crash leaves either all of it or none of it.
//!
//! Experiments are stored as JSON documents with the columns that queries filter on
//! projected beside them; the projection and the document are always written together.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::json;
use verdict_domain::{Assignment, EventRecord, Experiment, NewEvent, Scope, Status};

use crate::error::StoreError;
use crate::model::{
    AppendOutcome, AuditEntry, ExperimentFilter, Page, PageRequest, StatusChange, from_millis,
    to_millis,
};
use crate::{Result, Store};

/// Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE experiments (
    id            TEXT PRIMARY KEY,
    environment   TEXT NOT NULL,
    organization  TEXT NOT NULL,          -- '' for global experiments
    key           TEXT NOT NULL,
    status        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    created_seq   INTEGER NOT NULL,
    doc           TEXT NOT NULL,           -- the whole Experiment as JSON
    UNIQUE (environment, organization, key)
);
CREATE INDEX experiments_list ON experiments (environment, status, created_seq);

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
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    event         TEXT NOT NULL,
    value         REAL NOT NULL,
    ts            INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    meta          TEXT
);
CREATE UNIQUE INDEX events_idempotency ON events (experiment_id, event_id);

CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    details       TEXT NOT NULL
);
CREATE INDEX audit_by_experiment ON audit (experiment_id, id);
"#];

const READERS: usize = 4;

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn internal(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
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

fn is_unique_violation(e: &rusqlite::Error) -> bool {
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
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` on the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::internal("sqlite writer task failed", e))?
    }

    /// Run `f` on one of the reader connections on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
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
    }
    conn.pragma_update(None, "cache_size", -32_000)
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

fn decode_experiment(doc: &str) -> Result<Experiment> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::internal("stored experiment is not valid JSON", e))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::internal("encoding JSON", e))
}

fn load_experiment_by_id(conn: &Connection, id: &str) -> Result<Option<Experiment>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM experiments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(internal("reading experiment"))?;
    doc.as_deref().map(decode_experiment).transpose()
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

    async fn create_experiment(&self, experiment: &Experiment) -> Result<()> {
        let e = experiment.clone();
        let doc = encode(&e)?;
        self.write(move |c| {
            let res = c.execute(
                "INSERT INTO experiments
                     (id, environment, organization, key, status, version, created_seq, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                         (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM experiments), ?7)",
                params![
                    e.id,
                    e.scope.environment,
                    org_column(&e.scope.organization),
                    e.key,
                    e.status.as_str(),
                    e.version as i64,
                    doc
                ],
            );
            match res {
                Ok(_) => Ok(()),
                Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!(
                    "an experiment with key '{}' already exists in this environment and \
                     organization",
                    e.key
                ))),
                Err(err) => Err(internal("inserting experiment")(err)),
            }
        })
        .await
    }

    async fn get_experiment(&self, scope: &Scope, key_or_id: &str) -> Result<Option<Experiment>> {
        let env = scope.environment.clone();
        let org = org_column(&scope.organization).to_owned();
        let k = key_or_id.to_owned();
        self.read(move |c| {
            let doc: Option<String> = c
                .query_row(
                    "SELECT doc FROM experiments
                     WHERE environment = ?1 AND organization = ?2 AND (key = ?3 OR id = ?3)
                     ORDER BY key = ?3 DESC LIMIT 1",
                    params![env, org, k],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal("reading experiment"))?;
            doc.as_deref().map(decode_experiment).transpose()
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
            if let Some(env) = f.environment {
                args.push(env);
                where_sql.push_str(&format!(" AND environment = ?{}", args.len()));
            }
            if let Some(org) = f.organization {
                args.push(org.unwrap_or_default());
                where_sql.push_str(&format!(" AND organization = ?{}", args.len()));
            }
            if let Some(st) = f.status {
                args.push(st.as_str().to_owned());
                where_sql.push_str(&format!(" AND status = ?{}", args.len()));
            }
            let total: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM experiments WHERE {where_sql}"),
                    rusqlite::params_from_iter(args.iter()),
                    |r| r.get(0),
                )
                .map_err(internal("counting experiments"))?;
            let sql = format!(
                "SELECT doc FROM experiments WHERE {where_sql}
                 ORDER BY created_seq LIMIT {} OFFSET {}",
                page.limit(),
                page.offset()
            );
            let mut stmt = c.prepare(&sql).map_err(internal("listing experiments"))?;
            let docs = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(0)
                })
                .map_err(internal("listing experiments"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing experiments"))?;
            let items = docs
                .iter()
                .map(|d| decode_experiment(d))
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn update_experiment(&self, experiment: &Experiment) -> Result<Experiment> {
        let e = experiment.clone();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal("starting update"))?;
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
            let res = tx.execute(
                "UPDATE experiments SET key = ?2, version = ?3, doc = ?4 WHERE id = ?1",
                params![next.id, next.key, next.version as i64, encode(&next)?],
            );
            match res {
                Ok(_) => {}
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::Conflict(format!(
                        "an experiment with key '{}' already exists",
                        next.key
                    )));
                }
                Err(err) => return Err(internal("updating experiment")(err)),
            }
            tx.commit().map_err(internal("committing update"))?;
            Ok(next)
        })
        .await
    }

    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>> {
        let ch = change.clone();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal("starting transition"))?;
            let Some(mut e) = load_experiment_by_id(&tx, &ch.experiment_id)? else {
                return Err(StoreError::NotFound);
            };
            if e.status != ch.from {
                return Ok(None);
            }
            e.status = ch.to;
            e.updated_at = ch.at;
            e.version += 1;
            if ch.to == Status::Running && e.started_at.is_none() {
                e.started_at = Some(ch.at);
            }
            if ch.to == Status::Completed {
                e.completed_at = Some(ch.at);
            }
            let updated = tx
                .execute(
                    "UPDATE experiments SET status = ?2, version = ?3, doc = ?4
                     WHERE id = ?1 AND status = ?5",
                    params![
                        e.id,
                        e.status.as_str(),
                        e.version as i64,
                        encode(&e)?,
                        ch.from.as_str()
                    ],
                )
                .map_err(internal("updating status"))?;
            if updated != 1 {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO audit (experiment_id, at, actor, action, details)
                 VALUES (?1, ?2, ?3, 'status_changed', ?4)",
                params![
                    e.id,
                    to_millis(ch.at),
                    ch.actor,
                    json!({"from": ch.from, "to": ch.to}).to_string()
                ],
            )
            .map_err(internal("writing audit entry"))?;
            tx.commit().map_err(internal("committing transition"))?;
            Ok(Some(e))
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
                .prepare(
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
                        details: serde_json::from_str(&details)
                            .map_err(|e| StoreError::internal("audit details", e))?,
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

    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read(move |c| select_assignment(c, &eid, &s)).await
    }

    async fn get_or_create_assignment(
        &self,
        assignment: &Assignment,
    ) -> Result<(Assignment, bool)> {
        // Repeat subjects are the common case: answer them from a reader without taking the
        // single writer.
        if let Some(existing) = self
            .get_assignment(&assignment.experiment_id, &assignment.subject)
            .await?
        {
            return Ok((existing, false));
        }
        let a = assignment.clone();
        self.write(move |c| {
            let inserted = c
                .execute(
                    "INSERT INTO assignments (experiment_id, subject, variant, assigned_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![
                        a.experiment_id,
                        a.subject,
                        a.variant,
                        to_millis(a.assigned_at)
                    ],
                )
                .map_err(internal("inserting assignment"))?;
            let stored = select_assignment(c, &a.experiment_id, &a.subject)?
                .ok_or_else(|| StoreError::corrupt("assignment vanished after insert"))?;
            Ok((stored, inserted == 1))
        })
        .await
    }

    async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<AppendOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let batch = events.to_vec();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal("starting event append"))?;
            let mut outcomes = Vec::with_capacity(batch.len());
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO events (experiment_id, event_id, subject, variant, event,
                                             value, ts, received_at, meta)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (experiment_id, event_id) DO NOTHING",
                    )
                    .map_err(internal("preparing event insert"))?;
                for e in &batch {
                    let meta = e.meta.as_ref().map(encode).transpose()?;
                    let n = stmt
                        .execute(params![
                            e.experiment_id,
                            e.event_id,
                            e.subject,
                            e.variant,
                            e.event,
                            e.value,
                            to_millis(e.ts),
                            to_millis(e.received_at),
                            meta
                        ])
                        .map_err(internal("inserting event"))?;
                    outcomes.push(if n == 1 {
                        AppendOutcome::Accepted
                    } else {
                        AppendOutcome::Duplicate
                    });
                }
            }
            tx.commit().map_err(internal("committing events"))?;
            Ok(outcomes)
        })
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
                            event: NewEvent {
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
                        },
                        r.get::<_, Option<String>>(9)?,
                    ))
                })
                .map_err(internal("scanning events"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("scanning events"))?;
            rows.into_iter()
                .map(|(mut rec, meta)| {
                    rec.event.meta = meta
                        .map(|m| serde_json::from_str(&m))
                        .transpose()
                        .map_err(|e| StoreError::internal("event meta", e))?;
                    Ok(rec)
                })
                .collect()
        })
        .await
    }
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
