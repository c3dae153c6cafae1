//! Test harness: a real server on a free port over a fresh store, driven with reqwest.
//!
//! The backend is a parameter, as in svix's `run-tests.sh`: `VERDICT_TEST_BACKEND=sqlite`
//! (default; a fresh SQLite file per test, in-process cache) or `mongodb` (a fresh database
//! per test on the server `VERDICT_TEST_MONGODB_URI` names, and `cache = "redis"` on the Redis
//! of the test run with a fresh key prefix per test; `scripts/test.sh` starts both). The same
//! tests run against both.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::{CancellationToken, DropGuard};
use verdict_api::Application;
use verdict_app::App;
use verdict_cache::test_support::TestRedis;
use verdict_cache::{DynCache, MemoryCache, RedisCache};
use verdict_config::{CacheKind, ExposeSecret, Settings, StoreKind};
use verdict_store::{DynStore, MongoStore, SqliteStore};

pub mod webhooks;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// A running server and a client to talk to it.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub admin_key: String,
    /// The store the server uses (tests drive the jobs with it, as the scheduler would).
    pub store: DynStore,
    /// The cache the server uses.
    pub cache: DynCache,
    /// The application the server serves (tests call its use-cases and its job runner).
    pub app: App,
    /// Cancels the server's shutdown signal when the test ends.
    pub _stop: DropGuard,
    pub _redis: Option<TestRedis>,
    pub _dir: TempDir,
}

/// The backend the API tests run against: `VERDICT_TEST_BACKEND` (`sqlite` or `mongodb`).
pub fn backend() -> String {
    std::env::var("VERDICT_TEST_BACKEND").unwrap_or_else(|_| "sqlite".to_owned())
}

/// Settings selecting the test backend, each test with its own database, and the Redis
/// they use (kept alive as long as the test's app).
fn backend_env() -> (Vec<(String, String)>, Option<TestRedis>) {
    match backend().as_str() {
        "sqlite" => (Vec::new(), None),
        "mongodb" => {
            let uri = std::env::var("VERDICT_TEST_MONGODB_URI").expect(
                "VERDICT_TEST_BACKEND=mongodb needs VERDICT_TEST_MONGODB_URI (scripts/test.sh starts a server)",
            );
            let database = format!("verdict_api_{}", uuid::Uuid::new_v4().simple());
            let redis = verdict_cache::test_support::test_redis();
            let env = vec![
                ("VERDICT_STORE".into(), "mongodb".into()),
                ("VERDICT_MONGODB__URI".into(), uri),
                ("VERDICT_MONGODB__DATABASE".into(), database),
                ("VERDICT_CACHE".into(), "redis".into()),
                ("VERDICT_REDIS__URL".into(), redis.url().to_owned()),
                (
                    "VERDICT_REDIS__KEY_PREFIX".into(),
                    verdict_cache::test_support::random_prefix(),
                ),
            ];
            (env, Some(redis))
        }
        other => panic!("unknown VERDICT_TEST_BACKEND '{other}' (sqlite | mongodb)"),
    }
}

/// The store `settings` select, fresh for this test.
async fn open_store(settings: &Settings) -> DynStore {
    match settings.store {
        StoreKind::Sqlite => Arc::new(
            SqliteStore::open(settings.sqlite_path(), settings.sqlite.busy_timeout_ms)
                .expect("test SQLite store opens"),
        ),
        StoreKind::Mongodb => Arc::new(
            MongoStore::connect_with_timeout(
                settings.mongodb.uri.expose_secret(),
                &settings.mongodb.database,
                Some(settings.mongodb.connect_timeout()),
            )
            .await
            .expect("test MongoDB store connects"),
        ),
    }
}

/// Start a server with the default settings (plus the bootstrap admin key).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Start a server with extra `VERDICT_*` settings, e.g. a small body limit or rate limit.
pub async fn spawn_app_with(extra_env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env: Vec<(String, String)> = vec![
        ("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY".into(), ADMIN_KEY.into()),
        (
            "VERDICT_DATA_DIR".into(),
            dir.path().to_string_lossy().into_owned(),
        ),
    ];
    let (backend_settings, redis) = backend_env();
    env.extend(backend_settings);
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut settings = Settings::load_from(None, env).expect("test settings are valid");
    // Validation forbids port 0; tests bypass it to get a free port.
    settings.server.port = 0;
    let store = open_store(&settings).await;
    let cache: DynCache = match settings.cache {
        CacheKind::Memory => Arc::new(MemoryCache::new()),
        CacheKind::Redis => Arc::new(
            RedisCache::connect(
                settings.redis.url.expose_secret(),
                &settings.redis.key_prefix,
            )
            .expect("test cache"),
        ),
    };
    let stop = CancellationToken::new();
    let app = App::new(
        store.clone(),
        cache.clone(),
        Arc::new(settings),
        stop.clone(),
    )
    .await
    .expect("application builds");
    let server = Application::build(app.clone()).await.expect("server binds");
    let addr = server.local_addr().expect("bound address");
    tokio::spawn(server.run_until_stopped());
    TestApp {
        addr,
        // Idle connections are dropped before the server closes them (an idle keep-alive
        // connection gets `server.header_read_timeout_seconds`, 10 s, to send its next
        // request), so that a request never goes out on one the server is closing.
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("test HTTP client"),
        admin_key: ADMIN_KEY.to_owned(),
        store,
        cache,
        app,
        _stop: stop.drop_guard(),
        _redis: redis,
        _dir: dir,
    }
}

/// Status and JSON body (`Value::Null` when the body is empty or not JSON).
pub async fn parts(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).bearer_auth(key).json(body))
            .await
    }

    pub async fn put_json(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.put(self.url(path)).bearer_auth(key).json(body))
            .await
    }

    pub async fn patch_json(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .patch(self.url(path))
                .bearer_auth(key)
                .json(body),
        )
        .await
    }

    /// POST a raw body with the given content type (`None`: no content-type header).
    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).bearer_auth(key);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(req.body(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)).bearer_auth(key))
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path)).bearer_auth(key))
            .await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        parts(req.send().await.expect("request reaches the server")).await
    }

    /// Create an API key in `production` with `roles`; returns `(plaintext, id)`.
    pub async fn create_key_with_id(&self, roles: &[&str]) -> (String, String) {
        let (status, body) = self
            .post_json(
                "/v1/api-keys",
                &self.admin_key,
                &json!({"name": format!("test {}", roles.join("+")), "roles": roles}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create key: {body}");
        (
            body["key"].as_str().expect("plaintext key").to_owned(),
            body["id"].as_str().expect("key id").to_owned(),
        )
    }

    /// Create an API key in `production` with `roles`; returns the plaintext.
    pub async fn create_key(&self, roles: &[&str]) -> String {
        self.create_key_with_id(roles).await.0
    }

    /// Create an experiment as the admin; asserts 201 and returns the body.
    pub async fn create_experiment(&self, body: &Value) -> Value {
        let (status, created) = self
            .post_json("/v1/experiments", &self.admin_key, body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "create experiment: {created}");
        created
    }

    /// Activate an experiment as the admin: `(status, body)`.
    pub async fn activate(&self, key: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/v1/experiments/{key}/activate"),
            &self.admin_key,
            &json!({}),
        )
        .await
    }

    /// Move an experiment to `status` as the admin.
    pub async fn set_status(&self, key: &str, status: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/v1/experiments/{key}/status"),
            &self.admin_key,
            &json!({ "status": status }),
        )
        .await
    }

    /// `GET …/assignment?subject_id=…` plus extra query pairs.
    pub async fn assignment(
        &self,
        experiment: &str,
        key: &str,
        subject: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut query: Vec<(&str, &str)> = vec![("subject_id", subject)];
        query.extend_from_slice(extra);
        self.send(
            self.client
                .get(self.url(&format!("/v1/experiments/{experiment}/assignment")))
                .query(&query)
                .bearer_auth(key),
        )
        .await
    }

    pub async fn post_events(&self, key: &str, events: Vec<Value>) -> (StatusCode, Value) {
        self.post_json("/v1/events", key, &json!({ "events": events }))
            .await
    }

    /// Run the aggregation job to completion, as the scheduler does every minute.
    pub async fn aggregate(&self) {
        verdict_aggregator::jobs::aggregate(&*self.store, verdict_aggregator::jobs::DEFAULT_STEP)
            .await
            .expect("aggregation runs");
    }

    /// Aggregate, then `GET …/results` as the admin; asserts 200.
    pub async fn results(&self, experiment: &str) -> Value {
        self.aggregate().await;
        let (status, body) = self
            .get(
                &format!("/v1/experiments/{experiment}/results"),
                &self.admin_key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "results: {body}");
        body
    }

    /// How many experiments the admin's environment holds.
    pub async fn experiment_count(&self) -> u64 {
        let (status, body) = self.get("/v1/experiments", &self.admin_key).await;
        assert_eq!(status, StatusCode::OK, "list: {body}");
        body["pagination"]["total"].as_u64().expect("total")
    }
}

/// A two-variant 50/50 experiment body with configs and a fixed salt.
pub fn ab_experiment(key: &str) -> Value {
    json!({
        "key": key,
        "name": format!("Experiment {key}"),
        "variants": [
            {"key": "control", "weight": 0.5, "config": {"color": "blue", "size": 1}},
            {"key": "treatment", "weight": 0.5, "config": {"color": "green", "size": 2}}
        ],
        "assignment": {"salt": "fixed-test-salt"},
        "primary_metric": {"event": "purchase", "kind": "binomial"}
    })
}

/// The code of an error body, asserting its shape.
pub fn error_code(body: &Value) -> &str {
    let error = &body["error"];
    assert!(
        error["message"].is_string(),
        "error without message: {body}"
    );
    assert!(error["details"].is_array(), "error without details: {body}");
    error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// The `field` of each problem an error body lists, in order.
pub fn problem_fields(body: &Value) -> Vec<&str> {
    body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {body}"))
        .iter()
        .map(|d| d["field"].as_str().expect("a problem names its field"))
        .collect()
}

/// The first metric's block of a results body: the primary metric's, or the one `?metric=`
/// named.
pub fn first_metric(results: &Value) -> &Value {
    &results["metrics"][0]
}

/// The per-variant row of the first metric of a results body (see [`first_metric`]).
pub fn variant_row<'a>(results: &'a Value, variant: &str) -> &'a Value {
    first_metric(results)["variants"]
        .as_array()
        .expect("variants array")
        .iter()
        .find(|r| r["variant"] == variant)
        .unwrap_or_else(|| panic!("no row for {variant} in {results}"))
}
