//! Shared fixtures of the dispatcher tests: a fresh store per test (SQLite file, or a fresh
//! MongoDB database on `VERDICT_TEST_MONGODB_URI`), endpoints, messages made by real status
//! changes, and verification with the reference `standardwebhooks` implementation.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use verdict_domain::experiment::Provided;
use verdict_domain::{EventType, ExperimentInput, Scope, Status};
use verdict_store::{DynStore, Endpoint, MongoStore, SqliteStore, StatusChange};
use verdict_webhooks::test_support::Received;
use verdict_webhooks::{DispatcherConfig, RetrySchedule, Secret};

/// A store and what keeps its database alive.
pub struct TestStore {
    pub store: DynStore,
    pub path: Option<std::path::PathBuf>,
    /// The MongoDB database's name.
    pub database: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<DropDatabase>,
}

struct DropDatabase(mongodb::Database);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let db = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(async { db.drop().await });
            });
        }
    }
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("verdict.db");
    let store = SqliteStore::open(&path, 5_000).expect("open sqlite");
    TestStore {
        store: Arc::new(store),
        path: Some(path),
        database: None,
        _dir: Some(dir),
        _db: None,
    }
}

pub fn mongo_uri() -> String {
    std::env::var("VERDICT_TEST_MONGODB_URI").unwrap_or_else(|_| {
        panic!(
            "VERDICT_TEST_MONGODB_URI is not set: the MongoDB dispatcher tests need a server \
             (scripts/test-services.sh starts one)"
        )
    })
}

pub async fn mongo() -> TestStore {
    let name = format!("verdict_wh_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&mongo_uri(), &name)
        .await
        .expect("connect to VERDICT_TEST_MONGODB_URI");
    let db = DropDatabase(store.database().clone());
    TestStore {
        store: Arc::new(store),
        path: None,
        database: Some(name),
        _dir: None,
        _db: Some(db),
    }
}

/// Test settings: loopback allowed, the default schedule, a 30 s lease.
pub fn config() -> DispatcherConfig {
    DispatcherConfig {
        allow_private_targets: true,
        request_timeout: Duration::from_secs(5),
        schedule: RetrySchedule::default(),
        disable_after: Duration::from_secs(5 * 24 * 3600),
        lease: Duration::from_secs(30),
        batch_size: 100,
        idle_sleep: Duration::from_millis(10),
    }
}

/// A fresh `whsec_` secret.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    Secret::generate(&bytes).expect("32 bytes").expose()
}

/// Register an endpoint in `production` for `url`; returns it (with its secret).
pub async fn endpoint(store: &DynStore, id: &str, url: &str, types: &[EventType]) -> Endpoint {
    let now = OffsetDateTime::now_utc();
    let e = Endpoint {
        id: id.into(),
        environment: "production".into(),
        url: url.into(),
        description: String::new(),
        event_types: types.to_vec(),
        disabled: false,
        disabled_reason: None,
        disabled_at: None,
        secret: new_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    store.create_endpoint(&e).await.expect("create endpoint");
    e
}

/// Create experiment `id` in `production` and activate it at `at`: the store writes one
/// `experiment.status_changed` message (`msg_<id>_v2_status`) with the change.
pub async fn activate(store: &DynStore, id: &str, at: OffsetDateTime) -> String {
    let input: ExperimentInput = serde_json::from_value(json!({
        "key": format!("exp-{id}"),
        "variants": [{"key": "control"}, {"key": "treatment"}]
    }))
    .expect("fixture parses");
    let experiment = input
        .into_experiment(
            Scope::default(),
            Provided {
                id: id.into(),
                salt: "salt".into(),
                now: at,
            },
        )
        .expect("valid fixture");
    store
        .create_experiment(&experiment, "test")
        .await
        .expect("create experiment");
    store
        .transition_status(&StatusChange {
            experiment_id: id.into(),
            from: Status::Draft,
            to: Status::Running,
            at,
            actor: "test".into(),
        })
        .await
        .expect("transition")
        .expect("activated");
    format!("msg_{id}_v2_status")
}

/// Verify a received request with the reference implementation and `secret`.
pub fn verify(received: &Received, secret: &str) -> Result<(), String> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &received.headers {
        headers.insert(name.clone(), value.clone());
    }
    standardwebhooks::Webhook::new(secret)
        .map_err(|e| format!("reference rejects the secret: {e:?}"))?
        .verify(&received.body, &headers)
        .map_err(|e| format!("{e:?}"))
}

/// Now, at the millisecond precision the stores keep.
pub fn now() -> OffsetDateTime {
    verdict_store::model::truncate_to_millis(OffsetDateTime::now_utc())
}

pub fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}
