//! The runner on a real SQLite store: records, leases, renewal, lease loss, overlap,
//! shutdown, and errors with their causes. Time is Tokio's paused clock ([`Clock::tokio`]):
//! leases expire without waiting, and time moves only when a test advances it. A paused
//! runtime also advances time by itself whenever every task waits, which it would do while
//! the store's own threads work; [`busy`] keeps the test's task runnable while it waits, so
//! time moves only at the test's `advance` calls.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use verdict_jobs::{
    Clock, Job, JobError, Registry, RunContext, Runner, RunnerConfig, Schedule, Start,
};
use verdict_metrics::Metrics;
use verdict_store::{JobStore, LeaseGrant, RunOutcome, SqliteStore, StoreError, Trigger};

const LEASE: Duration = Duration::from_secs(60);

/// Await `f` without letting the paused clock run ahead (see the module docs). Gives up
/// (fails the test) rather than spin forever when `f` cannot finish without time passing.
async fn busy<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    for _ in 0..5_000_000 {
        tokio::select! {
            biased;
            out = &mut f => return out,
            () = tokio::task::yield_now() => {}
        }
    }
    panic!("still waiting after five million turns: it needs time to pass");
}

/// Let the tasks that can run register their timers, move the paused clock by `d`, firing
/// the timers due, and let what they wake run.
async fn advance(d: Duration) {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(d).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// What a test job does when run.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Sleep (Tokio time), then report how long.
    Sleep(Duration),
    /// Never finish on its own; end when told to stop.
    UntilStopped,
    /// Fail with a store error that has a cause.
    StoreFailure,
}

#[derive(Debug, Clone)]
struct TestJob(Behaviour);

#[derive(Debug, Serialize)]
struct Slept {
    seconds: u64,
}

#[async_trait]
impl Job for TestJob {
    type Report = Slept;

    fn name(&self) -> &'static str {
        "test"
    }

    fn schedule(&self) -> Schedule {
        Schedule::Cron("0 * * * * *".into())
    }

    async fn run(&self, ctx: RunContext) -> Result<Slept, JobError> {
        match &self.0 {
            Behaviour::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(Slept {
                    seconds: d.as_secs(),
                })
            }
            Behaviour::UntilStopped => {
                ctx.stop.cancelled().await;
                Ok(Slept { seconds: 0 })
            }
            Behaviour::StoreFailure => {
                let cause = std::io::Error::other("disk I/O error");
                Err(StoreError::internal("rolling up buckets", cause).into())
            }
        }
    }
}

struct Fixture {
    store: Arc<dyn JobStore>,
    clock: Clock,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("jobs.db"), 5_000).unwrap();
        Self {
            store: Arc::new(store),
            clock: Clock::tokio(),
            _dir: dir,
        }
    }

    fn runner(&self, owner: &str, behaviour: Behaviour) -> Runner {
        Runner::with_clock(
            self.store.clone(),
            Registry::new().with(TestJob(behaviour)),
            RunnerConfig {
                owner: owner.into(),
                lease: LEASE,
                scheduled: false,
            },
            Metrics::new(),
            CancellationToken::new(),
            self.clock,
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_is_recorded_with_its_report_and_releases_its_lease() {
    let f = Fixture::new();
    let runner = f.runner("a", Behaviour::Sleep(Duration::from_secs(5)));
    let Start::Started { done, .. } = busy(runner.start("test", Trigger::Cli, None, None))
        .await
        .unwrap()
    else {
        panic!("starts");
    };
    advance(Duration::from_secs(5)).await;
    let run = busy(done).await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_eq!(run.report["seconds"], 5);
    assert_eq!(run.owner, "a");
    let stored = busy(f.store.get_run(&run.id)).await.unwrap().unwrap();
    assert_eq!(stored, run);
    // Released: another owner gets it at once.
    let grant = busy(
        f.store
            .acquire_lease("test", "b", LEASE, f.clock.now(), None),
    )
    .await
    .unwrap();
    assert!(matches!(grant, LeaseGrant::Acquired(_)), "{grant:?}");
}

#[tokio::test(start_paused = true)]
async fn a_long_run_keeps_its_lease_by_renewing_it() {
    let f = Fixture::new();
    let a = f.runner("a", Behaviour::Sleep(LEASE * 3));
    let b = f.runner("b", Behaviour::Sleep(Duration::ZERO));
    let Start::Started { done, .. } = busy(a.start("test", Trigger::Cli, None, None))
        .await
        .unwrap()
    else {
        panic!("a starts");
    };
    // Six renewal periods: two whole leases. Each renewal pushes the expiry a lease ahead.
    for period in 1..=6 {
        advance(LEASE / 3).await;
        let want = f.clock.now() + LEASE;
        // The renewal is a write on the store's writer thread, which takes real time (more
        // on a loaded machine); the paused clock does not move meanwhile, so waiting on the
        // wall clock here cannot let the lease lapse. A lease read answers at once, so each
        // look yields: the run's task must get to take the writer's answer.
        let patience = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = None;
        while std::time::Instant::now() < patience {
            let lease = busy(f.store.get_lease("test")).await.unwrap().unwrap();
            assert_eq!(lease.owner, "a");
            if lease.expires_at >= want - Duration::from_millis(1) {
                seen = None;
                break;
            }
            seen = Some(lease.expires_at);
            tokio::task::yield_now().await;
        }
        assert_eq!(
            seen, None,
            "renewal {period} not seen within 30 s: the lease expires at {seen:?}, not {want}"
        );
    }
    // Without the renewals a's lease would have lapsed a lease ago.
    match busy(b.start("test", Trigger::Cli, None, None))
        .await
        .unwrap()
    {
        Start::Held { holder, run, .. } => {
            assert_eq!(holder, "a");
            assert_eq!(run.outcome, RunOutcome::SkippedLeaseHeld);
        }
        other => panic!("b should find the lease held: {other:?}"),
    }
    advance(LEASE).await;
    let finished = busy(done).await.unwrap();
    assert_eq!(finished.outcome, RunOutcome::Succeeded, "{finished:?}");
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_was_taken_over_is_stopped_and_recorded_as_failed() {
    let f = Fixture::new();
    let a = f.runner("a", Behaviour::UntilStopped);
    let Start::Started { run, done } = busy(a.start("test", Trigger::Cli, None, None))
        .await
        .unwrap()
    else {
        panic!("a starts");
    };
    // Another process takes the job over as if a's lease had expired (a was frozen).
    let later = f.clock.now() + LEASE * 2;
    let grant = busy(f.store.acquire_lease("test", "b", LEASE * 10, later, None))
        .await
        .unwrap();
    let LeaseGrant::Acquired(taken) = grant else {
        panic!("b takes the lease: {grant:?}");
    };
    assert!(taken.token > run.fencing_token.unwrap());
    // a's next renewal finds the lease gone and stops the run.
    advance(LEASE / 3).await;
    let finished = busy(done).await.unwrap();
    assert_eq!(finished.outcome, RunOutcome::Failed);
    let error = finished.error.unwrap();
    assert!(error.contains("lost the lease of test"), "{error}");
    let stored = busy(f.store.get_run(&run.id)).await.unwrap().unwrap();
    assert_eq!(stored.outcome, RunOutcome::Failed);
    // The lease taken over is b's, untouched by a's end.
    let lease = busy(f.store.get_lease("test")).await.unwrap().unwrap();
    assert_eq!((lease.owner.as_str(), lease.token), ("b", taken.token));
}

#[tokio::test(start_paused = true)]
async fn a_store_error_in_a_job_lands_in_its_run_record_with_its_cause() {
    let f = Fixture::new();
    let runner = f.runner("a", Behaviour::StoreFailure);
    let run = busy(runner.run("test", Trigger::Http, None, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert_eq!(
        run.error.as_deref(),
        Some("store failure while rolling up buckets: disk I/O error")
    );
    let stored = busy(f.store.get_run(&run.id)).await.unwrap().unwrap();
    assert_eq!(stored.error, run.error);
}

#[tokio::test(start_paused = true)]
async fn overlapping_triggers_run_the_job_once() {
    let f = Fixture::new();
    let a = f.runner("a", Behaviour::Sleep(Duration::from_secs(30)));
    let first = busy(a.start("test", Trigger::Http, None, None))
        .await
        .unwrap();
    let second = busy(a.start("test", Trigger::Http, None, None))
        .await
        .unwrap();
    let Start::Started { done, .. } = first else {
        panic!("the first trigger runs");
    };
    assert!(matches!(second, Start::Held { .. }), "{second:?}");
    advance(Duration::from_secs(30)).await;
    assert_eq!(busy(done).await.unwrap().outcome, RunOutcome::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_running_job_and_refuses_new_runs() {
    let f = Fixture::new();
    let runner = f.runner("a", Behaviour::UntilStopped);
    let Start::Started { done, .. } = busy(runner.start("test", Trigger::Cli, None, None))
        .await
        .unwrap()
    else {
        panic!("starts");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    assert!(
        busy(runner.shutdown(deadline)).await,
        "the run ends within the grace"
    );
    assert_eq!(busy(done).await.unwrap().outcome, RunOutcome::Succeeded);
    let refused = busy(runner.start("test", Trigger::Cli, None, None)).await;
    assert!(
        matches!(refused, Err(verdict_jobs::StartError::ShuttingDown)),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_job_is_refused_with_the_list_of_jobs() {
    let f = Fixture::new();
    let runner = f.runner("a", Behaviour::Sleep(Duration::ZERO));
    let err = busy(runner.start("nope", Trigger::Cli, None, None))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no job 'nope'; jobs are test");
    let narrowed = busy(runner.start("test", Trigger::Cli, None, Some("checkout".into())))
        .await
        .unwrap_err();
    assert!(
        narrowed.to_string().contains("cannot be narrowed"),
        "{narrowed}"
    );
}
