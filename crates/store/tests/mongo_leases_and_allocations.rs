//! MongoDB: fencing in the same atomic write as the fenced change, and event-seq
//! allocations of writers that died.
//!
//! Needs `VERDICT_TEST_MONGODB_URI`, like `mongo_contract.rs`.

use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc};
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_domain::{Assignment, NewEvent};
use verdict_store::{
    AssignmentStore, EventStore, JobStore, Lease, LeaseGrant, MongoStore, RetentionFilter,
    RollupStore, StoreError,
};

const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

async fn store() -> MongoStore {
    let uri = std::env::var("VERDICT_TEST_MONGODB_URI")
        .expect("VERDICT_TEST_MONGODB_URI must name a MongoDB server");
    let name = format!("verdict_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&uri, &name).await.unwrap();
    store
        .get_or_create_assignment(&Assignment {
            experiment_id: "e1".into(),
            subject: "s1".into(),
            variant: "control".into(),
            assigned_at: T0,
            context: None,
        })
        .await
        .unwrap();
    store
}

/// `n` conversions of s1 in e1 with ids `{prefix}{i}`.
async fn append(store: &MongoStore, prefix: &str, n: i64) {
    let events = (0..n)
        .map(|i| NewEvent {
            experiment_id: "e1".into(),
            event_id: format!("{prefix}{i}"),
            subject: "s1".into(),
            variant: None,
            event: "conversion".into(),
            value: 1.0,
            ts: T0 + time::Duration::seconds(i),
            received_at: T0 + time::Duration::seconds(i),
            meta: None,
        })
        .collect();
    store.append_events(events).await.unwrap();
}

async fn lease(store: &MongoStore, job: &str, owner: &str, at_s: i64) -> Lease {
    let now = T0 + time::Duration::seconds(at_s);
    match store
        .acquire_lease(job, owner, Duration::from_secs(10), now, None)
        .await
        .unwrap()
    {
        LeaseGrant::Acquired(l) => l,
        other => panic!("{owner} not granted {job}: {other:?}"),
    }
}

async fn rolled_up_events(store: &MongoStore) -> u64 {
    store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap()
        .iter()
        .map(|c| c.events)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_rollup_step_that_passed_its_lease_check_changes_nothing() {
    let store = store().await;
    append(&store, "a", 4).await;
    let stale = lease(&store, "aggregate", "a", 0).await;
    // a stalls past its lease; b takes over and folds a first step.
    let fresh = lease(&store, "aggregate", "b", 11).await;
    let step = store.rollup_fenced(2, Some(&fresh.fence())).await.unwrap();
    assert_eq!((step.events, step.watermark), (2, 2));

    // a wakes up with its look at the lease already behind it: the step's own writes
    // carry the fence, so nothing changes.
    let late = store
        .rollup_step_after_lease_check(10, &stale.fence())
        .await;
    assert!(
        matches!(late, Err(StoreError::Fenced { ref job, token }) if job == "aggregate" && token == stale.token),
        "{late:?}"
    );
    assert_eq!(store.rollup_watermark().await.unwrap(), 2);
    assert_eq!(rolled_up_events(&store).await, 2);

    // The holder goes on, and every event is counted once.
    let step = store.rollup_fenced(10, Some(&fresh.fence())).await.unwrap();
    assert_eq!((step.events, step.watermark), (2, 4));
    assert_eq!(rolled_up_events(&store).await, 4);
    store.database().drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_deletes_check_the_lease_in_their_own_transaction() {
    let store = store().await;
    assert!(
        store.runs_transactions(),
        "the test server presents itself as a replica set: fenced deletes run in transactions"
    );
    append(&store, "a", 3).await;
    store.rollup(10).await.unwrap();
    let stale = lease(&store, "retention", "a", 0).await;
    let fresh = lease(&store, "retention", "b", 11).await;
    let all = RetentionFilter {
        before: T0 + time::Duration::days(100),
        only: None,
        except: Vec::new(),
    };
    for late in [
        store.delete_events(&all, 100, Some(&stale.fence())).await,
        store.delete_buckets(&all, 100, Some(&stale.fence())).await,
    ] {
        assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
    }
    assert_eq!(store.scan_events(0, 100).await.unwrap().len(), 3);
    assert_eq!(
        store
            .delete_events(&all, 100, Some(&fresh.fence()))
            .await
            .unwrap(),
        3
    );
    store.database().drop().await.unwrap();
}

/// The `counters` document of event seqs.
async fn counter(store: &MongoStore) -> Document {
    store
        .database()
        .collection::<Document>("counters")
        .find_one(doc! {"_id": "events"})
        .await
        .unwrap()
        .expect("the event counter exists")
}

/// Allocate `n` seqs as a writer `token` would, with its entry renewed at `at`, and never
/// insert them (the writer died, or is still inserting).
async fn allocate_without_inserting(store: &MongoStore, token: &str, n: i64, at: DateTime) {
    let seq = counter(store).await.get_i64("seq").unwrap();
    store
        .database()
        .collection::<Document>("counters")
        .update_one(
            doc! {"_id": "events"},
            doc! {
                "$set": {"seq": seq + n},
                "$push": {"pending": {"token": token, "start": seq + 1, "at": at}},
            },
        )
        .await
        .unwrap();
}

fn pending_tokens(counter: &Document) -> Vec<String> {
    counter
        .get_array("pending")
        .map(|a| {
            a.iter()
                .map(|p| {
                    p.as_document()
                        .unwrap()
                        .get_str("token")
                        .unwrap()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_allocation_is_reclaimed_and_holds_results_back_only_seconds() {
    let store = store().await;
    append(&store, "a", 3).await; // seqs 1..=3

    // A replica killed mid-insert 10 s ago left seqs 4..=8 pending: past the lease, its
    // entry neither holds readers back nor survives the next allocation.
    let ten_seconds_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 10_000);
    allocate_without_inserting(&store, "dead", 5, ten_seconds_ago).await;
    append(&store, "b", 3).await; // seqs 9..=11
    assert_eq!(
        pending_tokens(&counter(&store).await),
        Vec::<String>::new(),
        "the dead writer's entry was reclaimed by the allocation"
    );
    let step = store.rollup(100).await.unwrap();
    assert_eq!((step.events, step.watermark), (6, 11));

    // A writer still within its lease (renewed just now) holds readers back below its seqs.
    allocate_without_inserting(&store, "slow", 2, DateTime::now()).await; // 12..=13
    append(&store, "c", 2).await; // 14..=15
    assert_eq!(pending_tokens(&counter(&store).await), ["slow"]);
    let step = store.rollup(100).await.unwrap();
    assert_eq!(step.events, 0, "nothing past the live allocation");
    assert!(store.scan_events(11, 100).await.unwrap().is_empty());
    // Once it stops renewing, the lease (5 s) runs out and readers go on.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let step = store.rollup(100).await.unwrap();
    assert_eq!((step.events, step.watermark), (2, 15));
    assert_eq!(rolled_up_events(&store).await, 8);
    store.database().drop().await.unwrap();
}
