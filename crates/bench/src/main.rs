//! `verdict-bench`: the end-to-end benchmark harness.
//!
//! One run on one machine: a real `verdict serve` process (embedded SQLite store in a
//! temporary directory) and a bare axum baseline process (this binary, `baseline`) are
//! driven by the same load generator (`load.rs`). With two or more cores the servers run on
//! core 1 and the load generator on core 0 (`taskset`), so neither steals the other's CPU
//! and latency is not the generator's queueing. Reported, each against the baseline where
//! one exists: assignment requests/s and p50/p99 for repeat and new subjects (and new ones
//! in an experiment with `assignment.auto_exposure`), the SDK routes (the GrowthBook payload,
//! OFREP for one flag and in bulk, with 22 running experiments), ingestion
//! events/s at batch sizes 1, 100 and 500, the rollup of everything ingested (a triggered
//! `aggregate` run), webhook deliveries/s (a triggered `webhooks` run to a local receiver),
//! and Verdict's peak RSS. `--write BENCHMARKS.md` puts the table in that file.
//!
//! Two more commands start `verdict serve` the same way: `scale` measures costs that
//! must not grow with history (results and evaluation of one experiment against the size of
//! the store, RSS against distinct subjects, `/metrics` against experiments), and `soak`
//! runs a moderate mixed load with every job scheduled often for a long time and judges
//! errors, RSS and p99 latency over it.
//!
//! Timing never appears in tests; these are the commands behind the figures in
//! `BENCHMARKS.md`.
//!
//! # Layout
//! - `main.rs`: the command line, the end-to-end scenarios and their report, and what the
//!   commands share (starting Verdict, calls, job triggers).
//! - `scale.rs`: `verdict-bench scale`.
//! - `soak.rs`: `verdict-bench soak`.
//! - `load.rs`: the load generator (hyper client connections; closed loop, or paced).
//! - `procs.rs`: starting the servers pinned, their CPU time and RSS, the machine.

mod load;
mod procs;
mod scale;
mod soak;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Json;
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use verdict_bench::thousands;

use crate::load::{LoadResult, Req, drive};
use crate::procs::{Launch, Server};

const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const SECTION: &str = "verdict-bench";
const EXPERIMENT: &str = "bench";
/// The same experiment with `assignment.auto_exposure`: each new subject's exposure event is
/// written with its assignment.
const EXPOSED: &str = "bench-exposed";
/// Running experiments added for the SDK scenarios (GrowthBook payload, OFREP), targeted.
const SDK_EXPERIMENTS: usize = 20;
/// Subjects assigned in every experiment before the OFREP scenarios, which cycle through them.
const SDK_SUBJECTS: usize = 1_000;

/// The end-to-end benchmark: Verdict against a bare axum server, driven by one load
/// generator, pinned to separate cores.
///
/// Build first: `cargo build --release -p verdict -p verdict-bench`, then run
/// `target/release/verdict-bench --write BENCHMARKS.md`. The `scale` and `soak` commands
/// are the other benchmarks of a running server.
#[derive(Debug, Parser)]
#[command(name = "verdict-bench", version, about, long_about)]
struct Args {
    /// Seconds per load scenario.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent connections for assignment requests.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Concurrent connections for ingestion.
    #[arg(long, default_value_t = 16)]
    ingest_connections: usize,
    /// Subjects assigned before the run; the repeat-subject scenario cycles through them and
    /// events name them.
    #[arg(long, default_value_t = 10_000)]
    subjects: usize,
    /// Status changes made for the webhook measurement (one message each).
    #[arg(long, default_value_t = 500)]
    webhook_messages: usize,
    /// Webhook endpoints every message goes to.
    #[arg(long, default_value_t = 10)]
    webhook_endpoints: usize,
    /// The `verdict` binary [default: `verdict` beside this one].
    #[arg(long, value_name = "PATH", global = true)]
    verdict_bin: Option<PathBuf>,
    /// Do not pin the servers and the load generator to separate cores.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Replace the command's sections of this markdown file with its report.
    #[arg(long, value_name = "FILE", global = true)]
    write: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the bare baseline (what the harness starts; not needed by hand).
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Costs that must not grow with history: results and evaluation of one experiment as
    /// the store grows, RSS against distinct subjects, `/metrics` against experiments.
    Scale(scale::ScaleArgs),
    /// A long mixed load at a moderate rate with every job scheduled often: errors, RSS and
    /// p99 latency per minute, judged at the end (exit status 1 when the judgement fails).
    Soak(soak::SoakArgs),
}

/// What every command that starts Verdict needs.
#[derive(Debug)]
struct Common {
    verdict_bin: PathBuf,
    /// Servers on core 1, this process on core 0.
    pinned: bool,
    write: Option<PathBuf>,
}

impl Common {
    /// The core servers run on, if pinned.
    fn server_core(&self) -> Option<usize> {
        self.pinned.then_some(1)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let command = args.command.take();
    if let Some(Command::Baseline { addr }) = command {
        return baseline(addr);
    }
    let cores = verdict_bench::cores();
    let pinned = !args.no_pin && cores >= 2;
    let verdict_bin = match &args.verdict_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("verdict"),
    };
    if !verdict_bin.exists() {
        bail!(
            "no Verdict binary at {}: build it with `cargo build --release -p verdict` \
             (or name one with --verdict-bin)",
            verdict_bin.display()
        );
    }
    let common = Common {
        verdict_bin,
        pinned,
        write: args.write.clone(),
    };
    if pinned {
        // Before the runtime starts: every thread it makes inherits the affinity.
        procs::pin_self(0)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        Some(Command::Scale(a)) => runtime.block_on(scale::run(&common, a)),
        Some(Command::Soak(a)) => {
            let passed = runtime.block_on(soak::run(&common, a))?;
            if !passed {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Baseline { .. }) | None => runtime.block_on(harness(args, &common)),
    }
}

/// This command line as it was typed, with the binary as `target/release/verdict-bench`:
/// the reports name the command behind their figures.
fn command_line() -> String {
    std::iter::once("target/release/verdict-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How the report's processes were placed: `servers` pinned to core 1 and the load
/// generator to core 0, or not.
fn pinning(pinned: bool, servers: &str) -> String {
    if pinned {
        format!("{servers} pinned to core 1 and the load generator to core 0 with `taskset`")
    } else {
        format!("not pinned: {servers} and load generator share the cores")
    }
}

/// Start `verdict serve` (`serve_args` after `serve`) with its data in `dir`: the
/// harness's admin key, no ingestion rate limit, job triggers that wait as long as a run
/// takes, no per-peer connection cap (every load connection comes from one address),
/// private webhook targets allowed, warnings only in its log (`dir/verdict.log`). `env`
/// adds or overrides settings (`VERDICT_*`).
async fn start_verdict(
    common: &Common,
    dir: &Path,
    serve_args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Server> {
    let addr = procs::free_addr()?;
    let mut vars: Vec<(String, String)> = [
        ("VERDICT_DATA_DIR", dir.join("data").display().to_string()),
        ("VERDICT_SERVER__PORT", addr.port().to_string()),
        ("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN_KEY.into()),
        ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "0".into()),
        ("VERDICT_JOBS__HTTP_WAIT_SECONDS", "3600".into()),
        ("VERDICT_SERVER__REQUEST_TIMEOUT_SECONDS", "7200".into()),
        // The load generator's connections all come from one address.
        ("VERDICT_SERVER__MAX_CONNECTIONS_PER_PEER", "0".into()),
        ("VERDICT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true".into()),
        ("VERDICT_LOG__LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in env {
        vars.retain(|(old, _)| old != k);
        vars.push(((*k).to_owned(), v.clone()));
    }
    let mut args = vec!["serve"];
    args.extend_from_slice(serve_args);
    Server::start(Launch {
        name: "verdict",
        program: &common.verdict_bin,
        args: &args,
        env: vars,
        core: common.server_core(),
        log: dir.join("verdict.log"),
        addr,
        ready_path: "/healthz",
    })
    .await
}

/// The baseline: axum with tokio's default runtime, a JSON hello and a handler that parses
/// an event batch with serde and answers how many events it held, nothing else.
fn baseline(addr: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async move {
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
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// One measured load scenario: requests, or event batches.
#[derive(Debug)]
struct Measured {
    name: String,
    result: LoadResult,
    /// Events per request: `None` for request/response scenarios.
    batch: Option<usize>,
    /// Server CPU seconds per wall second during the scenario (1.0: its core was busy).
    server_cpu: f64,
    /// The load generator's, likewise.
    client_cpu: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.result.per_second() * self.batch.unwrap_or(1) as f64
    }

    fn unit(&self) -> &'static str {
        if self.batch.is_some() {
            "events/s"
        } else {
            "req/s"
        }
    }
}

async fn measure(
    name: impl Into<String>,
    server: &Server,
    token: Option<&str>,
    connections: usize,
    seconds: u64,
    batch: Option<usize>,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> anyhow::Result<Measured> {
    let name = name.into();
    eprintln!("  {name} …");
    let (server_before, client_before) = (server.cpu_seconds()?, procs::own_cpu_seconds()?);
    let result = drive(
        server.addr,
        token,
        connections,
        Duration::from_secs(seconds),
        make,
    )
    .await?;
    let wall = result.elapsed.as_secs_f64();
    let server_cpu = (server.cpu_seconds()? - server_before) / wall;
    let client_cpu = (procs::own_cpu_seconds()? - client_before) / wall;
    eprintln!(
        "    {:.0} per s; server RSS {:.1} MB (peak {:.1} MB)",
        result.per_second(),
        server.rss()? as f64 / 1e6,
        server.peak_rss()? as f64 / 1e6
    );
    if let Some(e) = &result.first_error {
        eprintln!("    {} errors; first: {e}", result.errors);
    }
    Ok(Measured {
        name,
        result,
        batch,
        server_cpu,
        client_cpu,
    })
}

/// A batch body of `batch` events with ids unique to (`batch`, `i`), naming pre-assigned
/// subjects.
fn event_batch(batch: usize, i: u64, subjects: usize) -> String {
    let mut body = String::with_capacity(batch * 140 + 16);
    body.push_str("{\"events\":[");
    for j in 0..batch {
        if j > 0 {
            body.push(',');
        }
        let n = i as usize * batch + j;
        let _ = write!(
            body,
            "{{\"event_id\":\"b{batch}-{i}-{j}\",\"experiment\":\"{EXPERIMENT}\",\
             \"subject_id\":\"user-{}\",\"event\":\"{}\",\"value\":{}}}",
            n % subjects,
            if n.is_multiple_of(3) {
                "purchase"
            } else {
                "conversion"
            },
            if n.is_multiple_of(3) { 19.5 } else { 1.0 },
        );
    }
    body.push_str("]}");
    body
}

/// An HTTP call to Verdict outside the measured load (set-up, triggers); fails on non-2xx.
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

/// What the triggered job runs measured.
#[derive(Debug)]
struct JobRun {
    items: u64,
    elapsed: Duration,
}

impl JobRun {
    fn rate(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }
}

/// Trigger `job` on Verdict (`query`: e.g. `?experiment=KEY`, or empty) and wait for it:
/// the finished run's record, which must have succeeded, and the call's time.
async fn trigger(
    client: &reqwest::Client,
    verdict: &str,
    job: &str,
    query: &str,
) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    let record = call(
        client,
        reqwest::Method::POST,
        format!("{verdict}/v1/internal/jobs/{job}/run{query}"),
        ADMIN_KEY,
        None,
    )
    .await?;
    let elapsed = started.elapsed();
    if record["outcome"] != "succeeded" {
        bail!("the {job} run did not succeed: {record}");
    }
    Ok((record, elapsed))
}

/// Trigger `job` on Verdict and wait for it; `count` reads the number of items it handled
/// from the finished run's report.
async fn run_job(
    client: &reqwest::Client,
    verdict: &str,
    job: &str,
    count: &str,
) -> anyhow::Result<JobRun> {
    let (record, elapsed) = trigger(client, verdict, job, "").await?;
    let items = record["report"][count]
        .as_u64()
        .with_context(|| format!("no report.{count} in the {job} run: {record}"))?;
    Ok(JobRun { items, elapsed })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A key with the `client` role (what apps use: assignments, events, results).
async fn client_key(client: &reqwest::Client, verdict: &str) -> anyhow::Result<String> {
    let key = call(
        client,
        reqwest::Method::POST,
        format!("{verdict}/v1/api-keys"),
        ADMIN_KEY,
        Some(json!({"name": "bench", "roles": ["client"]})),
    )
    .await?;
    Ok(key["key"]
        .as_str()
        .context("no key in the answer")?
        .to_owned())
}

/// Create the two-arm experiment `definition` (variants `control` and `treatment` unless it
/// names its own) and activate it.
async fn running_experiment(
    client: &reqwest::Client,
    verdict: &str,
    definition: Value,
) -> anyhow::Result<()> {
    let mut body = json!({
        "variants": [{"key": "control", "config": {"color": "blue"}}, {"key": "treatment", "config": {"color": "green"}}],
    });
    let key = definition["key"].as_str().context("no key")?.to_owned();
    if let (Some(b), Some(d)) = (body.as_object_mut(), definition.as_object()) {
        b.extend(d.clone());
    }
    call(
        client,
        reqwest::Method::POST,
        format!("{verdict}/v1/experiments"),
        ADMIN_KEY,
        Some(body),
    )
    .await
    .with_context(|| format!("creating the experiment {key}"))?;
    call(
        client,
        reqwest::Method::POST,
        format!("{verdict}/v1/experiments/{key}/activate"),
        ADMIN_KEY,
        None,
    )
    .await?;
    Ok(())
}

/// Fail unless every request of `r` was answered with a 2xx.
fn all_ok(what: &str, r: &LoadResult) -> anyhow::Result<()> {
    if r.errors > 0 {
        bail!(
            "{what}: {} requests failed; first: {}",
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

async fn harness(args: Args, common: &Common) -> anyhow::Result<()> {
    let here = std::env::current_exe()?;
    let pinned = common.pinned;
    let dir = tempfile::tempdir()?;
    let server_core = common.server_core();
    let seconds = args.seconds;

    eprintln!("starting the baseline and Verdict …");
    let base_addr = procs::free_addr()?;
    let addr_arg = base_addr.to_string();
    let base = Server::start(Launch {
        name: "baseline",
        program: &here,
        args: &["baseline", "--addr", &addr_arg],
        env: Vec::new(),
        core: server_core,
        log: dir.path().join("baseline.log"),
        addr: base_addr,
        ready_path: "/hello",
    })
    .await?;
    // Jobs run only when the harness triggers them.
    let verdict_server = start_verdict(common, dir.path(), &["--no-scheduler"], &[]).await?;
    let verdict = format!("http://{}", verdict_server.addr);
    let client = reqwest::Client::new();

    eprintln!("setting up: an experiment and {} subjects …", args.subjects);
    running_experiment(
        &client,
        &verdict,
        json!({
            "key": EXPERIMENT,
            "primary_metric": {"event": "conversion"},
            "secondary_metrics": [{"event": "purchase", "kind": "sum"}]
        }),
    )
    .await?;
    running_experiment(
        &client,
        &verdict,
        json!({
            "key": EXPOSED,
            "primary_metric": {"event": "conversion"},
            "assignment": {"auto_exposure": true}
        }),
    )
    .await?;
    let client_key = client_key(&client, &verdict).await?;
    let assigned: Vec<anyhow::Result<Value>> = futures::stream::iter(0..args.subjects)
        .map(|i| {
            call(
                &client,
                reqwest::Method::GET,
                format!("{verdict}/v1/experiments/{EXPERIMENT}/assignment?subject_id=user-{i}"),
                &client_key,
                None,
            )
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assigned.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let mut rows: Vec<(Measured, Option<f64>, &'static str)> = Vec::new();
    eprintln!(
        "assignment ({} connections, {seconds} s each):",
        args.connections
    );
    let hello = measure(
        "bare axum `GET /hello` (baseline)",
        &base,
        None,
        args.connections,
        seconds,
        None,
        Arc::new(|_| Req::get("/hello".into())),
    )
    .await?;
    let n = args.subjects as u64;
    let repeat = measure(
        "assignment, repeat subjects",
        &verdict_server,
        Some(&client_key),
        args.connections,
        seconds,
        None,
        Arc::new(move |i| {
            Req::get(format!(
                "/v1/experiments/{EXPERIMENT}/assignment?subject_id=user-{}",
                i % n
            ))
        }),
    )
    .await?;
    // New subjects of an experiment: each request assigns one never seen before.
    let new_subjects = |name: &'static str, experiment: &'static str| {
        measure(
            name,
            &verdict_server,
            Some(&client_key),
            args.connections,
            seconds,
            None,
            Arc::new(move |i| {
                Req::get(format!(
                    "/v1/experiments/{experiment}/assignment?subject_id=new-{i}"
                ))
            }),
        )
    };
    let fresh = new_subjects("assignment, new subjects", EXPERIMENT).await?;
    let exposed = new_subjects("assignment, new subjects, `auto_exposure`", EXPOSED).await?;
    let hello_rate = hello.rate();
    let (repeat_ratio, fresh_ratio) = (repeat.rate() / hello_rate, fresh.rate() / hello_rate);
    let exposed_ratio = exposed.rate() / hello_rate;
    let exposure_cost = exposed.rate() / fresh.rate();
    rows.push((hello, None, ""));
    rows.push((repeat, Some(repeat_ratio), "≥ 0.40"));
    rows.push((fresh, Some(fresh_ratio), "≥ 0.20"));
    rows.push((exposed, Some(exposed_ratio), ""));

    eprintln!(
        "SDKs: {SDK_EXPERIMENTS} more running experiments, {SDK_SUBJECTS} subjects assigned in all …"
    );
    for k in 0..SDK_EXPERIMENTS {
        running_experiment(
            &client,
            &verdict,
            json!({"key": format!("sdk-{k}"), "coverage": 0.9,
                "targeting": [{"conditions": [{"attribute": "country", "operator": "in", "value": ["US", "FR"]}]}]}),
        )
        .await?;
    }
    let context = |i: u64| {
        let country = ["US", "FR", "DE"][(i % 3) as usize];
        format!(r#"{{"context":{{"targetingKey":"user-{i}","country":"{country}"}}}}"#)
    };
    let sdk_subjects = SDK_SUBJECTS as u64;
    let assigned: Vec<anyhow::Result<Value>> = futures::stream::iter(0..sdk_subjects)
        .map(|i| {
            let body: Value = serde_json::from_str(&context(i)).expect("JSON");
            call(
                &client,
                reqwest::Method::POST,
                format!("{verdict}/ofrep/v1/evaluate/flags"),
                &client_key,
                Some(body),
            )
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assigned.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let live = SDK_EXPERIMENTS + 2;
    let payload_path = format!("/api/features/{client_key}");
    let payload = measure(
        format!("GrowthBook payload `GET /api/features/{{key}}` ({live} experiments)"),
        &verdict_server,
        None,
        args.connections,
        seconds,
        None,
        Arc::new(move |_| Req::get(payload_path.clone())),
    )
    .await?;
    let one_flag = measure(
        "OFREP one flag, repeat subjects",
        &verdict_server,
        Some(&client_key),
        args.connections,
        seconds,
        None,
        Arc::new(move |i| {
            Req::post(
                format!("/ofrep/v1/evaluate/flags/{EXPERIMENT}"),
                context(i % sdk_subjects),
            )
        }),
    )
    .await?;
    let bulk = measure(
        format!("OFREP bulk ({live} flags), repeat subjects"),
        &verdict_server,
        Some(&client_key),
        args.connections,
        seconds,
        None,
        Arc::new(move |i| Req::post("/ofrep/v1/evaluate/flags".into(), context(i % sdk_subjects))),
    )
    .await?;
    for m in [payload, one_flag, bulk] {
        let ratio = m.rate() / hello_rate;
        rows.push((m, Some(ratio), ""));
    }

    eprintln!(
        "ingestion ({} connections, {seconds} s each):",
        args.ingest_connections
    );
    let mut ingested = 0u64;
    for batch in [1usize, 100, 500] {
        let subjects = args.subjects;
        let make: Arc<dyn Fn(u64) -> Req + Send + Sync> =
            Arc::new(move |i| Req::post("/parse".into(), event_batch(batch, i, subjects)));
        let parse = measure(
            format!("bare axum parse-only handler, batches of {batch} (baseline)"),
            &base,
            None,
            args.ingest_connections,
            seconds,
            Some(batch),
            make,
        )
        .await?;
        let make: Arc<dyn Fn(u64) -> Req + Send + Sync> =
            Arc::new(move |i| Req::post("/v1/events".into(), event_batch(batch, i, subjects)));
        let ingest = measure(
            format!("ingestion, batches of {batch}, idempotent, SQLite"),
            &verdict_server,
            Some(&client_key),
            args.ingest_connections,
            seconds,
            Some(batch),
            make,
        )
        .await?;
        ingested += ingest.result.ok * batch as u64;
        let ratio = ingest.rate() / parse.rate();
        let target = if batch == 500 {
            "≥ 100,000 events/s"
        } else {
            ""
        };
        rows.push((parse, None, ""));
        rows.push((ingest, Some(ratio), target));
    }

    eprintln!("rollup of the {} events ingested …", thousands(ingested));
    let rollup = run_job(&client, &verdict, "aggregate", "events").await?;
    eprintln!(
        "    server RSS {:.1} MB (peak {:.1} MB)",
        verdict_server.rss()? as f64 / 1e6,
        verdict_server.peak_rss()? as f64 / 1e6
    );

    eprintln!(
        "webhooks: {} status changes to {} endpoints …",
        args.webhook_messages, args.webhook_endpoints
    );
    // On the load generator's core.
    let (hook_base, received) = verdict_bench::counting_receiver().await?;
    let hook_url = format!("{hook_base}/hook");
    for _ in 0..args.webhook_endpoints {
        call(
            &client,
            reqwest::Method::POST,
            format!("{verdict}/v1/webhooks/endpoints"),
            ADMIN_KEY,
            Some(json!({"url": hook_url, "event_types": ["experiment.status_changed"]})),
        )
        .await
        .context("creating a webhook endpoint")?;
    }
    // Every status change writes one outbox message: pause and resume the experiment.
    for k in 0..args.webhook_messages {
        let status = if k % 2 == 0 { "paused" } else { "running" };
        call(
            &client,
            reqwest::Method::POST,
            format!("{verdict}/v1/experiments/{EXPERIMENT}/status"),
            ADMIN_KEY,
            Some(json!({ "status": status })),
        )
        .await?;
    }
    let hooks = run_job(&client, &verdict, "webhooks", "delivered").await?;
    // The experiments' activations wrote a message each too; endpoints get every message
    // not yet fanned out when the dispatcher runs.
    let status_changes = args.webhook_messages + 2 + SDK_EXPERIMENTS;
    let expected = (status_changes * args.webhook_endpoints) as u64;
    let got = received.load(Ordering::Relaxed);
    if hooks.items != expected || got != expected {
        bail!(
            "webhooks: expected {expected} deliveries; the run reported {}, the receiver got {got}",
            hooks.items
        );
    }

    let verdict_rss = verdict_server.peak_rss()?;
    let base_rss = base.peak_rss()?;
    verdict_server.stop().await;
    base.stop().await;

    // The report.
    let mut table = String::from(
        "| scenario | throughput | ratio to baseline | target | p50 | p99 | server CPU | load generator CPU | errors |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for (m, ratio, target) in &rows {
        let _ = writeln!(
            table,
            "| {} | {} {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {} |",
            m.name,
            thousands(m.rate() as u64),
            m.unit(),
            ratio.map_or("1.00".into(), |r| format!("**{r:.2}**")),
            target,
            ms(m.result.p50),
            ms(m.result.p99),
            m.server_cpu * 100.0,
            m.client_cpu * 100.0,
            m.result.errors
        );
    }
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let _ = write!(
        table,
        "\n| measurement | result | target |\n|---|---:|---|\n\
         | new subjects with `auto_exposure` (an exposure event written with each assignment) against without | {:.2}× | |\n\
         | rollup: one triggered `aggregate` run over the {} events stored above | {} events/s ({:.2} s) | |\n\
         | webhooks: one triggered `webhooks` run, {} deliveries ({} status changes × {} endpoints) to a local receiver | {} deliveries/s ({:.2} s) | |\n\
         | Verdict peak RSS (`VmHWM`, whole run) | {} | ≤ 150 MB |\n\
         | baseline peak RSS | {} | |\n",
        exposure_cost,
        thousands(rollup.items),
        thousands(rollup.rate() as u64),
        rollup.elapsed.as_secs_f64(),
        thousands(hooks.items),
        status_changes,
        args.webhook_endpoints,
        thousands(hooks.rate() as u64),
        hooks.elapsed.as_secs_f64(),
        mb(verdict_rss),
        mb(base_rss),
    );
    let pinning = pinning(pinned, "servers");
    let report = format!(
        "Measured by `cargo build --release -p verdict -p verdict-bench && target/release/verdict-bench --write BENCHMARKS.md` \
         on {machine}; {pinning}; {seconds} s per scenario, {c} connections for assignment, \
         {ic} for ingestion; {subjects} subjects assigned first; SQLite store \
         (`synchronous = FULL`) in a temporary directory.\n\n{table}",
        machine = procs::machine(),
        c = args.connections,
        ic = args.ingest_connections,
        subjects = thousands(args.subjects as u64),
    );
    println!("{report}");
    if let Some(path) = &common.write {
        verdict_bench::write_section(path, SECTION, &report)?;
    }
    Ok(())
}
