//! The store contract suite against MongoDB, one database per test.
//!
//! Needs `VERDICT_TEST_MONGODB_URI` (e.g. from `scripts/test-services.sh`, which starts a
//! wire-compatible test server); without it these tests fail loudly instead of skipping.

use std::sync::Arc;

use verdict_store::MongoStore;
use verdict_store::contract::TestStore;

/// Drops the test's database when the test ends.
struct DropDatabase(mongodb::Database);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let db = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // Tests run on a multi-thread runtime, where blocking in place is allowed.
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(async { db.drop().await });
            });
        }
    }
}

fn uri() -> String {
    std::env::var("VERDICT_TEST_MONGODB_URI").unwrap_or_else(|_| {
        panic!(
            "VERDICT_TEST_MONGODB_URI is not set: the MongoDB contract tests need a server. \
             Run `source scripts/test-services.sh` (starts a test server and exports it), or \
             point it at a MongoDB, e.g. mongodb://127.0.0.1:27017/?directConnection=true"
        )
    })
}

async fn mongo() -> TestStore {
    let name = format!("verdict_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&uri(), &name)
        .await
        .expect("connect to VERDICT_TEST_MONGODB_URI");
    let guard = DropDatabase(store.database().clone());
    TestStore {
        store: Arc::new(store),
        guard: Box::new(guard),
    }
}

verdict_store::store_contract_suite!(mongo);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_twice_keeps_data_and_indexes() {
    use verdict_store::{AssignmentStore, Store};
    let test = mongo().await;
    let name = test.store.backend();
    assert_eq!(name, "mongodb");
    let a = verdict_domain::Assignment {
        experiment_id: "e".into(),
        subject: "s".into(),
        variant: "v".into(),
        assigned_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    test.store.get_or_create_assignment(&a).await.unwrap();
    let db = test
        .guard
        .downcast_ref::<DropDatabase>()
        .unwrap()
        .0
        .name()
        .to_owned();
    // Index creation is idempotent: connecting again to the same database works.
    let again = MongoStore::connect(&uri(), &db).await.unwrap();
    assert!(again.get_assignment("e", "s").await.unwrap().is_some());
    again.ping().await.unwrap();
}

/// The rollup's crash recovery: a range recorded as pending is folded again without
/// counting anything twice, and an in-flight seq allocation holds watermarks back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rollup_resumes_without_counting_twice() {
    use mongodb::bson::{DateTime, doc};
    use verdict_store::{Granularity, TimeRange};
    let test = mongo().await;
    let store = test.store.clone();
    let db = test.guard.downcast_ref::<DropDatabase>().unwrap().0.clone();
    let t0 = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let event = |id: &str, s: i64| verdict_domain::NewEvent {
        experiment_id: "e1".into(),
        event_id: id.into(),
        subject: "s1".into(),
        variant: None,
        event: "conversion".into(),
        value: 2.0,
        ts: t0 + time::Duration::seconds(s),
        received_at: t0 + time::Duration::seconds(s),
        meta: None,
    };
    store
        .get_or_create_assignment(&verdict_domain::Assignment {
            experiment_id: "e1".into(),
            subject: "s1".into(),
            variant: "control".into(),
            assigned_at: t0,
        })
        .await
        .unwrap();
    store
        .append_events((0..5).map(|i| event(&format!("a{i}"), i * 1000)).collect())
        .await
        .unwrap();
    let first = store.rollup(1000).await.unwrap();
    assert_eq!(first.events, 5);
    let counts = store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap();
    let hours = store
        .buckets("e1", "conversion", Granularity::Hour, TimeRange::default())
        .await
        .unwrap();

    // A crash after the merges, before the watermark moved: the range is still pending.
    db.collection::<mongodb::bson::Document>("rollup_state")
        .update_one(
            doc! {"_id": "events"},
            doc! {"$set": {"seq": 0_i64, "pending_to": first.watermark as i64}},
        )
        .await
        .unwrap();
    let resumed = store.rollup(1000).await.unwrap();
    assert_eq!((resumed.events, resumed.watermark), (5, first.watermark));
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
        counts,
        "the resumed range is not counted twice"
    );
    assert_eq!(
        store
            .buckets("e1", "conversion", Granularity::Hour, TimeRange::default())
            .await
            .unwrap(),
        hours
    );
    assert_eq!(counts[0].events, 5);

    // An allocation still in flight below new events holds scans and rollups back.
    db.collection::<mongodb::bson::Document>("counters")
        .update_one(
            doc! {"_id": "events"},
            doc! {
                "$push": {"pending": {
                    "token": "in-flight",
                    "start": first.watermark as i64 + 1,
                    "at": DateTime::now(),
                }},
                "$inc": {"seq": 3_i64},
            },
        )
        .await
        .unwrap();
    store
        .append_events(vec![event("b1", 10), event("b2", 20)])
        .await
        .unwrap();
    assert!(
        store
            .scan_events(first.watermark, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.rollup(1000).await.unwrap().events, 0);
    db.collection::<mongodb::bson::Document>("counters")
        .update_one(
            doc! {"_id": "events"},
            doc! {"$pull": {"pending": {"token": "in-flight"}}},
        )
        .await
        .unwrap();
    assert_eq!(
        store.scan_events(first.watermark, 100).await.unwrap().len(),
        2
    );
    assert_eq!(store.rollup(1000).await.unwrap().events, 2);
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap()[0]
            .events,
        7
    );
}

/// Reads are strict: a document missing a required field, or holding it with the wrong
/// type, is reported as corrupt data naming the collection and the field, never read as 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_missing_a_required_field_is_an_error_not_zero() {
    use mongodb::bson::{DateTime, Document, doc};
    use verdict_store::{Granularity, StoreError, TimeRange};
    let test = mongo().await;
    let store = test.store.clone();
    let db = test.guard.downcast_ref::<DropDatabase>().unwrap().0.clone();
    let at = DateTime::from_millis(1_767_225_600_000);
    let corrupt = |e: StoreError, collection: &str, field: &str| {
        let message = e.to_string();
        assert!(matches!(e, StoreError::Internal { .. }), "{e:?}");
        assert!(
            message.contains(&format!("`{collection}`")) && message.contains(&format!("`{field}`")),
            "{message}"
        );
    };

    // An event without its value.
    db.collection::<Document>("events")
        .insert_one(doc! {
            "_id": 1_i64, "seq": 1_i64, "experiment_id": "e1", "event_id": "a", "subject": "s1",
            "variant": "control", "event": "conversion", "ts": at, "received_at": at,
            "assigned_at": at,
        })
        .await
        .unwrap();
    db.collection::<Document>("counters")
        .insert_one(doc! {"_id": "events", "seq": 1_i64})
        .await
        .unwrap();
    corrupt(
        store.scan_events(0, 10).await.unwrap_err(),
        "events",
        "value",
    );

    // A bucket whose count is text.
    db.collection::<Document>("buckets")
        .insert_one(doc! {
            "experiment_id": "e1", "event": "conversion", "granularity": "hour", "start": at,
            "variant": "control", "count": "three", "sum": 1.0, "sum_sq": 1.0,
        })
        .await
        .unwrap();
    corrupt(
        store
            .buckets("e1", "conversion", Granularity::Hour, TimeRange::default())
            .await
            .unwrap_err(),
        "buckets",
        "count",
    );

    // A watermark document without its seq.
    db.collection::<Document>("rollup_state")
        .insert_one(doc! {"_id": "events"})
        .await
        .unwrap();
    corrupt(
        store.rollup_watermark().await.unwrap_err(),
        "rollup_state",
        "seq",
    );

    // A lease without its fencing token: never taken for token 0.
    db.collection::<Document>("leases")
        .insert_one(doc! {"_id": "aggregate", "owner": "w1", "expires_at": at})
        .await
        .unwrap();
    corrupt(
        store.get_lease("aggregate").await.unwrap_err(),
        "leases",
        "token",
    );
}
