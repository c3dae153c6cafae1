//! `verdict-bench`: Verdict's hot HTTP paths measured against a bare axum baseline.
//!
//! One process, one run, one machine: a bare axum server (a JSON "hello" handler and a
//! handler that only parses an event batch), a real Verdict API on a temporary SQLite store,
//! and one load generator (reqwest, N concurrent keep-alive connections) driving both with
//! the same loop. Results are ratios to the baseline measured in the same run, so they
//! compare across machines better than absolute numbers. Timing never appears in tests;
//! this is the command that produces the figures in `BENCHMARKS.md`.
//!
//! # Layout
//! - `main.rs`: set-up of both servers, the load loop, the scenarios and the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Json;
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};
use verdict_api::Application;
use verdict_config::Settings;
use verdict_store::SqliteStore;

const ADMIN_KEY: &str = "bench-admin-key-0123456789";

/// Measure assignment and ingestion throughput against a bare axum handler.
#[derive(Debug, Parser)]
#[command(name = "verdict-bench", version, about, long_about)]
struct Args {
    /// Seconds per scenario.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent connections for request/response scenarios.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Concurrent connections for ingestion (batches are large; fewer are enough).
    #[arg(long, default_value_t = 8)]
    ingest_connections: usize,
    /// Events per ingestion batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Distinct subjects pre-assigned for the repeat-subject scenario.
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// Replace the generated section of this markdown file with the results.
    #[arg(long, value_name = "FILE")]
    write: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
struct LoadResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl LoadResult {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run `connections` loops for `duration`, each sending `request(i)` and awaiting a 2xx.
async fn drive<F>(connections: usize, duration: Duration, request: F) -> LoadResult
where
    F: Fn(u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match request(i).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                latencies.push(t.elapsed());
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    LoadResult {
        requests: all.len() as u64 - errors,
        errors,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

async fn baseline_server() -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/hello", get(|| async { Json(json!({"hello": "world"})) }))
        .route(
            "/parse",
            post(|Json(body): Json<Value>| async move {
                let n = body["events"].as_array().map_or(0, Vec::len);
                Json(json!({"accepted": n}))
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

async fn verdict_server(dir: &std::path::Path) -> anyhow::Result<String> {
    let env = [
        ("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN_KEY),
        ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "0"),
        ("VERDICT_SERVER__REQUEST_BODY_LIMIT_BYTES", "67108864"),
        ("VERDICT_LOG__LEVEL", "warn"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut settings = Settings::load_from(None, env)?;
    settings.server.port = 0;
    let store = SqliteStore::open(dir.join("verdict.db"), 5_000)?;
    let cache = verdict_api::startup::open_cache(&settings)?;
    let app = Application::build(Arc::new(settings), Arc::new(store), cache).await?;
    let addr = app.local_addr()?;
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(format!("http://{addr}"))
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = client.request(method, &url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: {status} {value}");
    }
    Ok(value)
}

fn event_batch(batch: usize, subjects: usize, seed: u64) -> String {
    let events: Vec<Value> = (0..batch)
        .map(|i| {
            json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "experiment": "bench",
                "subject_id": format!("user-{}", (seed as usize * batch + i) % subjects),
                "event": "conversion",
                "value": 1.0
            })
        })
        .collect();
    json!({ "events": events }).to_string()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let dir = tempfile::tempdir()?;
    let base = baseline_server().await?;
    let verdict = verdict_server(dir.path()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    // An experiment, running, with pre-assigned subjects.
    call(&client, reqwest::Method::POST, format!("{verdict}/v1/experiments"), ADMIN_KEY, Some(json!({
        "key": "bench",
        "variants": [{"key": "control", "config": {"color": "blue"}}, {"key": "treatment", "config": {"color": "green"}}]
    }))).await.context("creating the experiment")?;
    call(
        &client,
        reqwest::Method::POST,
        format!("{verdict}/v1/experiments/bench/activate"),
        ADMIN_KEY,
        None,
    )
    .await?;
    let key = call(
        &client,
        reqwest::Method::POST,
        format!("{verdict}/v1/api-keys"),
        ADMIN_KEY,
        Some(json!({"name": "bench", "scopes": ["client"]})),
    )
    .await?;
    let client_key = key["key"].as_str().context("no key in answer")?.to_owned();
    for i in 0..args.subjects {
        call(
            &client,
            reqwest::Method::GET,
            format!("{verdict}/v1/experiments/bench/assignment?subject_id=user-{i}"),
            &client_key,
            None,
        )
        .await?;
    }

    eprintln!("baseline GET /hello …");
    let c = client.clone();
    let b = base.clone();
    let hello = drive(args.connections, duration, move |_| {
        c.get(format!("{b}/hello"))
    })
    .await;

    eprintln!("assignment, repeat subjects …");
    let (c, v, k, n) = (
        client.clone(),
        verdict.clone(),
        client_key.clone(),
        args.subjects as u64,
    );
    let repeat = drive(args.connections, duration, move |i| {
        c.get(format!(
            "{v}/v1/experiments/bench/assignment?subject_id=user-{}",
            i % n
        ))
        .bearer_auth(&k)
    })
    .await;

    eprintln!("assignment, new subjects …");
    let (c, v, k) = (client.clone(), verdict.clone(), client_key.clone());
    let fresh = drive(args.connections, duration, move |i| {
        c.get(format!(
            "{v}/v1/experiments/bench/assignment?subject_id=new-{i}"
        ))
        .bearer_auth(&k)
    })
    .await;

    // Pre-built batches with fresh random event ids, enough for the whole run.
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..600u64)
            .map(|s| event_batch(args.batch, args.subjects, s))
            .collect(),
    );

    eprintln!("baseline: parse-only batch handler …");
    let (c, b, bodies_b) = (client.clone(), base.clone(), bodies.clone());
    let parse = drive(args.ingest_connections, duration, move |i| {
        c.post(format!("{b}/parse"))
            .header("content-type", "application/json")
            .body(bodies_b[i as usize % bodies_b.len()].clone())
    })
    .await;

    eprintln!("ingestion, batches of {} …", args.batch);
    let (c, v, k, bodies_v) = (
        client.clone(),
        verdict.clone(),
        client_key.clone(),
        bodies.clone(),
    );
    let ingest = drive(args.ingest_connections, duration, move |i| {
        c.post(format!("{v}/v1/events"))
            .bearer_auth(&k)
            .header("content-type", "application/json")
            .body(bodies_v[i as usize % bodies_v.len()].clone())
    })
    .await;
    if ingest.requests as usize > bodies.len() {
        eprintln!("note: more batches than distinct bodies; repeats were answered as duplicates");
    }

    let batch = args.batch as f64;
    let rows = [
        (
            "bare axum GET /hello (baseline)",
            &hello,
            hello.per_second(),
            "req/s",
            1.0,
        ),
        (
            "assignment, repeat subjects",
            &repeat,
            repeat.per_second(),
            "req/s",
            repeat.per_second() / hello.per_second(),
        ),
        (
            "assignment, new subjects",
            &fresh,
            fresh.per_second(),
            "req/s",
            fresh.per_second() / hello.per_second(),
        ),
        (
            "bare axum parse-only batch handler (baseline)",
            &parse,
            parse.per_second() * batch,
            "events/s",
            1.0,
        ),
        (
            "ingestion, idempotent, SQLite",
            &ingest,
            ingest.per_second() * batch,
            "events/s",
            ingest.per_second() / parse.per_second(),
        ),
    ];
    let mut table = String::from(
        "| scenario | throughput | unit | ratio to baseline | p50 | p99 | errors |\n|---|---:|---|---:|---:|---:|---:|\n",
    );
    for (name, r, rate, unit, ratio) in rows {
        table.push_str(&format!(
            "| {name} | {rate:.0} | {unit} | {ratio:.2} | {} | {} | {} |\n",
            ms(r.p50),
            ms(r.p99),
            r.errors
        ));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let report = format!(
        "Measured by `cargo run --release -p verdict-bench -- --write BENCHMARKS.md` \
         ({} s per scenario, {} connections, {} for ingestion, batches of {}; {} cores; \
         client and servers in one process, not pinned).\n\n{table}",
        args.seconds, args.connections, args.ingest_connections, args.batch, cores
    );
    println!("{report}");
    if let Some(path) = args.write {
        verdict_bench::write_section(&path, "verdict-bench", &report)?;
    }
    Ok(())
}
