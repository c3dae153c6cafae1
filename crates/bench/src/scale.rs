//! `verdict-bench scale`: costs that must not grow with history, each measured on a fresh
//! `verdict serve --no-scheduler` (jobs run when the command triggers them) and reported in
//! its own section of `BENCHMARKS.md`:
//!
//! - `history`: one experiment whose metrics have a window and which names an exposure
//!   event (so results and evaluation count its raw events at query time) keeps a fixed
//!   number of subjects and events of its own while events of other running experiments
//!   fill the store to each of `--sizes` in turn; at each size, everything is rolled up (a
//!   triggered `aggregate` run), then its results are read and it is evaluated (triggered
//!   `evaluate` runs narrowed to it). The largest size's times over the next one's should
//!   stay within 1.5×. On SQLite, and also on MongoDB with `--mongodb-uri`.
//! - `subjects`: the server's RSS and peak RSS after assigning each of `--subjects`
//!   distinct new subjects through the assignment API (closed loop, like the end-to-end
//!   harness's new-subject scenario).
//! - `metrics`: `/metrics` scrape time with each of `--experiments` experiments running.
//! - `publish`: config snapshot publishing with each of `--experiments` experiments running
//!   (a directory target configured): a manual publish of the unchanged scope (compile and
//!   compare), and a status change whose publish records and writes a new version, against
//!   the same change of a draft (which publishes nothing).
//! - `console`: the admin console's pages (experiments list, experiment, edit, new
//!   experiment, operations, environments, audiences, webhooks, API keys) for one
//!   experiment with `--console-events` events rolled up, loaded by a signed-in admin
//!   (target: under 50 ms each).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use verdict_bench::{Rng, human, percentile, thousands};

use crate::load::{Req, drive_n};
use crate::procs::{self, Server};
use crate::{
    ADMIN_KEY, Common, all_ok, call, client_key, command_line, ms, pinning, running_experiment,
    start_verdict, trigger,
};

const HISTORY_SECTION: &str = "verdict-bench-scale-history";
const SUBJECTS_SECTION: &str = "verdict-bench-scale-subjects";
const METRICS_SECTION: &str = "verdict-bench-scale-metrics";
const PUBLISH_SECTION: &str = "verdict-bench-scale-publish";
const CONSOLE_SECTION: &str = "verdict-bench-scale-console";
/// The experiment whose console pages are timed.
const CONSOLE_EXPERIMENT: &str = "console";
/// The audience the console part creates.
const CONSOLE_AUDIENCE: &str = "dach";
/// The experiment whose cost is watched while the store grows.
const TARGET: &str = "target";
/// Its metrics' window.
const WINDOW_HOURS: u32 = 72;
/// Its exposure event.
const EXPOSURE: &str = "viewed_checkout";
/// Event names, shared by the watched experiment and the others: an index that found the
/// watched experiment's events by name alone would show here.
const EVENT_NAMES: [&str; 5] = ["exposure", "conversion", "page_view", "revenue", EXPOSURE];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    History,
    Subjects,
    Metrics,
    Publish,
    Console,
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// The measurements to make.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "history,subjects,metrics,publish,console"
    )]
    parts: Vec<Part>,
    /// history: total events in the store at each measurement, increasing (the watched
    /// experiment's own events included).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    sizes: Vec<u64>,
    /// history: subjects of the watched experiment.
    #[arg(long, default_value_t = 2_000)]
    own_subjects: u64,
    /// history: events per subject of the watched experiment (its first is the exposure).
    #[arg(long, default_value_t = 10)]
    own_events_per_subject: u64,
    /// history: the other running experiments, whose events fill the store.
    #[arg(long, default_value_t = 100)]
    other_experiments: u64,
    /// history: subjects assigned to each other experiment.
    #[arg(long, default_value_t = 1_000)]
    other_subjects: u64,
    /// history: events per ingestion request while filling.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// history: concurrent connections while filling.
    #[arg(long, default_value_t = 16)]
    ingest_connections: usize,
    /// history: timed results calls per size (after one untimed).
    #[arg(long, default_value_t = 20)]
    results_calls: usize,
    /// history: triggered evaluations per size.
    #[arg(long, default_value_t = 5)]
    evaluations: usize,
    /// history: also measure on MongoDB at this URI (a fresh database, dropped at the end).
    #[arg(long)]
    mongodb_uri: Option<String>,
    /// subjects: distinct subjects assigned at each RSS reading, increasing.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    subjects: Vec<u64>,
    /// subjects: concurrent connections assigning them.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// metrics, publish: running experiments at each measurement, increasing.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    experiments: Vec<u64>,
    /// metrics: timed scrapes per measurement (after one untimed).
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// publish: timed publishes (and pairs of status changes) per measurement.
    #[arg(long, default_value_t = 20)]
    publishes: usize,
    /// console: events rolled up for the experiment whose pages are timed.
    #[arg(long, default_value_t = 1_000_000)]
    console_events: u64,
    /// console: subjects of that experiment.
    #[arg(long, default_value_t = 20_000)]
    console_subjects: u64,
    /// console: timed loads of each page (after one untimed).
    #[arg(long, default_value_t = 20)]
    page_loads: usize,
}

fn increasing(name: &str, v: &[u64]) -> anyhow::Result<()> {
    if v.is_empty() || v[0] == 0 || v.windows(2).any(|w| w[0] >= w[1]) {
        bail!("{name} must be positive and increasing");
    }
    Ok(())
}

pub async fn run(common: &Common, args: ScaleArgs) -> anyhow::Result<()> {
    let own_events = args.own_subjects * args.own_events_per_subject;
    if args.parts.contains(&Part::History) {
        increasing("--sizes", &args.sizes)?;
        if args.sizes[0] < own_events {
            bail!(
                "--sizes: the first size must be at least the watched experiment's \
                 {own_events} events"
            );
        }
        if args.own_subjects == 0
            || args.own_events_per_subject == 0
            || args.other_experiments == 0
            || args.other_subjects == 0
            || args.batch == 0
        {
            bail!(
                "--own-subjects, --own-events-per-subject, --other-experiments, \
                 --other-subjects and --batch must be positive"
            );
        }
    }
    if args.parts.contains(&Part::Subjects) {
        increasing("--subjects", &args.subjects)?;
    }
    if args.parts.contains(&Part::Metrics) || args.parts.contains(&Part::Publish) {
        increasing("--experiments", &args.experiments)?;
    }
    let conditions = format!(
        "on {}; {}",
        procs::machine(),
        pinning(common.pinned, "the server")
    );
    if args.parts.contains(&Part::History) {
        let mut stores = vec![history(common, &args, Backend::Sqlite).await?];
        if let Some(uri) = &args.mongodb_uri {
            stores.push(history(common, &args, Backend::Mongodb(uri)).await?);
        }
        let report = history_report(&args, &conditions, &stores);
        emit(common, HISTORY_SECTION, &report)?;
    }
    if args.parts.contains(&Part::Subjects) {
        let rows = subjects(common, &args).await?;
        emit(
            common,
            SUBJECTS_SECTION,
            &subjects_report(&args, &conditions, &rows),
        )?;
    }
    if args.parts.contains(&Part::Metrics) {
        let rows = metrics(common, &args).await?;
        emit(
            common,
            METRICS_SECTION,
            &metrics_report(&args, &conditions, &rows),
        )?;
    }
    if args.parts.contains(&Part::Publish) {
        let rows = publish(common, &args).await?;
        emit(
            common,
            PUBLISH_SECTION,
            &publish_report(&args, &conditions, &rows),
        )?;
    }
    if args.parts.contains(&Part::Console) {
        if args.console_subjects == 0 || args.console_events < args.console_subjects {
            bail!("--console-events must be at least --console-subjects, which must be positive");
        }
        let pages = console(common, &args).await?;
        emit(
            common,
            CONSOLE_SECTION,
            &console_report(&args, &conditions, &pages),
        )?;
    }
    Ok(())
}

fn emit(common: &Common, section: &str, report: &str) -> anyhow::Result<()> {
    println!("{report}");
    if let Some(path) = &common.write {
        verdict_bench::write_section(path, section, report)?;
    }
    Ok(())
}

/// `{"events": [...]}` of the events `from..to`, each written by `item`.
fn batch(from: u64, to: u64, item: impl Fn(u64, &mut String)) -> String {
    let mut body = String::with_capacity((to - from) as usize * 150 + 16);
    body.push_str("{\"events\":[");
    for n in from..to {
        if n > from {
            body.push(',');
        }
        item(n, &mut body);
    }
    body.push_str("]}");
    body
}

/// Event `n` of the watched experiment: subject `t-{n / per_subject}`; each subject's
/// first event is the exposure, then a few conversions and revenue among page views.
fn own_event(n: u64, per_subject: u64, body: &mut String) {
    let (s, k) = (n / per_subject, n % per_subject);
    let (name, value) = match k {
        0 => (EXPOSURE, 1.0),
        1 => ("exposure", 1.0),
        2 if s % 4 == 0 => ("conversion", 1.0),
        3 if s % 5 == 0 => ("conversion", 1.0),
        4 if s % 3 == 0 => ("revenue", 5.0 + (s % 196) as f64),
        _ => ("page_view", 1.0),
    };
    let _ = write!(
        body,
        "{{\"event_id\":\"t-{n}\",\"experiment\":\"{TARGET}\",\"subject_id\":\"t-{s}\",\
         \"event\":\"{name}\",\"value\":{value}}}"
    );
}

/// The `i`th other experiment's key.
fn other_key(i: u64) -> String {
    format!("other-{i:03}")
}

/// Event `n` of the other experiments: round robin over them, each naming one of its
/// subjects and any of the event names.
fn other_event(n: u64, experiments: u64, subjects: u64, body: &mut String) {
    let (e, s) = (n % experiments, (n / experiments) % subjects);
    let name = EVENT_NAMES[Rng::new(n).below(EVENT_NAMES.len() as u64) as usize];
    let _ = write!(
        body,
        "{{\"event_id\":\"o-{n}\",\"experiment\":\"{}\",\"subject_id\":\"o-{s}\",\
         \"event\":\"{name}\",\"value\":{}}}",
        other_key(e),
        if name == "revenue" { 19.5 } else { 1.0 }
    );
}

/// Where the history part's server keeps its data.
#[derive(Debug, Clone, Copy)]
enum Backend<'a> {
    Sqlite,
    Mongodb(&'a str),
}

impl Backend<'_> {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Mongodb(_) => "MongoDB",
        }
    }
}

/// One size of the history part.
#[derive(Debug)]
struct Stage {
    total: u64,
    /// Events added since the previous size, and how long that took.
    added: u64,
    fill: Duration,
    /// The triggered `aggregate` run that rolled them up (the call's time).
    aggregate: Duration,
    /// Sorted.
    results: Vec<Duration>,
    /// The evaluation runs' own durations (`report.duration_ms`), sorted.
    evaluations: Vec<Duration>,
    rss: u64,
}

/// The history part on one store.
#[derive(Debug)]
struct History {
    backend: &'static str,
    stages: Vec<Stage>,
}

/// A GET whose answer must be a 2xx: its time (to the last byte) and body.
async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> anyhow::Result<(Duration, bytes::Bytes)> {
    let t = Instant::now();
    let mut req = client.get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let elapsed = t.elapsed();
    if !status.is_success() {
        bail!("{url}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok((elapsed, body))
}

/// `n` timed calls of `url` (after one untimed), sorted; `check` sees every answer.
async fn timed_calls(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    n: usize,
    mut check: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let (_, body) = timed_get(client, url, key).await?;
    check(&body)?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, body) = timed_get(client, url, key).await?;
        check(&body)?;
        times.push(t);
    }
    times.sort_unstable();
    Ok(times)
}

/// Create and activate the experiments `keys`, a few at a time; `definition` gives each
/// one's body (its `key` included).
async fn create_experiments(
    client: &reqwest::Client,
    verdict: &str,
    keys: impl Iterator<Item = String>,
    definition: impl Fn(&str) -> Value,
) -> anyhow::Result<()> {
    futures::stream::iter(keys.map(|k| definition(&k)))
        .map(|d| running_experiment(client, verdict, d))
        .buffer_unordered(8)
        .try_collect::<()>()
        .await
}

/// An experiment's own subjects and events: how many, how they are named, how they are sent.
struct Own {
    experiment: &'static str,
    /// Subjects are `<prefix>-0`, `<prefix>-1`, …
    prefix: &'static str,
    subjects: u64,
    events: u64,
    /// Connections ingesting, and events per request.
    connections: usize,
    batch: u64,
}

/// Assign `own`'s subjects (32 connections), then ingest its events, event `n` written by
/// `event`; `whose` names them in errors.
async fn own_subjects_and_events(
    server: &Server,
    key: &str,
    own: Own,
    whose: &str,
    event: impl Fn(u64, &mut String) + Copy + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Own {
        experiment,
        prefix,
        subjects,
        events,
        connections,
        batch: size,
    } = own;
    let r = drive_n(
        server.addr,
        Some(key),
        32,
        subjects,
        Arc::new(move |i| {
            Req::get(format!(
                "/v1/experiments/{experiment}/assignment?subject_id={prefix}-{i}"
            ))
        }),
    )
    .await?;
    all_ok(&format!("assigning {whose} subjects"), &r)?;
    let r = drive_n(
        server.addr,
        Some(key),
        connections,
        events.div_ceil(size),
        Arc::new(move |i| {
            let from = i * size;
            Req::post(
                "/v1/events".into(),
                batch(from, (from + size).min(events), |n, b| event(n, b)),
            )
        }),
    )
    .await?;
    all_ok(&format!("ingesting {whose} events"), &r)
}

async fn history(
    common: &Common,
    args: &ScaleArgs,
    backend: Backend<'_>,
) -> anyhow::Result<History> {
    let dir = tempfile::tempdir()?;
    let database = format!("verdict_bench_scale_{}", uuid::Uuid::new_v4().simple());
    let env = match backend {
        Backend::Sqlite => Vec::new(),
        Backend::Mongodb(uri) => vec![
            ("VERDICT_STORE", "mongodb".to_owned()),
            ("VERDICT_MONGODB__URI", uri.to_owned()),
            ("VERDICT_MONGODB__DATABASE", database.clone()),
        ],
    };
    let server = start_verdict(common, dir.path(), &["--no-scheduler"], &env).await?;
    let outcome = history_on(args, backend, &server).await;
    server.stop().await;
    if let Backend::Mongodb(uri) = backend {
        mongodb::Client::with_uri_str(uri)
            .await?
            .database(&database)
            .drop()
            .await
            .context("dropping the benchmark's database")?;
    }
    outcome
}

async fn history_on(
    args: &ScaleArgs,
    backend: Backend<'_>,
    server: &Server,
) -> anyhow::Result<History> {
    let name = backend.name();
    let verdict = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let key = client_key(&client, &verdict).await?;
    let per = args.own_events_per_subject;
    let own_events = args.own_subjects * per;
    let (others, other_subjects, size) = (args.other_experiments, args.other_subjects, args.batch);

    eprintln!(
        "[{name}] the watched experiment: {} subjects, {} events …",
        thousands(args.own_subjects),
        thousands(own_events)
    );
    running_experiment(
        &client,
        &verdict,
        json!({
            "key": TARGET,
            "primary_metric": {"event": "conversion", "window_hours": WINDOW_HOURS},
            "secondary_metrics": [{"event": "revenue", "kind": "sum", "window_hours": WINDOW_HOURS}],
            "exposure_event": EXPOSURE,
            // Never enough subjects for a decision: every evaluation reads the figures and
            // the experiment stays running.
            "policy": {"min_assignments": 1_000_000_000u64}
        }),
    )
    .await?;
    own_subjects_and_events(
        server,
        &key,
        Own {
            experiment: TARGET,
            prefix: "t",
            subjects: args.own_subjects,
            events: own_events,
            connections: args.ingest_connections,
            batch: size,
        },
        "the watched experiment's",
        move |n, b| own_event(n, per, b),
    )
    .await?;

    eprintln!(
        "[{name}] {others} other experiments, {} subjects each …",
        thousands(other_subjects)
    );
    create_experiments(&client, &verdict, (0..others).map(other_key), |k| {
        json!({
            "key": k,
            "primary_metric": {"event": "conversion"},
            "secondary_metrics": [{"event": "revenue", "kind": "sum"}]
        })
    })
    .await?;
    let r = drive_n(
        server.addr,
        Some(&key),
        32,
        others * other_subjects,
        Arc::new(move |i| {
            Req::get(format!(
                "/v1/experiments/{}/assignment?subject_id=o-{}",
                other_key(i % others),
                i / others
            ))
        }),
    )
    .await?;
    all_ok("assigning the other experiments' subjects", &r)?;

    let mut stages = Vec::new();
    let (mut stored, mut next, mut unrolled) = (own_events, 0u64, own_events);
    // The watched experiment's figures, which must not change as the store grows.
    let mut figures: Option<(u64, u64)> = None;
    for &total in &args.sizes {
        let added = total - stored;
        eprintln!(
            "[{name}] filling to {} events (+{}) …",
            thousands(total),
            thousands(added)
        );
        let first = next;
        let r = drive_n(
            server.addr,
            Some(&key),
            args.ingest_connections,
            added.div_ceil(size),
            Arc::new(move |i| {
                let from = first + i * size;
                Req::post(
                    "/v1/events".into(),
                    batch(from, (from + size).min(first + added), |n, b| {
                        other_event(n, others, other_subjects, b)
                    }),
                )
            }),
        )
        .await?;
        all_ok("ingesting the other experiments' events", &r)?;
        let fill = r.elapsed;
        (stored, next, unrolled) = (total, next + added, unrolled + added);

        let (record, aggregate) = trigger(&client, &verdict, "aggregate", "").await?;
        let folded = record["report"]["events"].as_u64().unwrap_or(0);
        if folded != unrolled {
            bail!(
                "the aggregate run rolled up {folded} events, not the {unrolled} ingested \
                 (some were not accepted?): {record}"
            );
        }
        unrolled = 0;
        eprintln!(
            "[{name}]   {:.0} events/s; aggregate {}; results and evaluation …",
            added as f64 / fill.as_secs_f64(),
            human(aggregate)
        );

        let url = format!("{verdict}/v1/experiments/{TARGET}/results");
        let results = timed_calls(&client, &url, Some(ADMIN_KEY), args.results_calls, |b| {
            let v: Value = serde_json::from_slice(b)?;
            let v = &v["metrics"][0];
            if v["source"] != "raw_events" {
                bail!("results not counted from raw events: {}", v["source"]);
            }
            let variants = v["variants"]
                .as_array()
                .context("no variants in the results")?;
            let sum = |f: &str| variants.iter().filter_map(|x| x[f].as_u64()).sum::<u64>();
            let seen = (sum("subjects"), sum("conversions"));
            if seen.0 != args.own_subjects || figures.is_some_and(|f| f != seen) {
                bail!(
                    "the watched experiment's figures changed: {seen:?} subjects and \
                     conversions (expected {} subjects, {figures:?} before)",
                    args.own_subjects
                );
            }
            figures = Some(seen);
            Ok(())
        })
        .await?;

        let mut evaluations = Vec::with_capacity(args.evaluations);
        for _ in 0..args.evaluations.max(1) {
            let query = format!("?experiment={TARGET}");
            let (record, _) = trigger(&client, &verdict, "evaluate", &query).await?;
            let report = &record["report"];
            if report["evaluated"] != 1 || report["outcomes"][0]["outcome"] != "no_decision" {
                bail!("the evaluation of {TARGET} did not read its figures: {record}");
            }
            let run_ms = report["duration_ms"]
                .as_f64()
                .context("no report.duration_ms in the evaluate run")?;
            evaluations.push(Duration::from_secs_f64(run_ms / 1e3));
        }
        evaluations.sort_unstable();
        let stage = Stage {
            total,
            added,
            fill,
            aggregate,
            results,
            evaluations,
            rss: server.rss()?,
        };
        eprintln!(
            "[{name}]   results p50 {}, p95 {}; evaluation median {}",
            ms(percentile(&stage.results, 0.5)),
            ms(percentile(&stage.results, 0.95)),
            ms(percentile(&stage.evaluations, 0.5))
        );
        stages.push(stage);
    }
    Ok(History {
        backend: name,
        stages,
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn history_report(args: &ScaleArgs, conditions: &str, stores: &[History]) -> String {
    let own_events = args.own_subjects * args.own_events_per_subject;
    let mut out = format!(
        "Measured by `{}` {conditions}. The watched experiment: {} subjects and {} events of \
         its own (a {WINDOW_HOURS}-hour window on both metrics and an exposure event, so \
         results and evaluation count raw events at query time); the rest of the store: \
         events of {} other running experiments ({} subjects each), added through `POST \
         /v1/events` (batches of {}, {} connections) before each measurement and then rolled \
         up by a triggered `aggregate` run. Results: `GET /v1/experiments/{TARGET}/results`, \
         {} timed calls one after another after an untimed one; evaluation: {} triggered \
         `evaluate` runs narrowed to the experiment (`?experiment={TARGET}`), each run's own \
         duration.\n\n\
         | store | events in the store | filled at | `aggregate` of the added events | \
         results p50 | results p95 | evaluation median | evaluation max | server RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        command_line(),
        thousands(args.own_subjects),
        thousands(own_events),
        args.other_experiments,
        thousands(args.other_subjects),
        args.batch,
        args.ingest_connections,
        args.results_calls,
        args.evaluations.max(1),
    );
    for h in stores {
        for s in &h.stages {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                h.backend,
                thousands(s.total),
                if s.added == 0 {
                    "—".into()
                } else {
                    format!(
                        "{} events/s",
                        thousands((s.added as f64 / s.fill.as_secs_f64()) as u64)
                    )
                },
                human(s.aggregate),
                ms(percentile(&s.results, 0.5)),
                ms(percentile(&s.results, 0.95)),
                ms(percentile(&s.evaluations, 0.5)),
                ms(s.evaluations.last().copied().unwrap_or_default()),
                mb(s.rss),
            );
        }
    }
    for h in stores {
        let [.., small, large] = h.stages.as_slice() else {
            continue;
        };
        let ratio =
            |f: fn(&Stage) -> Duration| f(large).as_secs_f64() / f(small).as_secs_f64().max(1e-9);
        let results = ratio(|s| percentile(&s.results, 0.5));
        let evaluation = ratio(|s| percentile(&s.evaluations, 0.5));
        let met = |r: f64| if r <= 1.5 { "met" } else { "missed" };
        let _ = writeln!(
            out,
            "\n{}, {} against {} events (target ≤ 1.5×): results p50 **{results:.2}×** ({}), \
             evaluation median **{evaluation:.2}×** ({}).",
            h.backend,
            thousands(large.total),
            thousands(small.total),
            met(results),
            met(evaluation),
        );
    }
    out
}

/// One RSS reading of the subjects part.
#[derive(Debug)]
struct SubjectsRow {
    subjects: u64,
    /// The assignments since the previous reading.
    rate: Option<f64>,
    p99: Option<Duration>,
    rss: u64,
    peak: u64,
}

async fn subjects(common: &Common, args: &ScaleArgs) -> anyhow::Result<Vec<SubjectsRow>> {
    let dir = tempfile::tempdir()?;
    let server = start_verdict(common, dir.path(), &["--no-scheduler"], &[]).await?;
    let verdict = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let key = client_key(&client, &verdict).await?;
    running_experiment(
        &client,
        &verdict,
        json!({"key": "subjects", "primary_metric": {"event": "conversion"}}),
    )
    .await?;
    let mut rows = vec![SubjectsRow {
        subjects: 0,
        rate: None,
        p99: None,
        rss: server.rss()?,
        peak: server.peak_rss()?,
    }];
    let mut done = 0u64;
    for &target in &args.subjects {
        eprintln!(
            "[subjects] assigning new subjects up to {} …",
            thousands(target)
        );
        let first = done;
        let r = drive_n(
            server.addr,
            Some(&key),
            args.connections,
            target - done,
            Arc::new(move |i| {
                Req::get(format!(
                    "/v1/experiments/subjects/assignment?subject_id=n-{}",
                    first + i
                ))
            }),
        )
        .await?;
        all_ok("assigning new subjects", &r)?;
        done = target;
        let row = SubjectsRow {
            subjects: target,
            rate: Some(r.per_second()),
            p99: Some(r.p99),
            rss: server.rss()?,
            peak: server.peak_rss()?,
        };
        eprintln!(
            "[subjects]   {:.0} assignments/s; RSS {} (peak {})",
            r.per_second(),
            mb(row.rss),
            mb(row.peak)
        );
        rows.push(row);
    }
    server.stop().await;
    Ok(rows)
}

fn subjects_report(args: &ScaleArgs, conditions: &str, rows: &[SubjectsRow]) -> String {
    let mut out = format!(
        "Measured by `{}` {conditions}; one running experiment, new subjects assigned \
         through `GET /v1/experiments/subjects/assignment` over {} connections (closed \
         loop), RSS (`VmRSS`) and peak RSS (`VmHWM`) of the server read after each step; \
         SQLite store.\n\n\
         | distinct subjects assigned | assignments/s (this step) | p99 (this step) | RSS | peak RSS |\n\
         |---:|---:|---:|---:|---:|\n",
        command_line(),
        args.connections,
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            thousands(r.subjects),
            r.rate.map_or("—".into(), |x| thousands(x as u64)),
            r.p99.map_or("—".into(), ms),
            mb(r.rss),
            mb(r.peak),
        );
    }
    out
}

/// One scrape measurement of the metrics part.
#[derive(Debug)]
struct MetricsRow {
    experiments: u64,
    /// Sorted.
    times: Vec<Duration>,
    bytes: usize,
}

async fn metrics(common: &Common, args: &ScaleArgs) -> anyhow::Result<Vec<MetricsRow>> {
    let dir = tempfile::tempdir()?;
    let server = start_verdict(common, dir.path(), &["--no-scheduler"], &[]).await?;
    let verdict = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let key = client_key(&client, &verdict).await?;
    let mut rows = Vec::new();
    let mut made = 0u64;
    for &n in &args.experiments {
        eprintln!("[metrics] {n} running experiments …");
        create_experiments(
            &client,
            &verdict,
            (made..n).map(|i| format!("m-{i:04}")),
            |k| json!({"key": k, "primary_metric": {"event": "conversion"}}),
        )
        .await?;
        // Something of each experiment in the process: a subject assigned and an event.
        for i in made..n {
            let url = format!("{verdict}/v1/experiments/m-{i:04}/assignment?subject_id=u-1");
            call(&client, reqwest::Method::GET, url, &key, None).await?;
            let event = json!({"experiment": format!("m-{i:04}"), "subject_id": "u-1", "event": "conversion"});
            call(
                &client,
                reqwest::Method::POST,
                format!("{verdict}/v1/events"),
                &key,
                Some(event),
            )
            .await?;
        }
        made = n;
        let bytes = std::cell::Cell::new(0);
        let times = timed_calls(
            &client,
            &format!("{verdict}/metrics"),
            None,
            args.scrapes,
            |b| {
                bytes.set(b.len());
                Ok(())
            },
        )
        .await?;
        eprintln!(
            "[metrics]   p50 {}, p95 {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95))
        );
        rows.push(MetricsRow {
            experiments: n,
            times,
            bytes: bytes.get(),
        });
    }
    server.stop().await;
    Ok(rows)
}

fn metrics_report(args: &ScaleArgs, conditions: &str, rows: &[MetricsRow]) -> String {
    let mut out = format!(
        "Measured by `{}` {conditions}; each experiment running with one subject assigned \
         and one event ingested; {} timed `GET /metrics` one after another after an untimed \
         one; SQLite store.\n\n\
         | running experiments | scrape p50 | scrape p95 | body |\n|---:|---:|---:|---:|\n",
        command_line(),
        args.scrapes,
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            thousands(r.experiments),
            ms(percentile(&r.times, 0.5)),
            ms(percentile(&r.times, 0.95)),
            if r.bytes >= 10_000 {
                format!("{:.0} kB", r.bytes as f64 / 1e3)
            } else {
                format!("{} B", r.bytes)
            },
        );
    }
    out
}

/// One measurement of the publish part.
struct PublishRow {
    experiments: u64,
    /// Manual publishes of the unchanged scope, sorted.
    unchanged: Vec<Duration>,
    /// Status changes of a running experiment (pause or resume), each publishing a new
    /// version, sorted.
    live_change: Vec<Duration>,
    /// The same changes of a draft's description, which publish nothing, sorted.
    draft_change: Vec<Duration>,
    /// The snapshot's size.
    bytes: u64,
}

/// A timed admin call that must succeed.
async fn timed_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> anyhow::Result<(Duration, Value)> {
    let t = Instant::now();
    let v = call(client, method, url, ADMIN_KEY, body).await?;
    Ok((t.elapsed(), v))
}

async fn publish(common: &Common, args: &ScaleArgs) -> anyhow::Result<Vec<PublishRow>> {
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("published");
    let server = start_verdict(
        common,
        dir.path(),
        &["--no-scheduler"],
        &[("VERDICT_PUBLISH__DIRECTORY", target.display().to_string())],
    )
    .await?;
    let verdict = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let draft = call(
        &client,
        reqwest::Method::POST,
        format!("{verdict}/v1/experiments"),
        ADMIN_KEY,
        Some(json!({"key": "draft", "variants": [{"key": "a"}, {"key": "b"}]})),
    )
    .await?;
    let mut draft_version = draft["version"].clone();
    let mut rows = Vec::new();
    let mut made = 0u64;
    for &n in &args.experiments {
        eprintln!("[publish] {n} running experiments …");
        create_experiments(
            &client,
            &verdict,
            (made..n).map(|i| format!("p-{i:04}")),
            |k| {
                json!({"key": k, "coverage": 0.9,
                    "targeting": [{"conditions": [{"attribute": "country", "operator": "in", "value": ["US", "FR"]}]}]})
            },
        )
        .await?;
        made = n;
        let publish_url = format!("{verdict}/v1/environments/production/publish");
        let status_url = format!("{verdict}/v1/experiments/p-0000/status");
        let mut row = PublishRow {
            experiments: n,
            unchanged: Vec::new(),
            live_change: Vec::new(),
            draft_change: Vec::new(),
            bytes: 0,
        };
        for i in 0..args.publishes {
            let (t, answer) =
                timed_call(&client, reqwest::Method::POST, publish_url.clone(), None).await?;
            if answer["created"] != false {
                bail!("a publish of an unchanged scope recorded a version: {answer}");
            }
            row.bytes = row
                .bytes
                .max(answer["publication"]["size"].as_u64().unwrap_or_default());
            row.unchanged.push(t);
            let to = if i % 2 == 0 { "paused" } else { "running" };
            let (t, _) = timed_call(
                &client,
                reqwest::Method::POST,
                status_url.clone(),
                Some(json!({"status": to})),
            )
            .await?;
            row.live_change.push(t);
            let (t, edited) = timed_call(
                &client,
                reqwest::Method::PATCH,
                format!("{verdict}/v1/experiments/draft"),
                Some(json!({"version": draft_version, "description": format!("edit {i}")})),
            )
            .await?;
            draft_version = edited["version"].clone();
            row.draft_change.push(t);
        }
        if args.publishes % 2 == 1 {
            call(
                &client,
                reqwest::Method::POST,
                status_url,
                ADMIN_KEY,
                Some(json!({"status": "running"})),
            )
            .await?;
        }
        for v in [
            &mut row.unchanged,
            &mut row.live_change,
            &mut row.draft_change,
        ] {
            v.sort_unstable();
        }
        eprintln!(
            "[publish]   unchanged p50 {}, live change p50 {}, draft change p50 {}",
            ms(percentile(&row.unchanged, 0.5)),
            ms(percentile(&row.live_change, 0.5)),
            ms(percentile(&row.draft_change, 0.5)),
        );
        rows.push(row);
    }
    server.stop().await;
    Ok(rows)
}

fn publish_report(args: &ScaleArgs, conditions: &str, rows: &[PublishRow]) -> String {
    let mut out = format!(
        "Measured by `{}` {conditions}; running experiments with targeting and coverage, a \
         directory target; SQLite store; {} of each call one after another: \
         `POST /v1/environments/production/publish` of the unchanged scope (compiles every \
         live experiment, finds the latest version equal, records nothing), a status change \
         of a running experiment (pause or resume: the change, then a publish that records \
         and writes a new version), and a `PATCH` of a draft (a change that publishes \
         nothing), p50 / p95.\n\n\
         | running experiments | snapshot | publish, unchanged | live change + publish | \
         draft change | publish's share of a live change (p50) |\n\
         |---:|---:|---:|---:|---:|---:|\n",
        command_line(),
        args.publishes,
    );
    for r in rows {
        let p50 = |v: &[Duration]| percentile(v, 0.5);
        let pair = |v: &[Duration]| format!("{} / {}", ms(p50(v)), ms(percentile(v, 0.95)));
        let share = p50(&r.live_change).saturating_sub(p50(&r.draft_change));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            thousands(r.experiments),
            if r.bytes >= 10_000 {
                format!("{:.0} kB", r.bytes as f64 / 1e3)
            } else {
                format!("{} B", r.bytes)
            },
            pair(&r.unchanged),
            pair(&r.live_change),
            pair(&r.draft_change),
            ms(share),
        );
    }
    out
}

/// The console's pages, each with its load times (sorted).
type PageTimes = Vec<(&'static str, Vec<Duration>)>;

/// An event of the console part's experiment: `n`'s subject, a conversion for some, revenue
/// for others, page views for the rest.
fn console_event(n: u64, subjects: u64, body: &mut String) {
    let s = n % subjects;
    let (name, value) = match n % 10 {
        0 if s.is_multiple_of(3) => ("conversion", 1.0),
        1 if s.is_multiple_of(4) => ("revenue", 5.0 + (n % 95) as f64),
        _ => ("page_view", 1.0),
    };
    let _ = write!(
        body,
        "{{\"event_id\":\"c-{n}\",\"experiment\":\"{CONSOLE_EXPERIMENT}\",\
         \"subject_id\":\"c-{s}\",\"event\":\"{name}\",\"value\":{value}}}"
    );
}

/// The console part: one running experiment with `--console-events` events rolled up, then
/// each console page loaded `--page-loads` times by a signed-in admin.
async fn console(common: &Common, args: &ScaleArgs) -> anyhow::Result<PageTimes> {
    let dir = tempfile::tempdir()?;
    let server = start_verdict(common, dir.path(), &["--no-scheduler"], &[]).await?;
    let outcome = console_on(args, &server).await;
    server.stop().await;
    outcome
}

async fn console_on(args: &ScaleArgs, server: &Server) -> anyhow::Result<PageTimes> {
    let verdict = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let key = client_key(&client, &verdict).await?;
    let (subjects, events, size) = (args.console_subjects, args.console_events, 500);
    running_experiment(
        &client,
        &verdict,
        json!({
            "key": CONSOLE_EXPERIMENT,
            "variants": [{"key": "control"}, {"key": "treatment"}, {"key": "variant-b"}],
            "primary_metric": {"event": "conversion"},
            "secondary_metrics": [{"event": "revenue", "kind": "sum"}],
            "policy": {"min_assignments": 1_000_000_000u64}
        }),
    )
    .await?;
    eprintln!(
        "[console] {} subjects, {} events …",
        thousands(subjects),
        thousands(events)
    );
    own_subjects_and_events(
        server,
        &key,
        Own {
            experiment: CONSOLE_EXPERIMENT,
            prefix: "c",
            subjects,
            events,
            connections: args.ingest_connections,
            batch: size,
        },
        "the console experiment's",
        move |n, b| console_event(n, subjects, b),
    )
    .await?;
    let (record, _) = trigger(&client, &verdict, "aggregate", "").await?;
    let folded = record["report"]["events"].as_u64().unwrap_or(0);
    if folded != events {
        bail!("the aggregate run rolled up {folded} events, not {events}: {record}");
    }
    // One evaluation, so the experiment page draws its history charts.
    let (evaluated, _) = trigger(&client, &verdict, "evaluate", "").await?;
    if evaluated["report"]["history_points"].as_u64() != Some(1) {
        bail!("the evaluate run recorded no history point: {evaluated}");
    }

    // An audience, for the audiences pages.
    let made = client
        .post(format!("{verdict}/v1/environments/production/audiences"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"key": CONSOLE_AUDIENCE, "rules": [{"conditions": [
            {"attribute": "country", "operator": "in", "value": ["DE", "AT", "CH"]}
        ]}]}))
        .send()
        .await?;
    if !made.status().is_success() {
        bail!("creating the audience: {}", made.text().await?);
    }

    // Signed in as the console's users are: a session cookie from the sign-in form.
    let signed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = signed
        .post(format!("{verdict}/admin/sign-in"))
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await?;
    let cookie = answer
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the sign-in set no session cookie")?
        .to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookie.parse()?);
    let signed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()?;
    let mut pages = Vec::new();
    // What each page must show: the list, the experiment's row; the experiment page, a
    // results row of each metric's last variant; the operations page, the aggregate run
    // above among the runs its chart counts.
    let aggregate_run = record["id"].as_str().unwrap_or_default().to_owned();
    for (name, path, shows) in [
        (
            "experiments list",
            "/admin".to_owned(),
            format!(">{CONSOLE_EXPERIMENT}</a>"),
        ),
        (
            "experiment (definition, results and charts, assignments, forced variants, deliveries, audit)",
            format!("/admin/experiments/{CONSOLE_EXPERIMENT}"),
            "data-series=\"variant-b\"".to_owned(),
        ),
        (
            "edit (definition and variants forms)",
            format!("/admin/experiments/{CONSOLE_EXPERIMENT}/edit"),
            "id=\"f-policy-alpha\"".to_owned(),
        ),
        (
            "new experiment (form with the defaults)",
            "/admin/new-experiment".to_owned(),
            "id=\"f-policy-min_assignments\"".to_owned(),
        ),
        (
            "operations (jobs, throughput chart, webhooks, readiness)",
            "/admin/operations".to_owned(),
            format!("<tr data-run=\"{aggregate_run}\">"),
        ),
        (
            "environments (list and new-environment form)",
            "/admin/environments".to_owned(),
            "data-environment=\"production\"".to_owned(),
        ),
        (
            "audiences (list and new-audience form)",
            "/admin/audiences".to_owned(),
            format!("data-audience=\"{CONSOLE_AUDIENCE}\""),
        ),
        (
            "audience (rules form)",
            format!("/admin/audiences/{CONSOLE_AUDIENCE}"),
            "id=\"f-rules\"".to_owned(),
        ),
        (
            "webhooks (endpoints and new-endpoint form)",
            "/admin/webhooks".to_owned(),
            "id=\"new-endpoint\"".to_owned(),
        ),
        (
            "API keys (keys and new-key form)",
            "/admin/api-keys".to_owned(),
            "id=\"new-key\"".to_owned(),
        ),
    ] {
        let url = format!("{verdict}{path}");
        let times = timed_calls(&signed, &url, None, args.page_loads, |body| {
            let page = String::from_utf8_lossy(body);
            if page.contains(&shows) {
                Ok(())
            } else {
                bail!("{path} does not show {shows}")
            }
        })
        .await?;
        eprintln!(
            "[console]   {name}: p50 {}, p95 {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95))
        );
        pages.push((name, times));
    }
    Ok(pages)
}

fn console_report(args: &ScaleArgs, conditions: &str, pages: &PageTimes) -> String {
    let mut out = format!(
        "Measured by `{}` {conditions}; SQLite store; one running experiment with three \
         variants, {} subjects and {} events rolled up (a binomial primary metric, a sum \
         metric, page views) and one evaluation recorded for its charts; each page loaded {} times one after another by a signed-in \
         admin (after one untimed load), from the request to the last byte.\n\n\
         | page | p50 | p95 | target |\n|---|---:|---:|---|\n",
        command_line(),
        thousands(args.console_subjects),
        thousands(args.console_events),
        args.page_loads,
    );
    for (name, times) in pages {
        let p95 = percentile(times, 0.95);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | ≤ 50 ms: {} |",
            ms(percentile(times, 0.5)),
            ms(p95),
            if p95 <= Duration::from_millis(50) {
                "met"
            } else {
                "**missed**"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_batch_is_one_json_body_naming_the_other_experiments() {
        let body = batch(10, 15, |n, b| other_event(n, 3, 7, b));
        let v: Value = serde_json::from_str(&body).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0]["event_id"], "o-10");
        assert_eq!(events[0]["experiment"], "other-001");
        assert_eq!(events[0]["subject_id"], "o-3");
    }

    #[test]
    fn every_watched_subject_starts_with_its_exposure() {
        let body = batch(0, 30, |n, b| own_event(n, 10, b));
        let v: Value = serde_json::from_str(&body).unwrap();
        let events = v["events"].as_array().unwrap();
        for s in 0..3 {
            assert_eq!(events[s * 10]["event"], EXPOSURE);
            assert_eq!(events[s * 10]["subject_id"], format!("t-{s}"));
        }
        assert!(events.iter().any(|e| e["event"] == "conversion"));
    }
}
