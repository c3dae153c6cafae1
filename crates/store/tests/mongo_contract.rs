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
        context: None,
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
            context: None,
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

/// Overflowed totals are found however the server stored them (±infinity, NaN, a subject
/// total whose square overflows), and a repair interrupted midway (its marker left behind,
/// one document back to its old figures) is listed again and finished by the next, after a
/// rollup added to its documents meanwhile, without counting anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowed_totals_of_every_kind_are_listed_and_an_interrupted_repair_is_finished() {
    use mongodb::bson::{DateTime, Document, doc};
    use verdict_store::{RepairOutcome, VariantCounts};
    let test = mongo().await;
    let store = test.store.clone();
    let db = test.guard.downcast_ref::<DropDatabase>().unwrap().0.clone();
    let t0 = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let event = |id: &str, subject: &str, s: i64, value: f64| verdict_domain::NewEvent {
        experiment_id: "e1".into(),
        event_id: id.into(),
        subject: subject.into(),
        variant: None,
        event: "conversion".into(),
        value,
        ts: t0 + time::Duration::seconds(s),
        received_at: t0 + time::Duration::seconds(s),
        meta: None,
    };
    for s in ["s1", "s2"] {
        store
            .get_or_create_assignment(&verdict_domain::Assignment {
                experiment_id: "e1".into(),
                subject: s.into(),
                variant: "control".into(),
                assigned_at: t0,
                context: None,
            })
            .await
            .unwrap();
    }
    store
        .append_events(vec![
            event("a", "s1", 10, 2.0),
            event("b", "s1", 20, 3e200),
            event("c", "s2", 30, 4.0),
        ])
        .await
        .unwrap();
    store.rollup(1_000).await.unwrap();

    // Stored by other means: a NaN Σ², a -infinite Σ, a NaN total, a total whose square
    // overflows, and a repair marked as under way.
    let at = DateTime::from_millis(1_767_225_600_000);
    let bucket = |e: &str, sum: f64, sum_sq: f64| {
        doc! {
            "experiment_id": e, "event": "conversion", "granularity": "hour", "start": at,
            "variant": "control", "count": 1_i64, "sum": sum, "sum_sq": sum_sq, "applied": 1_i64,
        }
    };
    let subject = |e: &str, total: f64| {
        doc! {
            "experiment_id": e, "event": "conversion", "subject": "s1", "variant": "control",
            "n": 1_i64, "total": total, "first_ts": at, "applied": 1_i64,
        }
    };
    db.collection::<Document>("buckets")
        .insert_many([
            bucket("nan-sq", 1.0, f64::NAN),
            bucket("minus-inf", f64::NEG_INFINITY, 1.0),
            bucket("fine", 1e150, 1e300),
        ])
        .await
        .unwrap();
    db.collection::<Document>("subject_metrics")
        .insert_many([
            subject("nan-total", f64::NAN),
            subject("big-total", -2e154),
            subject("fine", 1e150),
        ])
        .await
        .unwrap();
    db.collection::<Document>("rollup_state")
        .insert_one(doc! {"_id": "repair:marked", "repair": "marked", "watermark": 0_i64})
        .await
        .unwrap();
    assert_eq!(
        store.experiments_with_overflowed_totals().await.unwrap(),
        [
            "big-total",
            "e1",
            "marked",
            "minus-inf",
            "nan-sq",
            "nan-total"
        ]
    );

    // A full repair, then as if it had been interrupted before its end: the marker back,
    // s1's document back to its old figures, and a rollup adding 1 to s1 meanwhile.
    let subjects = db.collection::<Document>("subject_metrics");
    let s1 = doc! {"experiment_id": "e1", "subject": "s1"};
    let old = subjects.find_one(s1.clone()).await.unwrap().unwrap();
    assert_eq!(
        store.repair_totals("e1", 1e12, None).await.unwrap(),
        RepairOutcome::Repaired { dropped_events: 1 }
    );
    subjects.replace_one(s1.clone(), old).await.unwrap();
    db.collection::<Document>("rollup_state")
        .insert_one(doc! {"_id": "repair:e1", "repair": "e1", "watermark": 0_i64})
        .await
        .unwrap();
    store
        .append_events(vec![event("d", "s1", 40, 1.0)])
        .await
        .unwrap();
    assert_eq!(store.rollup(1_000).await.unwrap().events, 1);
    assert!(
        store
            .experiments_with_overflowed_totals()
            .await
            .unwrap()
            .contains(&"e1".to_owned())
    );
    assert_eq!(
        store.repair_totals("e1", 1e12, None).await.unwrap(),
        RepairOutcome::Repaired { dropped_events: 1 }
    );
    // s1: 2 + 1 (n = 2), s2: 4.
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
        [VariantCounts {
            variant: "control".into(),
            subjects: 2,
            converted_subjects: 2,
            events: 3,
            sum: 7.0,
            sum_of_squares: 25.0,
            sum_events_squared: 5,
            sum_events_value: 10.0,
        }]
    );
    let hours = store
        .buckets(
            "e1",
            "conversion",
            verdict_store::Granularity::Hour,
            verdict_store::TimeRange::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        hours
            .iter()
            .map(|b| (b.count, b.sum, b.sum_of_squares))
            .collect::<Vec<_>>(),
        [(3, 7.0, 21.0)]
    );
    assert!(
        !store
            .experiments_with_overflowed_totals()
            .await
            .unwrap()
            .contains(&"e1".to_owned())
    );
    assert_eq!(
        store.repair_totals("e1", 1e12, None).await.unwrap(),
        RepairOutcome::Nothing
    );
}
