//! Several `verdict worker` processes on one store: each scheduled tick runs once, a killed
//! lease holder's job is taken over after its lease expires, and a stalled holder that wakes
//! up after losing its lease has its writes refused by the fencing token.
//!
//! Real processes sharing one SQLite file, and for the stalled holder one MongoDB database
//! (a process frozen inside a SQLite write transaction would hold the file's write lock and
//! stop everyone: with SQLite, run one worker per file).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use verdict_domain::{Assignment, NewEvent};
use verdict_store::{DynStore, PageRequest, RunOutcome, RunRecord, SqliteStore};

/// Where the workers of a test keep their data.
enum Backend<'a> {
    Sqlite(&'a Path),
    Mongodb { uri: &'a str, database: &'a str },
}

fn worker(backend: &Backend<'_>, lease_seconds: u64, schedule: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VERDICT_") {
            cmd.env_remove(k);
        }
    }
    match backend {
        Backend::Sqlite(dir) => {
            cmd.env("VERDICT_DATA_DIR", dir);
        }
        Backend::Mongodb { uri, database } => {
            cmd.env("VERDICT_STORE", "mongodb")
                .env("VERDICT_MONGODB__URI", uri)
                .env("VERDICT_MONGODB__DATABASE", database)
                .env("VERDICT_DATA_DIR", std::env::temp_dir());
        }
    }
    cmd.arg("worker")
        .env("VERDICT_LOG__LEVEL", "warn")
        .env("VERDICT_JOBS__AGGREGATE_SCHEDULE", schedule)
        .env("VERDICT_JOBS__EVALUATE_SCHEDULE", schedule)
        .env("VERDICT_JOBS__RETENTION_SCHEDULE", schedule)
        .env("VERDICT_JOBS__LIFECYCLE_SCHEDULE", schedule)
        .env("VERDICT_JOBS__LEASE_SECONDS", lease_seconds.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdict worker starts")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn stop(mut child: Child) {
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "a worker exits 0 on SIGTERM: {status:?}");
}

fn open(dir: &Path) -> DynStore {
    Arc::new(SqliteStore::open(dir.join("verdict.db"), 10_000).expect("the shared store opens"))
}

async fn runs(store: &DynStore, job: &str) -> Vec<RunRecord> {
    let mut all = Vec::new();
    let mut page = PageRequest {
        page: 1,
        page_size: 100,
    };
    loop {
        let found = store.list_runs(Some(job), page).await.unwrap();
        let done = found.items.len() < 100;
        all.extend(found.items);
        if done {
            return all;
        }
        page.page += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_each_tick_of_each_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Create the schema before two processes race to.
    drop(open(dir.path()));
    let backend = Backend::Sqlite(dir.path());
    let a = worker(&backend, 5, "* * * * * *");
    let b = worker(&backend, 5, "* * * * * *");
    // Until every job has run at least 4 ticks (polled, not a fixed sleep: start-up and
    // runs take longer on a loaded machine).
    let store = open(dir.path());
    let jobs = ["aggregate", "evaluate", "retention", "lifecycle"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut least = usize::MAX;
        for job in jobs {
            let ran = runs(&store, job)
                .await
                .iter()
                .filter(|r| r.outcome == RunOutcome::Succeeded)
                .count();
            least = least.min(ran);
        }
        if least >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 4 runs of a job in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop(a);
    stop(b);

    for job in jobs {
        let runs = runs(&store, job).await;
        let mut per_tick: BTreeMap<OffsetDateTime, Vec<&RunRecord>> = BTreeMap::new();
        for r in &runs {
            let tick = r.tick.expect("scheduled runs name their tick");
            per_tick.entry(tick).or_default().push(r);
        }
        // Each tick runs at most once, whichever worker runs it. (A tick may also not run
        // at all: a worker skips a tick while its own run of the previous one is still going,
        // and the other then finds the lease held.)
        let mut once = 0;
        for (tick, runs) in &per_tick {
            let ran: Vec<_> = runs
                .iter()
                .filter(|r| r.outcome != RunOutcome::SkippedLeaseHeld)
                .collect();
            assert!(
                ran.len() <= 1,
                "{job} at {tick} ran {} times: {runs:?}",
                ran.len()
            );
            if let Some(r) = ran.first() {
                assert_eq!(r.outcome, RunOutcome::Succeeded, "{r:?}");
                once += 1;
            }
        }
        assert!(once >= 4, "{job}: only {once} ticks ran");
        let owners: std::collections::BTreeSet<_> = runs.iter().map(|r| &r.owner).collect();
        assert!(owners.len() <= 2);
    }
    // The continuous webhook delivery job: runs never overlap, whoever ran them.
    let mut webhooks: Vec<_> = runs(&store, "webhooks")
        .await
        .into_iter()
        .filter(|r| r.outcome != RunOutcome::SkippedLeaseHeld)
        .collect();
    assert!(!webhooks.is_empty(), "the webhooks job ran");
    webhooks.sort_by_key(|r| r.started_at);
    for pair in webhooks.windows(2) {
        let ended = pair[0]
            .finished_at
            .expect("stopped workers finish their runs");
        assert!(ended <= pair[1].started_at, "overlapping runs: {pair:?}");
    }
    assert!(
        webhooks.iter().all(|r| r.outcome == RunOutcome::Succeeded),
        "{webhooks:?}"
    );
}

/// A backlog big enough that aggregating it takes a while, so a worker can be caught
/// holding the `aggregate` lease mid-run.
async fn backlog(store: &DynStore, n: usize) {
    let now = OffsetDateTime::now_utc();
    let subjects = 2_000;
    for s in 0..subjects {
        store
            .get_or_create_assignment(&Assignment {
                experiment_id: "exp".into(),
                subject: format!("s{s}"),
                variant: if s % 2 == 0 { "a" } else { "b" }.into(),
                assigned_at: now - time::Duration::hours(1),
                context: None,
            })
            .await
            .unwrap();
    }
    for chunk in 0..n / 1_000 {
        let batch = (0..1_000)
            .map(|i| {
                let k = chunk * 1_000 + i;
                NewEvent {
                    experiment_id: "exp".into(),
                    event_id: format!("e{k}"),
                    subject: format!("s{}", k % subjects),
                    variant: None,
                    event: "conversion".into(),
                    value: 1.0,
                    ts: now,
                    received_at: now,
                    meta: None,
                }
            })
            .collect();
        store.append_events(batch).await.unwrap();
    }
}

/// Wait until a worker holds `job`'s unexpired lease and has a run in progress; its owner.
async fn holder_mid_run(store: &DynStore, job: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(lease) = store.get_lease(job).await.unwrap() {
            let running = runs(store, job)
                .await
                .into_iter()
                .any(|r| r.owner == lease.owner && r.outcome == RunOutcome::Running);
            if lease.expires_at > OffsetDateTime::now_utc() && running {
                return lease.owner;
            }
        }
        assert!(Instant::now() < deadline, "no worker was caught mid-run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process id inside an owner name (`host-pid-xxxx`).
fn pid_of(owner: &str) -> u32 {
    owner.rsplit('-').nth(1).unwrap().parse().unwrap()
}

async fn wait_caught_up(store: &DynStore, events: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while store.rollup_watermark().await.unwrap() < events {
        assert!(
            Instant::now() < deadline,
            "the backlog was not aggregated in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_counted_once(store: &DynStore, events: u64) {
    let counts = store
        .rolled_up_counts("exp", "conversion", None)
        .await
        .unwrap();
    let total: u64 = counts.iter().map(|c| c.events).sum();
    assert_eq!(
        total, events,
        "every event counted exactly once: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_after_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    const EVENTS: u64 = 200_000;
    backlog(&store, EVENTS as usize).await;
    let backend = Backend::Sqlite(dir.path());
    let mut a = worker(&backend, 2, "* * * * * *");
    let b = worker(&backend, 2, "* * * * * *");
    let holder = holder_mid_run(&store, "aggregate", Duration::from_secs(30)).await;
    let (victim, survivor) = if pid_of(&holder) == a.id() {
        (a, b)
    } else {
        (b, a)
    };
    a = victim;
    signal(&a, "-KILL");
    let _ = a.wait();

    wait_caught_up(&store, EVENTS, Duration::from_secs(90)).await;
    stop(survivor);
    assert_counted_once(&store, EVENTS).await;
    let runs = runs(&store, "aggregate").await;
    let taken_over = runs
        .iter()
        .find(|r| {
            r.owner != holder
                && r.outcome == RunOutcome::Succeeded
                && r.report["events"].as_u64() > Some(0)
        })
        .expect("the survivor aggregated the rest");
    let killed = runs
        .iter()
        .find(|r| r.owner == holder && r.fencing_token < taken_over.fencing_token);
    let killed = killed.expect("the killed holder's run is on record");
    assert_eq!(
        killed.outcome,
        RunOutcome::Failed,
        "the successor marks the dead holder's run abandoned: {killed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holder_that_wakes_after_losing_its_lease_is_fenced_off() {
    let uri = std::env::var("VERDICT_TEST_MONGODB_URI")
        .expect("VERDICT_TEST_MONGODB_URI must name a MongoDB server (scripts/test.sh starts one)");
    let database = format!("verdict_workers_{}", std::process::id());
    let mongo = verdict_store::MongoStore::connect(&uri, &database)
        .await
        .expect("MongoDB answers");
    let store: DynStore = Arc::new(mongo.clone());
    const EVENTS: u64 = 60_000;
    backlog(&store, EVENTS as usize).await;
    let backend = Backend::Mongodb {
        uri: &uri,
        database: &database,
    };
    let a = worker(&backend, 2, "* * * * * *");
    let b = worker(&backend, 2, "* * * * * *");
    let holder = holder_mid_run(&store, "aggregate", Duration::from_secs(30)).await;
    let (stalled, other) = if pid_of(&holder) == a.id() {
        (a, b)
    } else {
        (b, a)
    };
    let stalled_token = store.get_lease("aggregate").await.unwrap().unwrap().token;
    // Stall it (as a long GC pause or a frozen VM would) past its lease.
    signal(&stalled, "-STOP");
    wait_caught_up(&store, EVENTS, Duration::from_secs(90)).await;
    signal(&stalled, "-CONT");

    // Awake, its run must not write on: the store refuses its stale token.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stale_run = loop {
        let stale = runs(&store, "aggregate")
            .await
            .into_iter()
            .find(|r| r.owner == holder && r.fencing_token == Some(stalled_token));
        if let Some(r) = stale.filter(|r| r.outcome != RunOutcome::Running) {
            break r;
        }
        assert!(Instant::now() < deadline, "the stalled run never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop(stalled);
    stop(other);
    assert_eq!(stale_run.outcome, RunOutcome::Failed, "{stale_run:?}");
    let error = stale_run.error.clone().unwrap_or_default();
    assert!(
        error.contains("lease") || error.contains("abandoned"),
        "failed for losing its lease: {error}"
    );
    assert_counted_once(&store, EVENTS).await;
    mongo.database().drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_starts_and_completes_an_experiment_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = OffsetDateTime::now_utc();
    let (start_at, ends_at) = (now + Duration::from_secs(2), now + Duration::from_secs(4));
    let input: verdict_domain::ExperimentInput = serde_json::from_value(serde_json::json!({
        "key": "scheduled",
        "variants": [{"key": "a"}, {"key": "b"}],
        "start_at": start_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "ends_at": ends_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
    }))
    .unwrap();
    let experiment = input
        .into_experiment(
            verdict_domain::Scope::default(),
            verdict_domain::experiment::Provided {
                id: "exp_scheduled".into(),
                salt: "salt".into(),
                now,
            },
        )
        .unwrap();
    store.create_experiment(&experiment, "test").await.unwrap();
    // The lifecycle job every second (the default is every minute).
    let w = worker(&Backend::Sqlite(dir.path()), 5, "* * * * * *");
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let e = store
            .get_experiment(&verdict_domain::Scope::default(), "scheduled")
            .await
            .unwrap()
            .unwrap();
        if e.status == verdict_domain::Status::Completed {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "not completed 60 s after its start: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop(w);
    let (started, completed) = (done.started_at.unwrap(), done.completed_at.unwrap());
    // Started and completed by ticks at or after the scheduled times (within the test's
    // deadline: a tick every second on a loaded machine).
    assert!(started >= start_at - Duration::from_secs(1), "{done:?}");
    assert!(completed >= ends_at - Duration::from_secs(1), "{done:?}");
    assert!(completed > started, "{done:?}");
    let audit = store
        .list_audit(
            &done.id,
            PageRequest {
                page: 1,
                page_size: 10,
            },
        )
        .await
        .unwrap();
    let by_scheduler = audit
        .items
        .iter()
        .filter(|e| e.action == "status_changed" && e.actor == "scheduler")
        .count();
    assert_eq!(by_scheduler, 2, "{:?}", audit.items);
}
