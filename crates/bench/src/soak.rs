//! `verdict-bench soak`: a long mixed load at a moderate fixed rate (not saturation) on a
//! `verdict serve` whose scheduler runs every job often, sampled every minute and judged at
//! the end. Not for CI: the default run lasts 30 minutes.
//!
//! The server: an embedded SQLite store, `aggregate` every 30 s, `evaluate` and
//! `retention` every minute, `lifecycle` and `publish` every minute (their defaults), the
//! `webhooks` delivery loop continuously, one webhook endpoint on a local counting receiver. The load ([`crate::load::paced`], open loop,
//! latency from when each request was due): assignment of repeat subjects, event batches,
//! results and winner reads of one experiment, assignment of new subjects in another, and
//! now and then a status change of a third (each one a webhook message). Each minute: the
//! server's RSS, requests done, errors (any non-2xx or transport error) and p50/p99 per
//! operation.
//!
//! The judgement: no errors; RSS flat after warm-up (the largest RSS of the last third of
//! the run within `--rss-tolerance` of the largest of the middle third, the baseline: the
//! first third is warm-up, while SQLite's bounded page caches fill as the store grows, which
//! at the default load takes about a quarter of an hour); each operation's p99 not growing (the p99 of the last sixth within
//! `--p99-tolerance` of the baseline's, plus `--p99-slack-ms` so sub-millisecond noise does
//! not decide); every job run succeeded; every status change delivered to the receiver;
//! every event accepted rolled up. Windows shrink with the run, never below a minute, so
//! `--minutes 2` works as a smoke run.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use verdict_bench::{Rng, percentile, thousands};

use crate::load::{Req, Sample, drive_n, paced};
use crate::procs::{self, Server};
use crate::{
    ADMIN_KEY, Common, all_ok, call, command_line, ms, pinning, running_experiment, start_verdict,
    trigger,
};

const SECTION: &str = "verdict-bench-soak";
const EXPERIMENT: &str = "soak";
/// The experiment new subjects are assigned in: the assignments table, the assignment cache
/// and the store keep growing, while the subjects of [`EXPERIMENT`], whose results are read,
/// stay the pre-assigned ones (a results read passes once over its experiment's assigned
/// subjects, so its cost follows their number, which a soak must not confuse with growth
/// over time).
const GROWING: &str = "soak-new";
/// The experiment whose status changes make the webhook messages.
const TOGGLED: &str = "soak-toggled";
const JOBS: [&str; 6] = [
    "aggregate",
    "evaluate",
    "lifecycle",
    "retention",
    "webhooks",
    "publish",
];
/// The schedules the soak gives the cron jobs (`webhooks` runs continuously anyway).
const SCHEDULES: [(&str, &str); 3] = [
    ("VERDICT_JOBS__AGGREGATE_SCHEDULE", "0,30 * * * * *"),
    ("VERDICT_JOBS__EVALUATE_SCHEDULE", "10 * * * * *"),
    ("VERDICT_JOBS__RETENTION_SCHEDULE", "40 * * * * *"),
];

/// The operations of the mix, in the order of the table's columns.
const OPS: [&str; 6] = [
    "assignment, repeat",
    "assignment, new",
    "events",
    "results",
    "winner",
    "status change",
];
const REPEAT: usize = 0;
const NEW: usize = 1;
const EVENTS: usize = 2;
const RESULTS: usize = 3;
const WINNER: usize = 4;
const STATUS: usize = 5;

/// Request `i`'s operation: of 200, 1 status change and 2 results reads (a results read
/// costs tens of milliseconds of the server's CPU, the rest well under one); of the others,
/// per 20: 11 repeat assignments, 3 new ones, 4 event batches, 2 winner reads.
fn op_of(i: u64) -> usize {
    match i % 200 {
        0 => return STATUS,
        50 | 150 => return RESULTS,
        _ => {}
    }
    match i % 20 {
        0..=10 => REPEAT,
        11..=13 => NEW,
        14..=17 => EVENTS,
        _ => WINNER,
    }
}

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes (at least 2).
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Requests per second, all operations together.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Connections the requests share.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Subjects assigned before the run; repeat assignments and events name them.
    #[arg(long, default_value_t = 10_000)]
    subjects: u64,
    /// Events per ingestion request.
    #[arg(long, default_value_t = 50)]
    event_batch: u64,
    /// RSS flat: the last window's largest RSS at most this fraction above the baseline's.
    #[arg(long, default_value_t = 0.10)]
    rss_tolerance: f64,
    /// p99 not growing: the last window's p99 at most this fraction above the baseline's …
    #[arg(long, default_value_t = 0.50)]
    p99_tolerance: f64,
    /// … plus this many milliseconds.
    #[arg(long, default_value_t = 2.0)]
    p99_slack_ms: f64,
    /// The server's `server.assignment_cache_mb`: small enough that the cache of repeat
    /// subjects reaches its bound during warm-up (new subjects keep arriving), so memory
    /// after warm-up says whether anything else grows.
    #[arg(long, default_value_t = 4)]
    assignment_cache_mb: u64,
    /// Seconds per sample (a "minute" of the table); shorter only to try the command out.
    #[arg(long, default_value_t = 60, hide = true)]
    sample_seconds: u64,
}

/// The minutes (1-based, inclusive) the judgement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Windows {
    /// After warm-up: the middle third (minutes 11–20 of 30).
    baseline: (u64, u64),
    /// The RSS compared with the baseline's: the last third (21–30 of 30).
    rss: (u64, u64),
    /// The p99 compared with the baseline's: the last sixth (26–30 of 30).
    p99: (u64, u64),
}

impl Windows {
    fn of(minutes: u64) -> Self {
        let start = minutes / 3 + 1;
        let last = |len: u64| (minutes + 1 - len.max(1), minutes);
        Self {
            baseline: (start, (2 * minutes / 3).max(start)),
            rss: last(minutes / 3),
            p99: last(minutes / 6),
        }
    }
}

fn span((a, b): (u64, u64)) -> String {
    if a == b {
        format!("minute {a}")
    } else {
        format!("minutes {a}–{b}")
    }
}

/// One row of the table.
#[derive(Debug, Default)]
struct Minute {
    requests: u64,
    errors: u64,
    rss: u64,
    peak: u64,
    /// Per operation, sorted (answered requests only).
    latencies: [Vec<Duration>; OPS.len()],
    /// Successful event batches.
    event_batches: u64,
    /// Successful status changes.
    status_changes: u64,
}

impl Minute {
    fn add(&mut self, samples: Vec<Sample>) {
        for s in samples {
            self.requests += 1;
            match s.error {
                Some(e) => {
                    if self.errors == 0 {
                        eprintln!("  error ({}): {e}", OPS[s.op]);
                    }
                    self.errors += 1;
                }
                None => {
                    self.latencies[s.op].push(s.latency);
                    self.event_batches += u64::from(s.op == EVENTS);
                    self.status_changes += u64::from(s.op == STATUS);
                }
            }
        }
        for l in &mut self.latencies {
            l.sort_unstable();
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The p99 of operation `op` over the minutes `w`.
fn window_p99(minutes: &[Minute], w: (u64, u64), op: usize) -> Option<Duration> {
    let mut all: Vec<Duration> = minutes[(w.0 - 1) as usize..w.1 as usize]
        .iter()
        .flat_map(|m| m.latencies[op].iter().copied())
        .collect();
    all.sort_unstable();
    (!all.is_empty()).then(|| percentile(&all, 0.99))
}

fn window_max_rss(minutes: &[Minute], w: (u64, u64)) -> u64 {
    minutes[(w.0 - 1) as usize..w.1 as usize]
        .iter()
        .map(|m| m.rss)
        .max()
        .unwrap_or(0)
}

/// Each job's runs: how many, how many failed, and what `aggregate` rolled up.
#[derive(Debug, Default)]
struct JobRuns {
    runs: [u64; JOBS.len()],
    failed: [u64; JOBS.len()],
    first_failure: Option<String>,
    events_rolled_up: u64,
}

async fn job_runs(client: &reqwest::Client, verdict: &str) -> anyhow::Result<JobRuns> {
    let mut out = JobRuns::default();
    for (j, job) in JOBS.iter().enumerate() {
        let mut page = 1u64;
        loop {
            let url = format!("{verdict}/v1/internal/jobs/{job}/runs?page={page}&page_size=100");
            let v = call(client, reqwest::Method::GET, url, ADMIN_KEY, None).await?;
            for r in v["data"].as_array().context("no data in a page of runs")? {
                out.runs[j] += 1;
                if r["outcome"] == "failed" {
                    out.failed[j] += 1;
                    out.first_failure
                        .get_or_insert_with(|| format!("{job}: {}", r["error"]));
                }
                if *job == "aggregate" {
                    out.events_rolled_up += r["report"]["events"].as_u64().unwrap_or(0);
                }
            }
            if page >= v["pagination"]["total_pages"].as_u64().unwrap_or(0) {
                break;
            }
            page += 1;
        }
    }
    Ok(out)
}

/// Trigger one more `aggregate` run, waiting while a scheduled one holds the lease.
async fn aggregate_now(client: &reqwest::Client, verdict: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        match trigger(client, verdict, "aggregate", "").await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("lease_held") => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => return Err(e),
        }
    }
    bail!("the aggregate job's lease stayed held for a minute")
}

pub async fn run(common: &Common, args: SoakArgs) -> anyhow::Result<bool> {
    if args.minutes < 2 {
        bail!("--minutes must be at least 2 (the judgement compares two windows)");
    }
    if args.subjects == 0 || args.event_batch == 0 || args.rate <= 0.0 {
        bail!("--subjects, --event-batch and --rate must be positive");
    }
    let dir = tempfile::tempdir()?;
    let env: Vec<(&str, String)> = SCHEDULES
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .chain([(
            "VERDICT_SERVER__ASSIGNMENT_CACHE_MB",
            args.assignment_cache_mb.to_string(),
        )])
        .collect();
    let server = start_verdict(common, dir.path(), &[], &env).await?;
    let outcome = soak(common, &args, &server).await;
    if outcome.is_err() {
        eprintln!(
            "the server's log ({}):\n{}",
            dir.path().join("verdict.log").display(),
            std::fs::read_to_string(dir.path().join("verdict.log")).unwrap_or_default()
        );
    }
    server.stop().await;
    let (report, passed) = outcome?;
    println!("{report}");
    if let Some(path) = &common.write {
        verdict_bench::write_section(path, SECTION, &report)?;
    }
    Ok(passed)
}

async fn soak(common: &Common, args: &SoakArgs, server: &Server) -> anyhow::Result<(String, bool)> {
    let verdict = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    eprintln!(
        "setting up: three experiments, {} subjects, a webhook endpoint …",
        args.subjects
    );
    running_experiment(
        &client,
        &verdict,
        json!({
            "key": EXPERIMENT,
            "primary_metric": {"event": "conversion"},
            "secondary_metrics": [{"event": "revenue", "kind": "sum"}],
            // No decision: the experiment keeps running and taking events all along.
            "policy": {"min_assignments": 1_000_000_000u64}
        }),
    )
    .await?;
    running_experiment(&client, &verdict, json!({"key": TOGGLED})).await?;
    running_experiment(&client, &verdict, json!({"key": GROWING})).await?;
    let r = drive_n(
        server.addr,
        Some(ADMIN_KEY),
        32,
        args.subjects,
        Arc::new(|i| {
            Req::get(format!(
                "/v1/experiments/{EXPERIMENT}/assignment?subject_id=user-{i}"
            ))
        }),
    )
    .await?;
    all_ok("assigning the subjects", &r)?;
    let (hook_base, received) = verdict_bench::counting_receiver().await?;
    call(
        &client,
        reqwest::Method::POST,
        format!("{verdict}/v1/webhooks/endpoints"),
        ADMIN_KEY,
        Some(json!({"url": format!("{hook_base}/hook"), "event_types": ["experiment.status_changed", "experiment.winner_changed"]})),
    )
    .await
    .context("creating the webhook endpoint")?;
    // Messages written before the endpoint existed (the activations) may reach it too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received_before = received.load(Ordering::Relaxed);

    let (subjects, batch) = (args.subjects, args.event_batch);
    let make: Arc<dyn Fn(u64) -> (usize, Req) + Send + Sync> = Arc::new(move |i| {
        let op = op_of(i);
        let req = match op {
            REPEAT => Req::get(format!(
                "/v1/experiments/{EXPERIMENT}/assignment?subject_id=user-{}",
                Rng::new(i).below(subjects)
            )),
            NEW => Req::get(format!(
                "/v1/experiments/{GROWING}/assignment?subject_id=new-{i}"
            )),
            EVENTS => Req::post("/v1/events".into(), event_batch(i, batch, subjects)),
            RESULTS => Req::get(format!("/v1/experiments/{EXPERIMENT}/results")),
            WINNER => Req::get(format!("/v1/experiments/{EXPERIMENT}/winner")),
            _ => {
                // Paused, running, paused, …: 200 requests apart, so never reordered.
                let status = if (i / 200).is_multiple_of(2) {
                    "paused"
                } else {
                    "running"
                };
                Req::post(
                    format!("/v1/experiments/{TOGGLED}/status"),
                    format!("{{\"status\":\"{status}\"}}"),
                )
            }
        };
        (op, req)
    });

    let windows = Windows::of(args.minutes);
    let sample = Duration::from_secs(args.sample_seconds.max(1));
    eprintln!(
        "{} minutes at {} requests/s over {} connections …",
        args.minutes, args.rate, args.connections
    );
    eprintln!("{}", header_row());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + sample * args.minutes as u32;
    let load = {
        let (addr, samples, make) = (server.addr, samples.clone(), make.clone());
        let (connections, rate) = (args.connections, args.rate);
        tokio::spawn(async move {
            paced(addr, Some(ADMIN_KEY), connections, rate, end, make, samples).await
        })
    };
    let take = || -> anyhow::Result<Vec<Sample>> {
        Ok(std::mem::take(
            &mut *samples
                .lock()
                .map_err(|_| anyhow::anyhow!("a load worker panicked"))?,
        ))
    };
    let mut minutes: Vec<Minute> = Vec::with_capacity(args.minutes as usize);
    for m in 1..=args.minutes {
        tokio::time::sleep_until((start + sample * m as u32).into()).await;
        let mut minute = Minute::default();
        minute.add(take()?);
        minute.rss = server.rss()?;
        minute.peak = server.peak_rss()?;
        eprintln!("{}", row(m, &minute));
        minutes.push(minute);
    }
    load.await.context("the load generator panicked")??;
    // The requests still in flight at the end belong to the last minute.
    if let Some(last) = minutes.last_mut() {
        last.add(take()?);
    }

    eprintln!("rolling up the rest, draining webhooks, reading the job runs …");
    aggregate_now(&client, &verdict).await?;
    let changes: u64 = minutes.iter().map(|m| m.status_changes).sum();
    let drain_until = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < received_before + changes
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = received.load(Ordering::Relaxed) - received_before;
    let runs = job_runs(&client, &verdict).await?;
    let events_sent: u64 = minutes.iter().map(|m| m.event_batches).sum::<u64>() * batch;

    // The judgement.
    let mut checks: Vec<(String, String, String, bool)> = Vec::new();
    let errors: u64 = minutes.iter().map(|m| m.errors).sum();
    let requests: u64 = minutes.iter().map(|m| m.requests).sum();
    checks.push((
        "errors (non-2xx or transport)".into(),
        format!("{} of {}", thousands(errors), thousands(requests)),
        "0".into(),
        errors == 0,
    ));
    let (rss_base, rss_last) = (
        window_max_rss(&minutes, windows.baseline),
        window_max_rss(&minutes, windows.rss),
    );
    let rss_ratio = rss_last as f64 / rss_base.max(1) as f64;
    checks.push((
        format!(
            "RSS flat: largest of {} against largest of {}",
            span(windows.rss),
            span(windows.baseline)
        ),
        format!(
            "{} against {} ({rss_ratio:.2}×)",
            mb(rss_last),
            mb(rss_base)
        ),
        format!("≤ {:.2}×", 1.0 + args.rss_tolerance),
        rss_ratio <= 1.0 + args.rss_tolerance,
    ));
    for (op, name) in OPS.iter().enumerate() {
        let (Some(base), Some(last)) = (
            window_p99(&minutes, windows.baseline, op),
            window_p99(&minutes, windows.p99, op),
        ) else {
            checks.push((
                format!("p99 of {name}"),
                "no requests in a window".into(),
                String::new(),
                false,
            ));
            continue;
        };
        let limit = base.mul_f64(1.0 + args.p99_tolerance)
            + Duration::from_secs_f64(args.p99_slack_ms / 1e3);
        checks.push((
            format!(
                "p99 of {name}: {} against {}",
                span(windows.p99),
                span(windows.baseline)
            ),
            format!("{} against {}", ms(last), ms(base)),
            format!(
                "≤ {:.2}× + {} ms ({})",
                1.0 + args.p99_tolerance,
                args.p99_slack_ms,
                ms(limit)
            ),
            last <= limit,
        ));
    }
    let failed: u64 = runs.failed.iter().sum();
    checks.push((
        "job runs".into(),
        JOBS.iter()
            .enumerate()
            .map(|(j, job)| format!("{job} {} ({} failed)", runs.runs[j], runs.failed[j]))
            .collect::<Vec<_>>()
            .join(", "),
        "none failed, each ran".into(),
        failed == 0 && runs.runs.iter().all(|&n| n > 0),
    ));
    if let Some(f) = &runs.first_failure {
        eprintln!("  first failed run: {f}");
    }
    checks.push((
        "webhooks: deliveries received for the status changes".into(),
        format!("{} for {}", thousands(delivered), thousands(changes)),
        "every change delivered".into(),
        delivered >= changes,
    ));
    checks.push((
        "events rolled up by the aggregate runs".into(),
        format!(
            "{} of {} accepted",
            thousands(runs.events_rolled_up),
            thousands(events_sent)
        ),
        "all".into(),
        runs.events_rolled_up == events_sent,
    ));
    let passed = checks.iter().all(|c| c.3);

    let mut table = header_row();
    table.push('\n');
    let _ = writeln!(
        table,
        "|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(OPS.len())
    );
    for (m, minute) in minutes.iter().enumerate() {
        let _ = writeln!(table, "{}", row(m as u64 + 1, minute));
    }
    let mut judgement = String::from("| check | measured | tolerance | |\n|---|---|---|---|\n");
    for (what, measured, tolerance, ok) in &checks {
        let _ = writeln!(
            judgement,
            "| {what} | {measured} | {tolerance} | {} |",
            if *ok { "met" } else { "**missed**" }
        );
    }
    let report = format!(
        "Measured by `{}` on {}; {}; SQLite store (`synchronous = FULL`) in a temporary \
         directory; {} minutes at {} requests/s over {} connections, each request due at a \
         fixed time and its latency counted from then; per 200 requests: 1 status change of a \
         second experiment (a webhook message each) and 2 results reads, of the rest per 20: 11 \
         assignments of the {} pre-assigned subjects, 3 of new subjects in a third experiment, \
         4 event batches of {} (the pre-assigned subjects), 2 winner reads; `aggregate` every 30 s, `evaluate` and `retention` \
         every minute, `lifecycle` and `publish` every minute (each status change also \
         publishes its scope's config snapshot), `webhooks` continuously to one endpoint on a \
         local receiver; \
         `server.assignment_cache_mb = {}` (reached during warm-up). Latency per minute as \
         p50 / p99.\n\n{table}\n{judgement}\n**{}**\n",
        command_line(),
        procs::machine(),
        pinning(common.pinned, "the server"),
        args.minutes,
        args.rate,
        args.connections,
        thousands(args.subjects),
        args.event_batch,
        args.assignment_cache_mb,
        if passed {
            "Passed."
        } else {
            "Failed: see the missed checks."
        },
    );
    Ok((report, passed))
}

/// A batch of `batch` events with ids unique to request `i`, naming pre-assigned subjects.
fn event_batch(i: u64, batch: u64, subjects: u64) -> String {
    let mut rng = Rng::new(i ^ 0x5eed);
    let mut body = String::with_capacity(batch as usize * 130 + 16);
    body.push_str("{\"events\":[");
    for j in 0..batch {
        if j > 0 {
            body.push(',');
        }
        let (event, value) = match rng.below(10) {
            0..=5 => ("exposure", 1.0),
            6..=8 => ("conversion", 1.0),
            _ => ("revenue", 19.5),
        };
        let _ = write!(
            body,
            "{{\"event_id\":\"s-{i}-{j}\",\"experiment\":\"{EXPERIMENT}\",\
             \"subject_id\":\"user-{}\",\"event\":\"{event}\",\"value\":{value}}}",
            rng.below(subjects)
        );
    }
    body.push_str("]}");
    body
}

fn header_row() -> String {
    let mut h = String::from("| minute | requests | errors | RSS | peak RSS |");
    for op in OPS {
        let _ = write!(h, " {op} |");
    }
    h
}

fn row(m: u64, minute: &Minute) -> String {
    let mut r = format!(
        "| {m} | {} | {} | {} | {} |",
        thousands(minute.requests),
        minute.errors,
        mb(minute.rss),
        mb(minute.peak)
    );
    for l in &minute.latencies {
        if l.is_empty() {
            r.push_str(" — |");
        } else {
            let _ = write!(
                r,
                " {} / {} |",
                ms(percentile(l, 0.5)),
                ms(percentile(l, 0.99))
            );
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_windows_of_a_half_hour_run_are_the_stated_minutes() {
        let w = Windows::of(30);
        assert_eq!(w.baseline, (11, 20));
        assert_eq!(w.rss, (21, 30));
        assert_eq!(w.p99, (26, 30));
    }

    #[test]
    fn short_runs_compare_single_minutes_after_the_baseline() {
        for minutes in 2..=12 {
            let w = Windows::of(minutes);
            assert!(w.baseline.0 >= 1 && w.baseline.0 <= w.baseline.1, "{w:?}");
            assert!(w.baseline.1 < w.rss.0, "{minutes}: {w:?}");
            assert!(w.rss.0 <= w.p99.0 && w.p99.1 == minutes, "{minutes}: {w:?}");
        }
        assert_eq!(Windows::of(2).baseline, (1, 1));
        assert_eq!(Windows::of(2).p99, (2, 2));
    }

    #[test]
    fn the_mix_holds_every_operation_in_its_stated_share() {
        let mut counts = [0u64; OPS.len()];
        for i in 0..2_000 {
            counts[op_of(i)] += 1;
        }
        assert_eq!(counts[STATUS], 10);
        assert_eq!(counts[RESULTS], 20);
        // 0, 50 and 150 of every 200 take the places of repeat assignments.
        assert_eq!(counts[REPEAT], 1_100 - 30);
        assert_eq!(counts[NEW], 300);
        assert_eq!(counts[EVENTS], 400);
        assert_eq!(counts[WINNER], 200);
    }

    #[test]
    fn an_event_batch_is_one_json_body_of_unique_ids() {
        let v: Value = serde_json::from_str(&event_batch(7, 5, 100)).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[4]["event_id"], "s-7-4");
    }
}
