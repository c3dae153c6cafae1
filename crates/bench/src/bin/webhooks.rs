//! `webhooks`: deliveries per second of the webhook dispatcher to a local receiver.
//!
//! Per store, in one run: `--messages` status changes (each writes one outbox message with
//! the change, as in production) fanned out to `--endpoints` endpoints on a local axum
//! receiver that answers 200 and counts. Then the dispatcher's rounds (`run_once`, fan-out +
//! claim with lease + signed POST + attempt log + state, default `[webhooks]` settings) run
//! back to back until every delivery is delivered; deliveries/s = deliveries / that time.
//! The same number of bare POSTs with the same concurrency (one connection per endpoint) to
//! the same receiver, with no store and no signing, is the baseline measured in the same run.
//! Target: ≥ 1,000 deliveries/s.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use time::OffsetDateTime;
use verdict_bench::{cores, thousands};
use verdict_domain::experiment::Provided;
use verdict_domain::{ExperimentInput, Scope, Status};
use verdict_store::{
    DeliveryStatus, DynStore, Endpoint, MongoStore, PageRequest, SqliteStore, StatusChange,
};
use verdict_webhooks::{Dispatcher, DispatcherConfig, Secret};

const SECTION: &str = "verdict-bench-webhooks";
const TARGET: f64 = 1_000.0;

/// Measure webhook deliveries per second to a local receiver.
#[derive(Debug, Parser)]
#[command(name = "webhooks", version, about, long_about)]
struct Args {
    /// Status changes made (one outbox message each).
    #[arg(long, default_value_t = 1_000)]
    messages: usize,
    /// Endpoints every message goes to (deliveries = messages × endpoints).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Also measure on MongoDB at this URI (a fresh database, dropped at the end).
    #[arg(long, env = "VERDICT_TEST_MONGODB_URI")]
    mongodb_uri: Option<String>,
    /// Write the report into this file's `verdict-bench-webhooks` section (e.g. BENCHMARKS.md).
    #[arg(long)]
    write: Option<PathBuf>,
}

/// `messages` status changes: experiments toggled running ⇄ paused, one message each.
async fn make_messages(store: &DynStore, messages: usize) -> anyhow::Result<()> {
    let per_experiment = 50;
    let experiments = messages.div_ceil(per_experiment);
    let mut made = 0;
    for e in 0..experiments {
        let id = format!("exp-{e:05}");
        let input: ExperimentInput = serde_json::from_value(serde_json::json!({
            "key": id, "variants": [{"key": "a"}, {"key": "b"}]
        }))?;
        let experiment = input
            .into_experiment(
                Scope::default(),
                Provided {
                    id: id.clone(),
                    salt: "s".into(),
                    now: OffsetDateTime::now_utc(),
                },
            )
            .map_err(|p| anyhow::anyhow!("fixture: {p:?}"))?;
        store.create_experiment(&experiment, "bench").await?;
        let mut from = Status::Draft;
        while made < messages && made < (e + 1) * per_experiment {
            let to = if from == Status::Running {
                Status::Paused
            } else {
                Status::Running
            };
            store
                .transition_status(&StatusChange {
                    experiment_id: id.clone(),
                    from,
                    to,
                    at: OffsetDateTime::now_utc(),
                    actor: "bench".into(),
                })
                .await?
                .context("transition applies")?;
            from = to;
            made += 1;
        }
    }
    Ok(())
}

struct Figures {
    deliveries: u64,
    took: Duration,
    rounds: u64,
}

async fn measure(
    store: DynStore,
    args: &Args,
    url: &str,
    count: &AtomicU64,
) -> anyhow::Result<Figures> {
    let now = OffsetDateTime::now_utc();
    for i in 0..args.endpoints {
        let bytes: [u8; 32] = rand::random();
        store
            .create_endpoint(&Endpoint {
                id: format!("ep_{i:03}"),
                environment: "production".into(),
                url: format!("{url}/ep/{i}"),
                description: String::new(),
                event_types: Vec::new(),
                disabled: false,
                disabled_reason: None,
                disabled_at: None,
                secret: Secret::generate(&bytes)?.expose(),
                previous_secret: None,
                previous_secret_expires_at: None,
                failing_since: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
    }
    let setup = Instant::now();
    make_messages(&store, args.messages).await?;
    eprintln!(
        "  {} messages made in {:.1} s",
        args.messages,
        setup.elapsed().as_secs_f64()
    );
    let defaults = verdict_config::Settings::load_from(None, Vec::new())
        .map_err(|e| anyhow::anyhow!("default settings: {e}"))?;
    let mut config = DispatcherConfig::from_settings(&defaults.webhooks);
    config.allow_private_targets = true;
    let dispatcher = Dispatcher::new(store.clone(), config)?;
    let before = count.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut rounds = 0;
    let mut delivered = 0;
    loop {
        let r = dispatcher.run_once(OffsetDateTime::now_utc()).await?;
        rounds += 1;
        delivered += r.delivered;
        if r.is_idle() {
            break;
        }
    }
    let took = started.elapsed();
    let expected = (args.messages * args.endpoints) as u64;
    let received = count.load(Ordering::Relaxed) - before;
    let pending = store
        .list_deliveries(
            "ep_000",
            Some(DeliveryStatus::Pending),
            PageRequest::DEFAULT,
        )
        .await?
        .total;
    if delivered != expected || received != expected || pending != 0 {
        bail!(
            "expected {expected} deliveries, delivered {delivered}, received {received}, pending {pending}"
        );
    }
    Ok(Figures {
        deliveries: delivered,
        took,
        rounds,
    })
}

/// Bare POSTs, `concurrency` at a time, through one client: the HTTP ceiling of this box.
async fn baseline(url: &str, n: u64, concurrency: usize) -> anyhow::Result<Duration> {
    let client = reqwest::Client::new();
    let body = vec![b'x'; 400];
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let req = client
                .post(format!("{url}/base/{}", i as usize % concurrency))
                .body(body.clone());
            async move { req.send().await.map(|r| r.status().is_success()) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    if results.iter().any(|r| !matches!(r, Ok(true))) {
        bail!("baseline request failed");
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, count) = verdict_bench::counting_receiver().await?;
    let mut rows = Vec::new();
    let n = (args.messages * args.endpoints) as u64;
    let base = baseline(&url, n, args.endpoints).await?;
    let base_rate = n as f64 / base.as_secs_f64();
    eprintln!("baseline: {base_rate:.0} POST/s");

    let dir = tempfile::tempdir()?;
    eprintln!("SQLite:");
    let sqlite: DynStore = Arc::new(SqliteStore::open(dir.path().join("bench.db"), 5_000)?);
    let f = measure(sqlite, &args, &url, &count).await?;
    rows.push(("SQLite", f));
    if let Some(uri) = &args.mongodb_uri {
        eprintln!("MongoDB:");
        let name = format!("verdict_bench_wh_{}", uuid::Uuid::new_v4().simple());
        let mongo = MongoStore::connect(uri, &name).await?;
        let db = mongo.database().clone();
        let f = measure(Arc::new(mongo), &args, &url, &count).await;
        db.drop().await?;
        rows.push(("MongoDB (secantusd-rs)", f?));
    }

    let mut report = String::new();
    report.push_str(&format!(
        "### Webhook delivery (`cargo run --release -p verdict-bench --bin webhooks -- --write BENCHMARKS.md`)\n\n\
         {} messages × {} endpoints = {} signed deliveries to a local axum receiver answering 200, \
         default `[webhooks]` settings (batch 100, one connection per endpoint, endpoints in \
         parallel, each endpoint's messages in order). Each round fans out, claims with a lease, \
         POSTs, and writes the attempt log and delivery states (one store call per endpoint per \
         round). {} cores. Target ≥ {} deliveries/s.\n\n\
         | store | deliveries | time | deliveries/s | rounds | vs bare POSTs ({:.0}/s) | target |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        thousands(args.messages as u64),
        args.endpoints,
        thousands(n),
        cores(),
        thousands(TARGET as u64),
        base_rate,
    ));
    for (name, f) in &rows {
        let rate = f.deliveries as f64 / f.took.as_secs_f64();
        report.push_str(&format!(
            "| {name} | {} | {:.2} s | {} | {} | {:.2}× | {} |\n",
            thousands(f.deliveries),
            f.took.as_secs_f64(),
            thousands(rate as u64),
            f.rounds,
            rate / base_rate,
            if rate >= TARGET { "met" } else { "MISSED" },
        ));
    }
    println!("{report}");
    if let Some(path) = &args.write {
        verdict_bench::write_section(path, SECTION, &report)?;
    }
    Ok(())
}
