//! Two dispatcher instances on one store, each with its own store handle (as two replicas
//! would have), running rounds at the same time: every message reaches the receiver exactly
//! once. On SQLite and on MongoDB (`VERDICT_TEST_MONGODB_URI`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{activate, config, endpoint, now, secs};
use verdict_store::{DynStore, MongoStore, SqliteStore};
use verdict_webhooks::Dispatcher;
use verdict_webhooks::test_support::Receiver;

const MESSAGES: usize = 60;

async fn two_dispatchers_deliver_each_message_once(first: DynStore, second: DynStore) {
    let receiver = Receiver::start().await;
    endpoint(&first, "ep_a", &receiver.url("/a"), &[]).await;
    endpoint(&first, "ep_b", &receiver.url("/b"), &[]).await;
    let t0 = now();
    for i in 0..MESSAGES {
        activate(&first, &format!("e{i:03}"), t0 + secs(i as i64)).await;
    }
    let mut cfg = config();
    // Small batches so that the work takes many rounds.
    cfg.batch_size = 7;
    let a = Dispatcher::new(first, cfg.clone()).expect("client");
    let b = Dispatcher::new(second, cfg).expect("client");
    // The two instances' rounds run at the same time, round after round (each on its own
    // store handle, so the store sees two concurrent claimants). Round one is sure to give
    // both work: each fans out 7 messages (14 deliveries) before claiming 7, so the second
    // claimant finds at least 7 left whichever claims first. Leaving each instance to its own
    // loop instead lets one monopolise SQLite's write lock until the other gives up idle.
    let now = t0 + secs(MESSAGES as i64);
    let (mut claimed_a, mut claimed_b, mut idle) = (0, 0, 0);
    while idle < 3 {
        let (ra, rb) = tokio::join!(a.run_once(now), b.run_once(now));
        let (ra, rb) = (ra.expect("round a"), rb.expect("round b"));
        claimed_a += ra.claimed;
        claimed_b += rb.claimed;
        idle = if ra.is_idle() && rb.is_idle() {
            idle + 1
        } else {
            0
        };
    }
    let (a, b) = (claimed_a, claimed_b);
    let expected = 2 * MESSAGES;
    assert_eq!(a + b, expected as u64, "claimed {a} + {b}");
    assert!(a > 0 && b > 0, "both instances worked: {a} and {b}");
    let mut per_id: HashMap<(String, String), usize> = HashMap::new();
    for r in receiver.requests() {
        *per_id
            .entry((r.path.clone(), r.webhook_id().to_owned()))
            .or_default() += 1;
    }
    assert_eq!(receiver.count(), expected);
    assert_eq!(per_id.len(), expected);
    assert!(per_id.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_on_one_sqlite_file_deliver_each_message_once() {
    let t = common::sqlite().await;
    let path = t.path.clone().expect("sqlite path");
    let other: DynStore = Arc::new(SqliteStore::open(&path, 5_000).expect("second handle"));
    two_dispatchers_deliver_each_message_once(t.store.clone(), other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_on_one_mongodb_database_deliver_each_message_once() {
    let t = common::mongo().await;
    let mongo = t.store.clone();
    let database = t.database.clone().expect("database name");
    let other: DynStore = Arc::new(
        MongoStore::connect(&common::mongo_uri(), &database)
            .await
            .expect("second connection"),
    );
    two_dispatchers_deliver_each_message_once(mongo, other).await;
}
