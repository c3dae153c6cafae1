//! The contract every [`Cache`](crate::Cache) implementation must pass, written once.
//!
//! Each public `async fn` here is one test taking fresh [`TestCaches`]. An implementation's
//! test file instantiates all of them with
//! [`cache_contract_suite!`](crate::cache_contract_suite), giving it an
//! `async fn() -> TestCaches` factory.

use std::any::Any;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use super::snapshot;
use crate::{Change, DynCache};

/// The caches of one test.
pub struct TestCaches {
    /// Two replicas sharing one cache: for Redis, two clients on one key prefix; in-process,
    /// two handles on the same cache. Empty at the start.
    pub a: DynCache,
    pub b: DynCache,
    /// A cache of the same kind that must share nothing with `a` and `b` (another key prefix,
    /// another process).
    pub other: DynCache,
    /// Whatever keeps the backing service alive or cleans up after the test.
    pub guard: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for TestCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCaches")
            .field("a", &self.a)
            .field("b", &self.b)
            .field("other", &self.other)
            .finish()
    }
}

/// Instantiate every contract test for an implementation. `$factory` is an
/// `async fn() -> TestCaches`. The calling crate needs `tokio` with `macros` and
/// `rt-multi-thread`.
#[macro_export]
macro_rules! cache_contract_suite {
    ($factory:path) => {
        $crate::cache_contract_suite!(@tests $factory;
            ping_succeeds,
            a_key_never_written_is_a_miss,
            a_stored_snapshot_reads_back_identical_from_every_replica,
            an_older_put_never_replaces_a_newer_snapshot,
            a_newer_put_replaces_and_an_equal_version_overwrites,
            invalidate_removes_the_snapshot_and_forgets_its_version,
            keys_are_isolated_across_environments_and_experiments,
            concurrent_puts_keep_the_highest_version,
            a_published_change_reaches_every_subscriber_of_every_replica_once,
            a_cache_with_another_prefix_sees_neither_snapshots_nor_changes,
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let caches = $factory().await;
                $crate::test_support::contract::$name(&caches).await;
                drop(caches);
            }
        )*
    };
}

/// How long a subscriber may wait for a change that must arrive.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(5);
/// How long to watch for a change that must NOT arrive.
const SILENCE: Duration = Duration::from_millis(300);

async fn next_change(rx: &mut broadcast::Receiver<Change>, who: &str) -> Change {
    match tokio::time::timeout(ARRIVAL_LIMIT, rx.recv()).await {
        Ok(Ok(change)) => change,
        Ok(Err(e)) => panic!("{who}: subscription failed: {e}"),
        Err(_) => panic!("{who}: no change within {ARRIVAL_LIMIT:?}"),
    }
}

async fn assert_silent(rx: &mut broadcast::Receiver<Change>, who: &str) {
    tokio::time::sleep(SILENCE).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("{who}: expected no further change, got {other:?}"),
    }
}

pub async fn ping_succeeds(c: &TestCaches) {
    c.a.ping().await.expect("ping a");
    c.b.ping().await.expect("ping b");
    assert!(["memory", "redis"].contains(&c.a.backend()));
}

pub async fn a_key_never_written_is_a_miss(c: &TestCaches) {
    assert_eq!(c.a.get_snapshot("production", "exp-1").await.unwrap(), None);
}

pub async fn a_stored_snapshot_reads_back_identical_from_every_replica(c: &TestCaches) {
    let s = snapshot("production", "exp-1", 3);
    c.a.put_snapshot(&s).await.unwrap();
    assert_eq!(
        c.a.get_snapshot("production", "exp-1").await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        c.b.get_snapshot("production", "exp-1").await.unwrap(),
        Some(s)
    );
}

pub async fn an_older_put_never_replaces_a_newer_snapshot(c: &TestCaches) {
    let newer = snapshot("production", "exp-1", 5);
    let mut older = snapshot("production", "exp-1", 4);
    older.winner = Some("control".into());
    c.a.put_snapshot(&newer).await.unwrap();
    c.b.put_snapshot(&older).await.unwrap();
    assert_eq!(
        c.a.get_snapshot("production", "exp-1").await.unwrap(),
        Some(newer)
    );
}

pub async fn a_newer_put_replaces_and_an_equal_version_overwrites(c: &TestCaches) {
    c.a.put_snapshot(&snapshot("production", "exp-1", 1))
        .await
        .unwrap();
    let newer = snapshot("production", "exp-1", 2);
    c.b.put_snapshot(&newer).await.unwrap();
    assert_eq!(
        c.a.get_snapshot("production", "exp-1").await.unwrap(),
        Some(newer)
    );

    let mut same_version = snapshot("production", "exp-1", 2);
    same_version.winner = None;
    same_version.details = serde_json::json!({"note": "rewritten at the same version"});
    c.a.put_snapshot(&same_version).await.unwrap();
    assert_eq!(
        c.b.get_snapshot("production", "exp-1").await.unwrap(),
        Some(same_version)
    );
}

pub async fn invalidate_removes_the_snapshot_and_forgets_its_version(c: &TestCaches) {
    c.a.invalidate("production", "never-written")
        .await
        .expect("invalidating a missing key is fine");

    c.a.put_snapshot(&snapshot("production", "exp-1", 7))
        .await
        .unwrap();
    c.b.invalidate("production", "exp-1").await.unwrap();
    assert_eq!(c.a.get_snapshot("production", "exp-1").await.unwrap(), None);

    let older = snapshot("production", "exp-1", 2);
    c.a.put_snapshot(&older).await.unwrap();
    assert_eq!(
        c.a.get_snapshot("production", "exp-1").await.unwrap(),
        Some(older),
        "after invalidation any version is accepted"
    );
}

pub async fn keys_are_isolated_across_environments_and_experiments(c: &TestCaches) {
    let prod1 = snapshot("production", "exp-1", 1);
    let prod2 = snapshot("production", "exp-2", 9);
    let stag1 = snapshot("staging", "exp-1", 4);
    for s in [&prod1, &prod2, &stag1] {
        c.a.put_snapshot(s).await.unwrap();
    }
    assert_eq!(
        c.a.get_snapshot("production", "exp-1").await.unwrap(),
        Some(prod1.clone())
    );
    assert_eq!(
        c.a.get_snapshot("production", "exp-2").await.unwrap(),
        Some(prod2.clone())
    );
    assert_eq!(
        c.a.get_snapshot("staging", "exp-1").await.unwrap(),
        Some(stag1)
    );
    assert_eq!(c.a.get_snapshot("staging", "exp-2").await.unwrap(), None);

    // A lower version in another environment is not compared with this one.
    c.a.invalidate("staging", "exp-1").await.unwrap();
    assert_eq!(c.a.get_snapshot("staging", "exp-1").await.unwrap(), None);
    assert_eq!(
        c.a.get_snapshot("production", "exp-1").await.unwrap(),
        Some(prod1)
    );
    assert_eq!(
        c.b.get_snapshot("production", "exp-2").await.unwrap(),
        Some(prod2)
    );
}

pub async fn concurrent_puts_keep_the_highest_version(c: &TestCaches) {
    // Interleave high and low versions from both replicas at once.
    let mut versions: Vec<u64> = (1..=40).collect();
    versions.sort_by_key(|v| (v * 7919) % 41);
    let mut tasks = Vec::new();
    for (i, version) in versions.into_iter().enumerate() {
        let cache = if i % 2 == 0 { c.a.clone() } else { c.b.clone() };
        tasks.push(tokio::spawn(async move {
            cache
                .put_snapshot(&snapshot("production", "exp-race", version))
                .await
        }));
    }
    for task in tasks {
        task.await.expect("put task").expect("put");
    }
    let held =
        c.a.get_snapshot("production", "exp-race")
            .await
            .unwrap()
            .expect("a snapshot");
    assert_eq!(held.version, 40);
}

pub async fn a_published_change_reaches_every_subscriber_of_every_replica_once(c: &TestCaches) {
    let mut a1 = c.a.subscribe();
    let mut a2 = c.a.subscribe();
    let mut b1 = c.b.subscribe();

    let winner = Change::Winner {
        snapshot: snapshot("production", "exp-1", 3),
    };
    c.a.publish(&winner).await.unwrap();
    for (rx, who) in [(&mut a1, "a1"), (&mut a2, "a2"), (&mut b1, "b1")] {
        assert_eq!(next_change(rx, who).await, winner, "{who}");
    }

    let status = Change::Status {
        snapshot: snapshot("staging", "exp-2", 8),
    };
    c.b.publish(&status).await.unwrap();
    for (rx, who) in [(&mut a1, "a1"), (&mut a2, "a2"), (&mut b1, "b1")] {
        assert_eq!(next_change(rx, who).await, status, "{who}");
        assert_eq!(rx.len(), 0, "{who}: nothing delivered twice");
    }
    for (rx, who) in [(&mut a1, "a1"), (&mut a2, "a2"), (&mut b1, "b1")] {
        assert_silent(rx, who).await;
    }
}

pub async fn a_cache_with_another_prefix_sees_neither_snapshots_nor_changes(c: &TestCaches) {
    c.a.put_snapshot(&snapshot("production", "exp-1", 1))
        .await
        .unwrap();
    assert_eq!(
        c.other.get_snapshot("production", "exp-1").await.unwrap(),
        None
    );
    c.other
        .invalidate("production", "exp-1")
        .await
        .expect("invalidate elsewhere");
    assert!(
        c.a.get_snapshot("production", "exp-1")
            .await
            .unwrap()
            .is_some(),
        "an invalidation under another prefix left this one alone"
    );

    let mut mine = c.b.subscribe();
    let mut theirs = c.other.subscribe();
    let change = Change::Winner {
        snapshot: snapshot("production", "exp-1", 1),
    };
    c.a.publish(&change).await.unwrap();
    // The change did go out (so the silence below means something).
    assert_eq!(next_change(&mut mine, "b").await, change);
    assert_silent(&mut theirs, "other").await;
}
