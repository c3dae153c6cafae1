//! The whole loop on the embedded store: subjects through the real HTTP API, aggregation,
//! evaluation, decision; and an SRM-inducing split that blocks the decision.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use time::OffsetDateTime;
use verdict_cache::{DynCache, MemoryCache};
use verdict_store::{DynStore, PageRequest, SqliteStore};

const ADMIN: &str = "e2e-admin-key-0123456789";

struct App {
    base: String,
    client: reqwest::Client,
    store: DynStore,
    /// The cache the API and the evaluator share, as in `verdict serve`.
    cache: DynCache,
    _dir: tempfile::TempDir,
}

async fn spawn() -> App {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN),
        ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "0"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut settings = verdict_config::Settings::load_from(None, env).unwrap();
    settings.server.port = 0;
    let store: DynStore = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let cache: DynCache = Arc::new(MemoryCache::new());
    // The server runs until the test's runtime ends (its shutdown signal is never cancelled).
    let stop = tokio_util::sync::CancellationToken::new();
    let app = verdict_app::App::new(store.clone(), cache.clone(), Arc::new(settings), stop)
        .await
        .unwrap();
    let server = verdict_api::Application::build(app).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(server.run_until_stopped());
    App {
        base,
        client: reqwest::Client::new(),
        store,
        cache,
        _dir: dir,
    }
}

impl App {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }
}

/// Simulate `per_arm_target * 2` subjects: assign through the API, convert with the true
/// rate of the served variant, send the conversions as events, and every `look` subjects
/// run aggregation and evaluation like the scheduler would. Returns the experiment after.
async fn simulate(
    app: &App,
    key: &str,
    rates: [f64; 2],
    served: impl Fn(&str) -> bool,
    subjects: usize,
    look: usize,
) -> Value {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut events = Vec::new();
    for i in 0..subjects {
        let subject = format!("{key}-user-{i}");
        if served(&subject) {
            let a = app
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/experiments/{key}/assignment?subject_id={subject}"),
                    None,
                )
                .await;
            if a["in_experiment"] == true {
                let rate = if a["variant"] == "control" {
                    rates[0]
                } else {
                    rates[1]
                };
                if rng.random::<f64>() < rate {
                    events.push(json!({"experiment": key, "subject_id": subject, "event": "conversion", "event_id": format!("c-{subject}")}));
                }
            }
        }
        if (events.len() >= 500 || (i + 1) % look == 0 || i + 1 == subjects) && !events.is_empty() {
            let report = app
                .call(
                    reqwest::Method::POST,
                    "/v1/events",
                    Some(json!({"events": std::mem::take(&mut events)})),
                )
                .await;
            assert_eq!(report["rejected"], 0, "{report}");
        }
        if (i + 1) % look == 0 {
            verdict_aggregator::jobs::aggregate(&*app.store, 10_000)
                .await
                .unwrap();
            verdict_aggregator::evaluate::evaluate(
                &app.store,
                &app.cache,
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        }
    }
    app.call(
        reqwest::Method::GET,
        &format!("/v1/experiments/{key}"),
        None,
    )
    .await
}

async fn create(app: &App, key: &str) {
    app.call(
        reqwest::Method::POST,
        "/v1/experiments",
        Some(json!({
            "key": key,
            "assignment": {"salt": format!("salt-{key}")},
            "variants": [
                {"key": "control", "config": {"button": "blue"}},
                {"key": "treatment", "config": {"button": "green"}}
            ]
        })),
    )
    .await;
    app.call(
        reqwest::Method::POST,
        &format!("/v1/experiments/{key}/activate"),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_better_variant_wins_and_then_serves_everyone() {
    let app = spawn().await;
    create(&app, "checkout").await;
    let e = simulate(&app, "checkout", [0.10, 0.12], |_| true, 20_000, 2_000).await;
    assert_eq!(e["status"], "completed", "{e}");
    assert_eq!(e["winner"]["variant"], "treatment");
    assert_eq!(e["winner"]["source"], "automatic");
    assert_eq!(e["winner"]["details"]["verdict"]["outcome"], "winner");
    let snapshot = app
        .call(
            reqwest::Method::GET,
            "/v1/experiments/checkout/winner",
            None,
        )
        .await;
    assert_eq!(snapshot["winner"], "treatment");
    // The decision went through the cache: its snapshot is there, at the decided version.
    let id = e["id"].as_str().unwrap();
    let cached = app
        .cache
        .get_snapshot("production", id)
        .await
        .unwrap()
        .expect("the decision wrote the snapshot");
    assert_eq!(cached.winner.as_deref(), Some("treatment"));
    assert_eq!(cached.version, e["version"].as_u64().unwrap());
    // And into the outbox, for the webhooks: the winner, then the completion.
    let outbox = app.store.list_outbox(PageRequest::DEFAULT).await.unwrap();
    let announced: Vec<_> = outbox
        .items
        .iter()
        .filter(|m| m.experiment_id == id)
        .map(|m| m.event_type.as_str())
        .collect();
    assert_eq!(
        announced,
        [
            "experiment.status_changed",
            "experiment.winner_changed",
            "experiment.status_changed"
        ],
        "activation, decision, completion"
    );
    // Everyone now gets the winner's config, including a subject never seen before.
    let a = app
        .call(
            reqwest::Method::GET,
            "/v1/experiments/checkout/assignment?subject_id=newcomer",
            None,
        )
        .await;
    assert_eq!(
        (a["variant"].as_str(), a["reason"].as_str()),
        (Some("treatment"), Some("winner"))
    );
    assert_eq!(a["config"], json!({"button": "green"}));
    let audit = app
        .call(reqwest::Method::GET, "/v1/experiments/checkout/audit", None)
        .await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "winner_set" && a["actor"] == "evaluator")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_ratio_mismatch_blocks_the_decision() {
    let app = spawn().await;
    create(&app, "broken").await;
    // A broken client drops most treatment subjects before they ever ask: the split that
    // reaches Verdict is far from 50/50 although the configured weights are.
    let experiment = app
        .call(reqwest::Method::GET, "/v1/experiments/broken", None)
        .await;
    let salt = experiment["assignment"]["salt"]
        .as_str()
        .unwrap()
        .to_owned();
    let served = move |s: &str| {
        let in_treatment = verdict_domain::hashing::hash(&salt, s, 2).unwrap() >= 0.5;
        !in_treatment || verdict_domain::hashing::hash("drop", s, 2).unwrap() >= 0.4
    };
    let e = simulate(&app, "broken", [0.10, 0.14], served, 12_000, 3_000).await;
    assert_eq!(e["status"], "running", "no decision: {e}");
    assert!(e["winner"].is_null());
    let report =
        verdict_aggregator::evaluate::evaluate(&app.store, &app.cache, OffsetDateTime::now_utc())
            .await
            .unwrap();
    let outcome = &report.outcomes[0];
    assert!(outcome.srm_flagged, "{outcome:?}");
    assert!(outcome.blockers.contains(&"srm_mismatch"), "{outcome:?}");
    let counts = app
        .store
        .rolled_up_counts(e["id"].as_str().unwrap(), "conversion", None)
        .await
        .unwrap();
    let (c, t) = (counts[0].subjects as f64, counts[1].subjects as f64);
    assert!(
        t / (c + t) < 0.45,
        "the test really induced a mismatch: {c} vs {t}"
    );
}
