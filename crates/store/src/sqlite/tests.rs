//! The writer thread (panics, back-pressure, shared causes) and the migrations.

use time::macros::datetime;

use super::*;
use crate::{AssignmentStore, EventStore, RollupStore};

fn assignment(subject: &str) -> Assignment {
    Assignment {
        experiment_id: "e1".into(),
        subject: subject.into(),
        variant: "control".into(),
        assigned_at: datetime!(2026-01-01 00:00:00 UTC),
        context: None,
    }
}

fn event(id: &str, subject: &str) -> NewEvent {
    NewEvent {
        experiment_id: "e1".into(),
        event_id: id.into(),
        subject: subject.into(),
        variant: None,
        event: "conversion".into(),
        value: 1.0,
        ts: datetime!(2026-01-01 00:01:00 UTC),
        received_at: datetime!(2026-01-01 00:01:00 UTC),
        meta: None,
    }
}

/// Every message of an error's cause chain, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut all = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        all.push(cause.to_string());
        next = cause.source();
    }
    all
}

/// A migrated writer connection on a fresh file, for driving `commit_group` directly.
fn writer_connection(dir: &tempfile::TempDir) -> Connection {
    let mut conn = open_connection(&dir.path().join("verdict.db"), 5_000, false).unwrap();
    migrate(&mut conn).unwrap();
    conn
}

fn assign_job(
    subject: &str,
) -> (
    WriteJob,
    tokio::sync::oneshot::Receiver<Result<(Assignment, bool)>>,
) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = WriteJob::Assign {
        exposure: None,
        assignment: assignment(subject),
        reply,
    };
    (job, answer)
}

fn stored_assignments(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM assignments", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_write_that_panics_fails_alone_and_the_next_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("verdict.db"), 5_000).unwrap();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let failed = store
        .send(Message::Commit(WriteJob::Panic { reply }), answer)
        .await
        .unwrap_err();
    assert!(matches!(failed, StoreError::Internal { .. }), "{failed:?}");
    let messages = chain(&failed);
    assert_eq!(
        messages,
        [
            "store failure while running a write that panicked (rolled back: nothing was written)",
            "panicked: a test write panics while it is applied",
        ]
    );

    // The writer thread goes on: a group commit and a write of its own both succeed.
    let (stored, created) = store
        .get_or_create_assignment(&assignment("s1"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(stored.subject, "s1");
    assert_eq!(
        store.append_events(vec![event("ev1", "s1")]).await.unwrap(),
        [AppendOutcome::Accepted]
    );
    store
        .put_evaluation_state("e1", &serde_json::json!({"n": 1}))
        .await
        .unwrap();

    // A panic inside an ordinary write fails that write and is rolled back too.
    let panicked = store
        .write(|c| -> Result<()> {
            let tx = begin(c)?;
            tx.execute("DELETE FROM assignments", [])
                .map_err(internal("deleting"))?;
            panic!("halfway through a transaction")
        })
        .await
        .unwrap_err();
    assert!(
        chain(&panicked)
            .last()
            .is_some_and(|m| m == "panicked: halfway through a transaction"),
        "{panicked:?}"
    );
    assert!(
        store.get_assignment("e1", "s1").await.unwrap().is_some(),
        "the panicking write's delete was rolled back"
    );
}

#[test]
fn a_panic_rolls_back_every_write_of_its_group_and_answers_each_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = writer_connection(&dir);
    let (first, first_answer) = assign_job("s1");
    let (reply, panic_answer) = tokio::sync::oneshot::channel();
    let (last, last_answer) = assign_job("s2");
    commit_group(&mut conn, vec![first, WriteJob::Panic { reply }, last]);

    let e = first_answer.blocking_recv().unwrap().unwrap_err();
    assert!(matches!(e, StoreError::Internal { .. }));
    assert_eq!(
        chain(&e),
        [
            "store failure while committing a group of writes (rolled back: nothing was \
             written)",
            "store failure while running a write that panicked (rolled back: nothing was \
             written)",
            "panicked: a test write panics while it is applied",
        ]
    );
    assert!(panic_answer.blocking_recv().unwrap().is_err());
    assert!(last_answer.blocking_recv().unwrap().is_err());
    assert_eq!(
        stored_assignments(&conn),
        0,
        "nothing of the group was written"
    );
    assert!(conn.is_autocommit(), "no transaction is left open");

    // The connection serves the next group.
    let (next, next_answer) = assign_job("s3");
    commit_group(&mut conn, vec![next]);
    assert!(next_answer.blocking_recv().unwrap().unwrap().1);
    assert_eq!(stored_assignments(&conn), 1);
}

#[test]
fn a_failed_group_gives_every_caller_the_kind_and_the_cause_of_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = writer_connection(&dir);
    // A batch that cannot be written (its table is gone) fails the group it is in.
    conn.execute_batch("DROP TABLE events").unwrap();
    let (assign, assign_answer) = assign_job("s1");
    let (reply, append_answer) = tokio::sync::oneshot::channel();
    let append = WriteJob::Append {
        batch: vec![event("ev1", "s1")],
        reply,
    };
    commit_group(&mut conn, vec![assign, append]);

    let e = assign_answer.blocking_recv().unwrap().unwrap_err();
    assert!(matches!(e, StoreError::Internal { .. }) && !e.is_retryable());
    let messages = chain(&e);
    assert_eq!(
        messages[..2],
        [
            "store failure while committing a group of writes (rolled back: nothing was written)",
            "store failure while preparing the duplicate check",
        ]
    );
    assert!(
        messages[2].contains("no such table: events"),
        "the driver's error is the root cause: {messages:?}"
    );
    // The caller whose write failed learns the same cause.
    let e = append_answer.blocking_recv().unwrap().unwrap_err();
    assert!(
        chain(&e)
            .iter()
            .any(|m| m.contains("no such table: events"))
    );
    assert_eq!(stored_assignments(&conn), 0);
}

#[test]
fn a_retryable_failure_stays_retryable_for_every_caller_of_the_group() {
    let (first, first_answer) = assign_job("s1");
    let (second, second_answer) = assign_job("s2");
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    fail_group(vec![first, second], internal("committing")(busy));
    for answer in [first_answer, second_answer] {
        let e = answer.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        assert!(e.is_retryable());
        assert_eq!(
            chain(&e)[1],
            "store unavailable while committing",
            "the original error is the cause"
        );
    }
}

#[tokio::test]
async fn a_full_write_queue_answers_overloaded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with_queue(dir.path().join("verdict.db"), 5_000, 1).unwrap();
    // Hold the writer thread inside a write until released.
    let (started, wait_started) = std::sync::mpsc::channel();
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    let holding = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write(move |_| {
                    started.send(()).unwrap();
                    wait_release.recv().unwrap();
                    Ok(())
                })
                .await
        }
    });
    tokio::task::spawn_blocking(move || wait_started.recv().unwrap())
        .await
        .unwrap();
    // The writer is busy; one more write fills the queue of one...
    let (queued_ran, wait_queued) = tokio::sync::oneshot::channel();
    store
        .inner
        .writes
        .try_send(Message::Run(Box::new(move |_| {
            let _ = queued_ran.send(());
        })))
        .unwrap();
    // ...and the next is refused without waiting.
    let refused = store
        .append_events(vec![event("ev1", "s1")])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Overloaded { capacity: 1 }),
        "{refused:?}"
    );
    assert!(refused.is_retryable());
    let refused = store
        .put_evaluation_state("e1", &serde_json::json!({}))
        .await;
    assert!(matches!(refused, Err(StoreError::Overloaded { .. })));

    release.send(()).unwrap();
    holding.await.unwrap().unwrap();
    wait_queued.await.unwrap();
    // Drained: writes are accepted again.
    assert!(
        store
            .get_or_create_assignment(&assignment("s1"))
            .await
            .unwrap()
            .1
    );
}

fn schema(conn: &Connection) -> Vec<String> {
    conn.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_new_database_runs_every_migration_and_reopening_runs_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict.db");
    let mut conn = open_connection(&path, 5_000, false).unwrap();
    assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len());
    assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
    let created = schema(&conn);
    drop(conn);

    let mut again = open_connection(&path, 5_000, false).unwrap();
    assert_eq!(migrate(&mut again).unwrap(), 0, "nothing left to apply");
    assert_eq!(user_version(&again), MIGRATIONS.len() as i64);
    assert_eq!(schema(&again), created);
}

#[test]
fn an_older_database_runs_only_the_migrations_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_connection(&dir.path().join("verdict.db"), 5_000, false).unwrap();
    // A database made by a build that knew the first four migrations.
    for (_, sql) in &MIGRATIONS[..4] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 4).unwrap();
    assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() - 4);
    assert_eq!(user_version(&conn), MIGRATIONS.len() as i64);
    let fresh_dir = tempfile::tempdir().unwrap();
    assert_eq!(schema(&conn), schema(&writer_connection(&fresh_dir)));
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_connection(&dir.path().join("verdict.db"), 5_000, false).unwrap();
    conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
        .unwrap();
    let e = migrate(&mut conn).unwrap_err();
    assert!(e.to_string().contains("upgrade Verdict"), "{e}");
}

#[test]
fn every_migration_file_is_applied_in_the_order_of_its_number() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let listed: Vec<String> = MIGRATIONS
        .iter()
        .map(|(name, _)| format!("{name}.sql"))
        .collect();
    assert_eq!(
        listed, files,
        "every file under migrations/ is listed, in order"
    );
    for (i, (name, _)) in MIGRATIONS.iter().enumerate() {
        assert!(
            name.starts_with(&format!("{:04}_", i + 1)),
            "migration {name} is number {}",
            i + 1
        );
    }
}

/// Databases that applied a migration never see a later edit of it, so its text is
/// pinned: a schema change is a new migration (a pin changes only with a comment).
#[test]
fn applied_migrations_are_never_edited() {
    const PINNED: [(&str, u64); 16] = [
        ("0001_core", 0xaa46_8c87_e86e_9caa),
        ("0002_rollups", 0x3e1a_1c10_21f8_1df4),
        ("0003_outbox", 0x2171_bcdf_e975_a1a9),
        ("0004_jobs", 0x876b_b37a_073f_977b),
        ("0005_compact_subject_metrics", 0x8a5e_ad8e_4c51_fd86),
        ("0006_webhooks", 0xa26c_0786_b224_39f0),
        ("0007_events_by_experiment", 0x39cd_c201_484e_444f),
        ("0008_overflowed_totals", 0xb6d0_6525_3ec5_9dc3),
        ("0009_deleted_experiments", 0x9fc2_d6a6_2afc_525a),
        ("0010_assignment_context", 0x9e41_ca1a_dd21_9890),
        ("0011_threshold_states", 0x3047_b102_facb_434c),
        ("0012_subject_segments", 0x9a78_0d70_e54a_ebef),
        ("0013_publications", 0x7229_0b01_f58b_3b43),
        ("0014_events_by_received", 0xad95_1355_235e_bb6a),
        ("0015_evaluation_history", 0x5b5c_c60b_2241_2f4b),
        ("0016_deliveries_by_message", 0xdbc0_5c6c_979c_f79a),
    ];
    let fnv = |text: &str| {
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    assert_eq!(MIGRATIONS.len(), PINNED.len(), "every migration is pinned");
    for ((name, sql), (pinned_name, hash)) in MIGRATIONS.iter().zip(PINNED) {
        assert_eq!(*name, pinned_name);
        assert_eq!(fnv(sql), hash, "migration {name} was edited");
    }
}

/// Counting raw events at query time (attribution windows, exposure events) reads one
/// experiment's events through `events_by_experiment`, never the whole table.
#[test]
fn raw_event_counts_read_only_the_experiments_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir);
    let sql = format!(
        "EXPLAIN QUERY PLAN WITH {STARTS}
         SELECT p.variant, COUNT(*), {sums}
         FROM starts p
         LEFT JOIN ({SUBJECT_FIGURES}) s ON s.subject = p.subject
         GROUP BY p.variant",
        sums = variant_sums(7)
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let plan: Vec<String> = stmt
        .query_map(
            rusqlite::params![
                "e1",
                "purchase",
                None::<i64>,
                None::<i64>,
                "exposure",
                3_600_000,
                None::<f64>
            ],
            |r| r.get::<_, String>(3),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let events: Vec<&String> = plan.iter().filter(|step| step.contains(" e")).collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("events_by_experiment")),
        "{plan:#?}"
    );
    for step in &plan {
        assert!(
            !(step.starts_with("SCAN e") || step == "SCAN events"),
            "a full scan of the events table: {plan:#?}"
        );
    }
    assert!(!events.is_empty(), "{plan:#?}");
}

/// Retention finds expired raw events through `events_by_received`: a run that finds
/// nothing old enough reads nothing, whatever the size of the events table, for each shape
/// of filter (everything, one experiment's own period, everything but such experiments).
#[test]
fn expired_events_are_found_through_the_received_index() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir);
    let before = datetime!(2026-01-01 00:00:00 UTC);
    let filters = [
        crate::jobs::RetentionFilter {
            before,
            only: None,
            except: Vec::new(),
        },
        crate::jobs::RetentionFilter {
            before,
            only: Some("e1".into()),
            except: Vec::new(),
        },
        crate::jobs::RetentionFilter {
            before,
            only: None,
            except: vec!["e1".into(), "e2".into()],
        },
    ];
    for filter in filters {
        let (clause, ids) = jobs::scope_clause(&filter, "+experiment_id");
        let sql = jobs::expired_events_sql(&clause, 1_000);
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&0_i64];
        values.extend(ids.iter().map(|s| s as &dyn rusqlite::ToSql));
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(values.as_slice(), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|s| s.contains("INDEX events_by_received")),
            "{filter:?}: {plan:#?}"
        );
        assert!(
            !plan
                .iter()
                .any(|s| s == "SCAN events" || s.contains("events_by_experiment")),
            "{filter:?} reads more than the expired events: {plan:#?}"
        );
    }
}

/// The steps of SQLite's plan for `sql` with `args`.
fn query_plan(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    stmt.query_map(args, |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One experiment's webhook deliveries are read through `webhook_deliveries_by_message`, a
/// range of its message ids, whatever the size of the table.
#[test]
fn an_experiments_deliveries_are_found_through_the_message_index() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir);
    for (sql, args) in [
        (
            webhooks::EXPERIMENT_DELIVERIES_COUNT.to_owned(),
            vec![&"msg_e1_" as &dyn rusqlite::ToSql, &"msg_e1`"],
        ),
        (
            webhooks::experiment_deliveries_sql(),
            vec![
                &"msg_e1_" as &dyn rusqlite::ToSql,
                &"msg_e1`",
                &20_i64,
                &0_i64,
            ],
        ),
    ] {
        let plan = query_plan(&conn, &sql, &args);
        assert!(
            plan.iter().any(|s| s
                .contains("INDEX webhook_deliveries_by_message (message_id>? AND message_id<?)")),
            "{plan:#?}"
        );
        assert!(
            !plan
                .iter()
                .any(|s| s.starts_with("SCAN webhook_deliveries")),
            "{plan:#?}"
        );
    }
}

/// An experiment's latest evaluations are read through `evaluation_history_by_experiment`
/// in order, and expired ones found through `evaluation_history_by_time`, for each shape of
/// retention filter.
#[test]
fn evaluation_history_is_read_and_expired_through_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir);
    let plan = query_plan(&conn, rollups::LATEST_EVALUATIONS, &[&"e1", &500_i64]);
    assert_eq!(
        plan,
        [
            "SEARCH evaluation_history USING INDEX evaluation_history_by_experiment (experiment_id=?)"
        ],
        "no sort, no scan"
    );
    let before = datetime!(2026-01-01 00:00:00 UTC);
    for (only, except) in [
        (None, Vec::new()),
        (Some("e1".to_owned()), Vec::new()),
        (None, vec!["e1".to_owned(), "e2".to_owned()]),
    ] {
        let filter = crate::jobs::RetentionFilter {
            before,
            only,
            except,
        };
        let (clause, ids) = jobs::scope_clause(&filter, "+experiment_id");
        let sql = jobs::expired_evaluations_sql(&clause, 1_000);
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&0_i64];
        values.extend(ids.iter().map(|s| s as &dyn rusqlite::ToSql));
        let plan = query_plan(&conn, &sql, &values);
        assert!(
            plan.iter()
                .any(|s| s.contains("INDEX evaluation_history_by_time (at<?)")),
            "{filter:?}: {plan:#?}"
        );
        assert!(
            !plan.iter().any(|s| s == "SCAN evaluation_history"),
            "{filter:?}: {plan:#?}"
        );
    }
}

/// Finding overflowed totals reads the partial indexes of migration 0008 (which hold only
/// such rows), never the whole `buckets` or `subject_metrics` table.
#[test]
fn overflowed_totals_are_found_through_their_partial_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir);
    let plan = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(args, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for steps in [
        plan(&rollups::overflowed_experiments_sql(), &[]),
        plan(&rollups::experiment_overflowed_sql(), &[&"e1", &1_i64]),
    ] {
        for index in ["buckets_overflowed", "subject_metrics_overflowed"] {
            assert!(
                steps.iter().any(|s| s.contains(index)),
                "{index}: {steps:#?}"
            );
        }
        assert!(
            !steps
                .iter()
                .any(|s| s == "SCAN buckets" || s == "SCAN subject_metrics"),
            "a full scan: {steps:#?}"
        );
    }
}

#[tokio::test]
async fn a_lookup_by_key_is_answered_while_every_scan_reader_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("verdict.db"), 5_000).unwrap();
    // Every scan reader held inside a read (a long results scan, say) until released.
    let (started, wait_started) = std::sync::mpsc::channel();
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    let wait_release = Arc::new(Mutex::new(wait_release));
    let scans: Vec<_> = (0..SCAN_READERS)
        .map(|_| {
            let (store, started, wait_release) =
                (store.clone(), started.clone(), wait_release.clone());
            tokio::spawn(async move {
                store
                    .read(move |_| {
                        started.send(()).unwrap();
                        let _ = wait_release.lock().unwrap().recv();
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for _ in 0..SCAN_READERS {
            wait_started.recv().unwrap();
        }
    })
    .await
    .unwrap();

    // Lookups by key still answer: they never wait for a scan reader (the bound only
    // keeps a regression from hanging the test run).
    let lookups = async {
        store.rollup_watermark().await.unwrap();
        store.get_evaluation_state("e1").await.unwrap();
        store.get_assignment("e1", "s1").await.unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), lookups)
        .await
        .expect("a lookup by key waited for a busy scan reader");

    drop(release);
    for scan in scans {
        scan.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn the_wal_is_copied_into_the_database_file_soon_after_writes_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict.db");
    let store = SqliteStore::open(&path, 5_000).unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    assert!(
        store
            .get_or_create_assignment(&assignment("s1"))
            .await
            .unwrap()
            .1
    );
    let batch = (0..2_000)
        .map(|i| NewEvent {
            meta: Some(serde_json::json!({"note": "x".repeat(200)})),
            ..event(&format!("ev{i}"), "s1")
        })
        .collect();
    store.append_events(batch).await.unwrap();
    // Commits write only the WAL; the checkpointer copies it into the database file
    // (which then grows by the new pages) without another write to prompt it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while size() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL was not copied into the database file ({} bytes)",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
