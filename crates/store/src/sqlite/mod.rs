//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway), owned by one writer
//! thread that runs every write, a few reader connections that WAL lets run beside it
//! (point lookups on the calling thread, scans on tokio's blocking pool), and one
//! checkpointer connection on its own thread that copies the WAL into the database file
//! beside the writer (never on a write's commit). Every write is one `BEGIN IMMEDIATE`
//! transaction, so a crash leaves either all of it or none of it.
//!
//! Experiments are stored as JSON documents with the columns that queries filter on
//! projected beside them; the projection and the document are always written together.
//!
//! # Layout
//! This file: [`SqliteStore`], its connections, the writer thread (group commit, bounded
//! queue, panics contained), the schema migrations (`crates/store/migrations/*.sql`) and
//! the helpers every aggregate uses. One child module per aggregate holds that trait's
//! `impl` and its own helpers: `experiments`, `assignments`, `events`, `rollups`, `jobs`,
//! `webhooks`, `environments`, `audiences`, `keys`. Children use this file's helpers,
//! never each other's.

mod assignments;
mod audiences;
mod environments;
mod events;
mod experiments;
mod jobs;
mod keys;
mod publications;
mod rollups;
mod webhooks;

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::hooks::Wal;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use verdict_domain::{Assignment, NewEvent};

use crate::assignments::Exposure;
use crate::error::{Cause, StoreError};
use crate::jobs::Fence;
use crate::model::{AppendOutcome, Page, PageRequest, to_millis};
use crate::{Result, Store};

/// Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran.
/// A migration that has run anywhere is never edited (databases that applied it would not
/// see the edit): a schema change is a new file.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_core", include_str!("../../migrations/0001_core.sql")),
    (
        "0002_rollups",
        include_str!("../../migrations/0002_rollups.sql"),
    ),
    (
        "0003_outbox",
        include_str!("../../migrations/0003_outbox.sql"),
    ),
    ("0004_jobs", include_str!("../../migrations/0004_jobs.sql")),
    (
        "0005_compact_subject_metrics",
        include_str!("../../migrations/0005_compact_subject_metrics.sql"),
    ),
    (
        "0006_webhooks",
        include_str!("../../migrations/0006_webhooks.sql"),
    ),
    (
        "0007_events_by_experiment",
        include_str!("../../migrations/0007_events_by_experiment.sql"),
    ),
    (
        "0008_overflowed_totals",
        include_str!("../../migrations/0008_overflowed_totals.sql"),
    ),
    (
        "0009_deleted_experiments",
        include_str!("../../migrations/0009_deleted_experiments.sql"),
    ),
    (
        "0010_assignment_context",
        include_str!("../../migrations/0010_assignment_context.sql"),
    ),
    (
        "0011_threshold_states",
        include_str!("../../migrations/0011_threshold_states.sql"),
    ),
    (
        "0012_subject_segments",
        include_str!("../../migrations/0012_subject_segments.sql"),
    ),
    (
        "0013_publications",
        include_str!("../../migrations/0013_publications.sql"),
    ),
    (
        "0014_events_by_received",
        include_str!("../../migrations/0014_events_by_received.sql"),
    ),
    (
        "0015_evaluation_history",
        include_str!("../../migrations/0015_evaluation_history.sql"),
    ),
    (
        "0016_deliveries_by_message",
        include_str!("../../migrations/0016_deliveries_by_message.sql"),
    ),
];

/// Reader connections for point lookups ([`SqliteStore::read_point`]).
const POINT_READERS: usize = 2;
/// Reader connections for everything else: scans, lists, aggregations
/// ([`SqliteStore::read`]). Apart from the point readers, so that a lookup by key never
/// waits behind a results scan that reads half the store (from disk, once the store has
/// outgrown the page cache).
const SCAN_READERS: usize = 3;

/// Most writes waiting for the writer thread; a write beyond them is refused with
/// [`StoreError::Overloaded`] at once.
///
/// Every caller waits for its answer before it sends another write, so the queue is never
/// deeper than the number of callers waiting at once. A healthy server stays far below
/// this (the load harness runs 64 connections), so only a writer that has fallen behind
/// (a stalled disk, a flood of requests) fills it. 4,096 writes are 64 full group commits
/// ([`GROUP_COMMIT_MAX`]) of backlog: a write at the back already waits for 64 fsynced
/// commits, and queueing more would only make every answer later than a client waits for
/// it, while holding every waiting batch in memory (typical batches are tens of events; the
/// HTTP body limit caps one at 1 MiB). Refusing it instead gives the client a 503 with
/// `Retry-After` right away.
const WRITE_QUEUE_CAPACITY: usize = 4096;

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    points: Readers,
    scans: Readers,
    /// Work for the writer thread, which alone holds the writer connection (see
    /// [`writer_thread`]); at most `capacity` messages wait.
    writes: SyncSender<Message>,
    capacity: usize,
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
    /// An assignment, and its exposure event when given (in the same transaction).
    Assign {
        assignment: Assignment,
        exposure: Option<Box<Exposure>>,
        reply: tokio::sync::oneshot::Sender<Result<(Assignment, bool)>>,
    },
    /// A write that panics while it is applied (tests of panic containment).
    #[cfg(test)]
    Panic {
        reply: tokio::sync::oneshot::Sender<Result<()>>,
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
            Self::Append { batch, .. } => events::append_in(tx, batch).map(Written::Appended),
            Self::Assign {
                assignment,
                exposure,
                ..
            } => {
                let (kept, created) = assignments::assign_in(tx, assignment)?;
                if let Some(exposure) = exposure {
                    Exposure::check(&events::append_in(tx, &[exposure.of(&kept)])?)?;
                }
                Ok(Written::Assigned(kept, created))
            }
            #[cfg(test)]
            Self::Panic { .. } => panic!("a test write panics while it is applied"),
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
            #[cfg(test)]
            (Self::Panic { reply }, result) => {
                let _ = reply.send(result.map(|_| ()));
            }
            // Cannot happen (`apply` answers each kind with its own); never panic the writer.
            (job, Ok(_)) => job.answer(Err(StoreError::corrupt(
                "answering a write: its result is of another kind",
            ))),
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
/// answer only after its write is durable. A panic in a write fails that write (or group)
/// only: it is rolled back and the thread goes on serving. Ends when the store is dropped
/// (the sender closes).
fn writer_thread(mut conn: Connection, messages: Receiver<Message>, checkpoints: SyncSender<()>) {
    CHECKPOINT_WAKE.set(Some(checkpoints));
    conn.wal_hook(Some(wake_checkpointer));
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
                // `SqliteStore::write` already answers its caller when the write panics;
                // this keeps the thread (and the connection's state) if anything else in
                // the message does.
                if std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut conn))).is_err() {
                    roll_back_after_panic(&conn);
                }
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
                Err(TryRecvError::Empty) if !yielded => {
                    yielded = true;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
    }
}

/// Write `group` in one transaction and answer each job. A failure (or a panic) in any
/// job rolls the whole group back: nothing of it was written, and every job's caller
/// learns why.
fn commit_group(conn: &mut Connection, group: Vec<WriteJob>) {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<Vec<Written>> {
        let tx = begin(conn)?;
        let written = group
            .iter()
            .map(|job| job.apply(&tx))
            .collect::<Result<Vec<_>>>()?;
        commit(tx)?;
        Ok(written)
    }));
    let result = outcome.unwrap_or_else(|panic| {
        roll_back_after_panic(conn);
        Err(panicked(panic))
    });
    match result {
        Ok(all) => {
            for (job, written) in group.into_iter().zip(all) {
                job.answer(Ok(written));
            }
        }
        Err(e) => fail_group(group, e),
    }
}

/// Answer every job of a rolled-back group with `error`.
///
/// A job alone gets the error itself. Several jobs share one cause, but a [`StoreError`]
/// cannot be cloned (its cause is a boxed trait object, and a driver error need not be
/// `Clone`), so the error is put in an [`Arc`] that every caller's error holds as its
/// `source()` (`Arc<E>` is an `Error` when `E` is): each caller gets the same kind
/// (retryable stays retryable) and the full cause chain, not a copy of its text.
fn fail_group(mut group: Vec<WriteJob>, error: StoreError) {
    if group.len() == 1
        && let Some(job) = group.pop()
    {
        job.answer(Err(error));
        return;
    }
    const CONTEXT: &str = "committing a group of writes (rolled back: nothing was written)";
    let retryable = error.is_retryable();
    let shared = Arc::new(error);
    for job in group {
        let source: Cause = Box::new(Arc::clone(&shared));
        job.answer(Err(if retryable {
            StoreError::Unavailable {
                context: CONTEXT.to_owned(),
                source: Some(source),
            }
        } else {
            StoreError::Internal {
                context: CONTEXT.to_owned(),
                source: Some(source),
            }
        }));
    }
}

/// The cause of the error a panicking write answers: the panic's message.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {message}")]
struct Panicked {
    message: String,
}

/// The error for a write that panicked (and was rolled back).
fn panicked(panic: Box<dyn std::any::Any + Send>) -> StoreError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    StoreError::Internal {
        context: "running a write that panicked (rolled back: nothing was written)".to_owned(),
        source: Some(Box::new(Panicked { message })),
    }
}

/// After a panic in a write: unwinding dropped its transaction, which rolls back; if one is
/// still open (a write that began it by hand), roll it back here, so the next write starts
/// clean.
fn roll_back_after_panic(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %verdict_domain::ErrorChain(&e), "could not roll back after a write panicked");
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Map a driver error met while doing `context`: a busy or locked database is
/// [`StoreError::Unavailable`] (retryable), anything else [`StoreError::Internal`].
pub(crate) fn internal(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::unavailable(context, e)
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
        Self::open_with_queue(path, busy_timeout_ms, WRITE_QUEUE_CAPACITY)
    }

    /// [`SqliteStore::open`] with at most `capacity` writes waiting for the writer thread.
    pub(crate) fn open_with_queue(
        path: impl AsRef<Path>,
        busy_timeout_ms: u64,
        capacity: usize,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::internal(format!("creating the data directory {}", dir.display()), e)
            })?;
        }
        let mut writer = open_connection(&path, busy_timeout_ms, false)?;
        migrate(&mut writer)?;
        let checkpointer = open_connection(&path, busy_timeout_ms, false)?;
        let points = Readers::open(&path, busy_timeout_ms, POINT_READERS)?;
        let scans = Readers::open(&path, busy_timeout_ms, SCAN_READERS)?;
        let (writes, messages) = std::sync::mpsc::sync_channel(capacity);
        let (wake, wakes) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer_thread(checkpointer, wakes))
            .map_err(|e| StoreError::internal("starting the SQLite checkpointer thread", e))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_thread(writer, messages, wake))
            .map_err(|e| StoreError::internal("starting the SQLite writer thread", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                points,
                scans,
                writes,
                capacity,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` on the writer connection, on the writer thread (after the writes before it).
    /// A panic in `f` fails this write only (its transaction rolled back), never the writer
    /// thread.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let run = move |conn: &mut Connection| {
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|panic| {
                    roll_back_after_panic(conn);
                    Err(panicked(panic))
                });
            let _ = reply.send(result);
        };
        self.send(Message::Run(Box::new(run)), answer).await
    }

    /// Run `f`, a lookup of a few rows by key, on a free point reader right here on the
    /// calling thread. Such a read takes microseconds from SQLite's page cache, less than
    /// handing it to the blocking pool and back (two context switches, which dominated the
    /// assignment path on one core). When every point reader is busy it waits for one on
    /// the blocking pool.
    pub(crate) async fn read_point<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // The first free one: point reads keep going to the same connection, whose cache
        // then holds the hot index pages (instead of a copy in every reader's).
        if let Some(conn) = self.inner.points.free(0) {
            return f(&conn);
        }
        let inner = self.inner.clone();
        blocking(move || f(&inner.points.take())).await
    }

    /// Hand `message` to the writer thread and wait for its `answer`; refused at once with
    /// [`StoreError::Overloaded`] when [`WRITE_QUEUE_CAPACITY`] writes already wait.
    async fn send<T>(
        &self,
        message: Message,
        answer: tokio::sync::oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        match self.inner.writes.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Overloaded {
                    capacity: self.inner.capacity,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::corrupt(
                    "handing a write to the SQLite writer thread, which has stopped",
                ));
            }
        }
        answer.await.map_err(|_| {
            StoreError::corrupt("waiting for the SQLite writer thread, which dropped the write")
        })?
    }

    /// Run `f`, a scan (anything more than a lookup by key), on one of the scan readers on
    /// the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&inner.scans.take())).await
    }
}

/// Run `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::internal("running a read on the blocking pool", e))?
}

/// A few read-only connections, each used by one read at a time.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    fn open(path: &Path, busy_timeout_ms: u64, n: usize) -> Result<Self> {
        Ok(Self {
            conns: (0..n)
                .map(|_| open_connection(path, busy_timeout_ms, true).map(Mutex::new))
                .collect::<Result<_>>()?,
            next: AtomicUsize::new(0),
        })
    }

    /// The first connection not in use, looking from `start` round the list (a poisoned
    /// lock is taken as it is, like every lock of this adapter).
    fn free(&self, start: usize) -> Option<std::sync::MutexGuard<'_, Connection>> {
        let n = self.conns.len();
        (0..n).find_map(|k| match self.conns[(start + k) % n].try_lock() {
            Ok(conn) => Some(conn),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        })
    }

    /// A free connection if there is one (from a rotating start, so reads spread over the
    /// connections), else the next in turn once it is free: a read never waits while a
    /// connection is idle. Blocks: for the blocking pool only.
    fn take(&self) -> std::sync::MutexGuard<'_, Connection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.free(start)
            .unwrap_or_else(|| self.conns[start].lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// WAL pages (4 KiB each) after which a commit wakes the checkpointer.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// How often the checkpointer copies whatever the WAL holds when no commit woke it (so the
/// WAL of a quiet store is folded into the database file soon after its last write).
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// On the writer thread: the checkpointer's wake-up (see [`wake_checkpointer`]).
    static CHECKPOINT_WAKE: RefCell<Option<SyncSender<()>>> = const { RefCell::new(None) };
}

/// The writer connection's WAL hook, called by SQLite after each commit with the pages
/// the WAL now holds: from [`WAL_CHECKPOINT_PAGES`] on, wake the checkpointer (a wake-up
/// already pending is enough). Replaces SQLite's automatic checkpoint, which would copy the
/// WAL into the database file inside the commit, holding up every write behind it for as
/// long as that copy and its fsync take (hundreds of milliseconds once the event indexes
/// outgrow the page cache: each commit then dirties pages all over them).
fn wake_checkpointer(_: &Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    if i64::from(pages) >= WAL_CHECKPOINT_PAGES {
        CHECKPOINT_WAKE.with_borrow(|wake| {
            if let Some(wake) = wake {
                let _ = wake.try_send(());
            }
        });
    }
    Ok(())
}

/// The checkpointer thread: copies the WAL into the database file with a PASSIVE
/// checkpoint (which takes no lock a reader or the writer waits for) whenever the writer's
/// WAL hook wakes it, and every [`CHECKPOINT_IDLE`] otherwise. Writes keep committing to
/// the WAL meanwhile; the writer starts the WAL over at its next write once a checkpoint
/// has copied all of it (a checkpoint that ran beside commits leaves their pages to the
/// next, which the next commit's hook asks for at once). Ends when the writer thread does.
fn checkpointer_thread(conn: Connection, wakes: Receiver<()>) {
    loop {
        match wakes.recv_timeout(CHECKPOINT_IDLE) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let started = std::time::Instant::now();
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match outcome {
            Ok((wal_pages, copied)) if wal_pages > 0 => tracing::debug!(
                wal_pages,
                copied,
                ms = started.elapsed().as_millis() as u64,
                "SQLite checkpoint"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %verdict_domain::ErrorChain(&e),
                "SQLite checkpoint failed (the next one copies what it left)"
            ),
        }
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
        StoreError::internal(format!("opening the SQLite database {}", path.display()), e)
    })?;
    conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))
        .map_err(internal("setting the busy timeout"))?;
    if !read_only {
        // WAL lets readers run beside the writer; NORMAL sync is durable across process
        // crashes (the WAL is fsynced at checkpoints, and on every commit against power loss
        // only with FULL: we keep FULL because an acknowledged event must not be lost).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(internal("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(internal("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(internal("enabling foreign keys"))?;
        // No checkpoint at commit: the checkpointer thread copies the WAL into the database
        // file beside the writer (see [`wake_checkpointer`]), every ~40 MB of WAL rather than
        // SQLite's 4 MB: under ingestion a commit is a few MB, mostly the same hot pages
        // (index leaves, the table's tail), which a checkpoint then copies once for many
        // commits instead of once per commit. The WAL file is cut back to this size when
        // the WAL starts over.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(internal("turning off checkpoints at commit"))?;
        conn.pragma_update(None, "journal_size_limit", WAL_CHECKPOINT_PAGES * 4096)
            .map_err(internal("setting the WAL size limit"))?;
    }
    // Page caches (KiB): the writer's holds the pages every insert and rollup step touches;
    // a reader's serves point lookups and scans that the OS page cache backs anyway.
    let cache_kib = if read_only { 8_000 } else { 16_000 };
    conn.pragma_update(None, "cache_size", -cache_kib)
        .map_err(internal("setting the cache size"))?;
    Ok(conn)
}

/// Apply the migrations the database has not run yet, in one exclusive transaction;
/// returns how many ran.
fn migrate(conn: &mut Connection) -> Result<usize> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(internal("starting the migration"))?;
    let applied: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(internal("reading the schema version"))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::corrupt(format!(
            "opening a database whose schema version {applied} is newer than this build \
             knows ({}); upgrade Verdict",
            MIGRATIONS.len()
        )));
    }
    for (i, (_, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)
            .map_err(internal("applying a migration"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(internal("recording the schema version"))?;
    }
    tx.commit().map_err(internal("committing the migration"))?;
    Ok(MIGRATIONS.len() - applied)
}

/// Decode a JSON column read while `doing` something (e.g. "reading an experiment").
pub(crate) fn decode<T: DeserializeOwned>(doc: &str, doing: &'static str) -> Result<T> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::internal(format!("{doing}: decoding its stored JSON"), e))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::internal("encoding JSON", e))
}

pub(crate) fn begin(c: &mut Connection) -> Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(internal("starting a transaction"))
}

pub(crate) fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit().map_err(internal("committing"))
}

/// Write an audit entry of experiment `id` (inside the change's transaction).
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
    .map_err(internal("writing an audit entry"))?;
    Ok(())
}

/// [`StoreError::Fenced`] unless `fence` holds the newest token of its job (read inside
/// the fenced write's own transaction).
fn check_fence(c: &Connection, fence: Option<&Fence>) -> Result<()> {
    let Some(fence) = fence else { return Ok(()) };
    let token: Option<i64> = c
        .query_row(
            "SELECT token FROM leases WHERE job = ?1",
            [&fence.job],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal("checking a fencing token"))?;
    if token == Some(fence.token as i64) {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            job: fence.job.clone(),
            token: fence.token,
        })
    }
}

/// Insert a JSON record into one of the keyed tables; [`StoreError::Conflict`] naming
/// `what` when a unique key exists.
fn insert_doc(c: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql], what: &str) -> Result<()> {
    match c.execute(sql, args) {
        Ok(_) => Ok(()),
        Err(err) if is_unique_violation(&err) => {
            Err(StoreError::Conflict(format!("{what} already exists")))
        }
        Err(err) => Err(internal("inserting a record")(err)),
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

/// The JSON record the first column of `sql`'s row holds, if there is a row.
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

// ---- per-subject figures (shared by raw-event counts and the rollups) ------------------

/// Each counted subject of experiment `?1` with its start: its assignment, or (with an
/// exposure event `?5`) its first exposure at or after it, and then only exposed subjects.
/// The branch not asked for is skipped (a constant-false condition), so the plain case scans
/// the events once, the exposure case twice.
const STARTS: &str = "starts AS (
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
)";

/// Per counted subject with at least one counted `?2` event (from its start, within the
/// window `?6` and the range [`?3`, `?4`)): `subject`, `n` (events), `total` (Σ value).
const SUBJECT_FIGURES: &str = "SELECT e.subject AS subject, COUNT(*) AS n, SUM(e.value) AS total
    FROM events e
    JOIN starts q ON q.subject = e.subject
    WHERE e.experiment_id = ?1 AND e.event = ?2 AND e.ts >= q.start
      AND (?6 IS NULL OR e.ts < q.start + ?6)
      AND (?3 IS NULL OR e.ts >= ?3) AND (?4 IS NULL OR e.ts < ?4)
    GROUP BY e.subject";

/// The per-variant sums over per-subject rows `s` (`s.n` events, `s.total` Σ value; NULL
/// for a subject without counted events), each total capped at the value bound to
/// `?{cap}` (NULL: no cap) as `t`: converted subjects, events, Σt, Σt², Σn², Σn·t. The cap
/// is `min(total, cap)`, except that negative totals are left as they are.
fn variant_sums(cap: usize) -> String {
    let t = format!(
        "(CASE WHEN ?{cap} IS NOT NULL AND s.total >= 0 AND s.total > ?{cap} THEN ?{cap} \
         ELSE s.total END)"
    );
    format!(
        "COUNT(s.n), COALESCE(SUM(s.n), 0), COALESCE(SUM({t}), 0.0), \
         COALESCE(SUM({t} * {t}), 0.0), COALESCE(SUM(s.n * s.n), 0), COALESCE(SUM(s.n * {t}), 0.0)"
    )
}

/// Read one row of `SELECT variant, subjects, {variant_sums}`.
fn variant_counts_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<crate::model::VariantCounts> {
    variant_counts_row_at(r, 0)
}

/// [`variant_counts_row`] from column `at` on (after the columns before it).
fn variant_counts_row_at(
    r: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<crate::model::VariantCounts> {
    Ok(crate::model::VariantCounts {
        variant: r.get(at)?,
        subjects: r.get::<_, i64>(at + 1)? as u64,
        converted_subjects: r.get::<_, i64>(at + 2)? as u64,
        events: r.get::<_, i64>(at + 3)? as u64,
        sum: r.get(at + 4)?,
        sum_of_squares: r.get(at + 5)?,
        sum_events_squared: r.get::<_, i64>(at + 6)? as u64,
        sum_events_value: r.get(at + 7)?,
    })
}

/// The nearest-rank `q`-quantile of the `total` column of `rows` (a query whose parameters
/// are `params` and whose CTEs are `with`), counted then read from the nearer end, in one
/// read transaction so both see the same rows.
fn quantile_of_totals(
    c: &Connection,
    with: &str,
    rows: &str,
    params: &[&dyn rusqlite::ToSql],
    q: f64,
) -> Result<Option<f64>> {
    const DOING: &str = "computing a subject value quantile";
    let tx = c.unchecked_transaction().map_err(internal(DOING))?;
    let n: i64 = tx
        .prepare_cached(&format!("{with} SELECT COUNT(*) FROM ({rows})"))
        .and_then(|mut st| st.query_row(params, |r| r.get(0)))
        .map_err(internal(DOING))?;
    let Some((descending, offset)) = crate::rollup::quantile_position(q, n as u64)? else {
        return Ok(None);
    };
    let order = if descending { "DESC" } else { "ASC" };
    let offset = offset as i64;
    let mut all = params.to_vec();
    all.push(&offset);
    let value = tx
        .prepare_cached(&format!(
            "{with} SELECT total FROM ({rows}) ORDER BY total {order} LIMIT 1 OFFSET ?{}",
            all.len()
        ))
        .and_then(|mut st| st.query_row(all.as_slice(), |r| r.get(0)).optional())
        .map_err(internal(DOING))?;
    Ok(value)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.read_point(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(internal("pinging the database"))?;
            Ok(())
        })
        .await
    }

    async fn get_or_create_exposed_assignment(
        &self,
        assignment: &Assignment,
        exposure: &Exposure,
    ) -> Result<(Assignment, bool)> {
        self.assign(assignment, Some(exposure)).await
    }
}

#[cfg(test)]
mod tests;
