//! `rollup`: cold and incremental `Store::rollup` on SQLite and MongoDB.
//!
//! Per store, in one run:
//! - cold: a running experiment, `--subjects` subjects assigned through
//!   `get_or_create_assignment`, `--events` raw events loaded through `append_events` in big
//!   concurrent batches (the load rate is reported for comparison), then `rollup(step)` in a
//!   loop until caught up;
//! - incremental: on a second store holding `--history` events, and on the cold store
//!   (`--events` of history), both fully rolled up, `--new-events` new events are appended
//!   and only their rollup is timed; repeated `--repeats` times, alternating between the two
//!   stores, median reported. Rollup cost should follow the new events, not the history.
//!
//! With `--dimension` it measures instead what a declared breakdown by an event `meta` key
//! costs the rollup: two stores whose events all carry `meta.platform` (10 values), one
//! whose experiment declares `breakdown: {source: event, attribute: platform}`; both get
//! `--events` events rolled up cold, then `--new-events` new events rolled up `--repeats`
//! times alternately (median), and the times with the dimension are compared with those
//! without (target: within 1.5×).
//!
//! Events are a realistic mix: exposures (60%), conversions (30%) and revenue (10%, values
//! 5–200), subjects drawn uniformly, timestamps spread over `--days` days in roughly
//! ingestion order, subjects assigned during the first half of that period (so some events
//! precede their subject's assignment and are not counted, as in production).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use verdict_bench::{
    Rng, Subject, T0, assign_subjects, cores, human, running_experiment_with, thousands,
};
use verdict_domain::NewEvent;
use verdict_store::{AppendOutcome, DynStore, MongoStore, SqliteStore};

const SECTION: &str = "verdict-bench-rollup";
const DIMENSION_SECTION: &str = "verdict-bench-rollup-dimension";
/// The breakdown `--dimension` declares, on the key every event's meta carries.
const PLATFORMS: u64 = 10;
const EXPERIMENT: &str = "exp-rollup";
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Sqlite,
    Mongodb,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Mongodb,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Mongodb => "MongoDB (secantusd-rs)",
        }
    }
}

/// Time `Store::rollup` over a million raw events, cold and incrementally.
#[derive(Debug, Parser)]
#[command(name = "rollup", version, about, long_about)]
struct Args {
    /// Stores to measure [default: both when a MongoDB URI is given, else sqlite].
    #[arg(long, value_enum)]
    store: Option<Which>,
    /// MongoDB connection string. Each store gets a fresh database, dropped at the end.
    #[arg(long, env = "VERDICT_TEST_MONGODB_URI")]
    mongodb_uri: Option<String>,
    /// Raw events loaded and rolled up cold (also the large history of the incremental case).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events of history of the small incremental case.
    #[arg(long, default_value_t = 100_000)]
    history: u64,
    /// New events appended and rolled up in each incremental measurement.
    #[arg(long, default_value_t = 10_000)]
    new_events: u64,
    /// Incremental measurements per history size (median reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Subjects assigned before loading (split between two variants by the hash).
    #[arg(long, default_value_t = 100_000)]
    subjects: usize,
    /// Days the event timestamps are spread over.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// Events per `rollup` call (the aggregator steps 10,000 at a time).
    #[arg(long, default_value_t = 50_000)]
    step: usize,
    /// Events per `append_events` call while loading.
    #[arg(long, default_value_t = 5_000)]
    load_batch: usize,
    /// Concurrent `append_events` calls while loading.
    #[arg(long, default_value_t = 4)]
    load_concurrency: usize,
    /// Keep the SQLite files and MongoDB databases afterwards (their names are printed),
    /// to inspect them.
    #[arg(long)]
    keep: bool,
    /// Measure the cost of a declared event-meta dimension of 10 values instead (see the
    /// module docs); writes its own section.
    #[arg(long)]
    dimension: bool,
    /// Replace this command's section of this markdown file with the results.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
}

/// A store under test and how to get rid of it.
struct Opened {
    store: DynStore,
    mongo: Option<MongoStore>,
}

impl Opened {
    async fn open(args: &Args, backend: Backend, dir: &Path, name: &str) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Sqlite => Opened {
                store: Arc::new(SqliteStore::open(dir.join(format!("{name}.db")), 5_000)?),
                mongo: None,
            },
            Backend::Mongodb => {
                let uri = args.mongodb_uri.as_deref().context("no MongoDB URI")?;
                let db = format!("verdict_bench_{name}_{}", uuid::Uuid::new_v4().simple());
                let m = MongoStore::connect(uri, &db).await?;
                Opened {
                    store: Arc::new(m.clone()),
                    mongo: Some(m),
                }
            }
        })
    }

    async fn close(self, keep: bool) -> anyhow::Result<()> {
        match self.mongo {
            Some(m) if keep => eprintln!("kept MongoDB database {}", m.database().name()),
            Some(m) => m.database().drop().await.context("dropping the database")?,
            None => {}
        }
        Ok(())
    }
}

/// Events `first..first + n` of a stream whose timestamps run from `from` over `span_ms`
/// (event `i` of `total` near `from + span·i/total`, ± 30 minutes).
#[derive(Debug, Clone, Copy)]
struct Window {
    from: OffsetDateTime,
    span_ms: i64,
    total: u64,
}

fn events(
    subjects: &[Subject],
    window: Window,
    first: u64,
    n: u64,
    with_meta: bool,
) -> Vec<NewEvent> {
    let mut rng = Rng::new(first.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ window.span_ms as u64);
    let mut platforms = Rng::new(first ^ 0x9e37_79b9_7f4a_7c15);
    let received = OffsetDateTime::now_utc();
    (first..first + n)
        .map(|i| {
            let s = &subjects[rng.below(subjects.len() as u64) as usize];
            let (event, value) = match rng.below(10) {
                0..=5 => ("exposure", 1.0),
                6..=8 => ("conversion", 1.0),
                _ => ("revenue", (500.0 + rng.unit() * 19_500.0).round() / 100.0),
            };
            let at = (window.span_ms as f64 * i as f64 / window.total.max(1) as f64) as i64
                + rng.below(3_600_000) as i64
                - 1_800_000;
            NewEvent {
                experiment_id: EXPERIMENT.into(),
                event_id: uuid::Uuid::new_v4().to_string(),
                subject: s.id.clone(),
                variant: Some(s.variant.clone()),
                event: event.into(),
                value,
                ts: window.from + time::Duration::milliseconds(at.clamp(0, window.span_ms - 1)),
                received_at: received,
                meta: with_meta.then(
                    || serde_json::json!({"platform": format!("p{}", platforms.below(PLATFORMS))}),
                ),
            }
        })
        .collect()
}

/// Append `n` events of `window` (from its event `first`) in concurrent big batches; every
/// one must be accepted.
async fn load(
    args: &Args,
    store: &DynStore,
    subjects: &Arc<Vec<Subject>>,
    window: Window,
    first: u64,
    n: u64,
) -> anyhow::Result<Duration> {
    let b = args.load_batch.max(1) as u64;
    let t = Instant::now();
    futures::stream::iter((0..n.div_ceil(b)).map(|k| (first + k * b, b.min(n - k * b))))
        .map(|(from, count)| {
            let (store, subjects) = (store.clone(), subjects.clone());
            async move {
                let with_meta = args.dimension;
                let batch = tokio::task::spawn_blocking(move || {
                    events(&subjects, window, from, count, with_meta)
                })
                .await?;
                let outcomes = store.append_events(batch).await?;
                let accepted = outcomes
                    .iter()
                    .filter(|o| **o == AppendOutcome::Accepted)
                    .count();
                if accepted != outcomes.len() {
                    bail!("{} of {} events accepted", accepted, outcomes.len());
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.load_concurrency.max(1))
        .try_collect::<()>()
        .await?;
    Ok(t.elapsed())
}

/// `rollup(step)` until caught up: events folded, time, calls that folded something.
async fn rollup_all(store: &DynStore, step: usize) -> anyhow::Result<(u64, Duration, u64)> {
    let t = Instant::now();
    let (mut events, mut steps) = (0, 0);
    loop {
        let r = store.rollup(step).await?;
        if r.events == 0 {
            break;
        }
        events += r.events;
        steps += 1;
    }
    Ok((events, t.elapsed(), steps))
}

/// A store set up with the experiment (with the fields of `extra`) and its subjects.
async fn prepared(
    args: &Args,
    backend: Backend,
    dir: &Path,
    name: &str,
    extra: serde_json::Value,
) -> anyhow::Result<(Opened, Arc<Vec<Subject>>, Duration)> {
    let opened = Opened::open(args, backend, dir, name).await?;
    let experiment = running_experiment_with(&opened.store, EXPERIMENT, "rollup", extra).await?;
    let half_period_s = (args.days.max(1) * DAY_MS / 2000) as u64;
    let t = Instant::now();
    let subjects = assign_subjects(&opened.store, &experiment, args.subjects, 16, |i| {
        T0 + time::Duration::seconds(Rng::new(i as u64).below(half_period_s) as i64)
    })
    .await?;
    Ok((opened, Arc::new(subjects), t.elapsed()))
}

/// The `r`-th window of `n` new events: the hour after `history`, one hour per round.
fn new_events_window(history: Window, r: u64, n: u64) -> Window {
    Window {
        from: T0 + time::Duration::milliseconds(history.span_ms) + time::Duration::hours(r as i64),
        span_ms: 3_600_000,
        total: n,
    }
}

/// Load `n` events of `window` (from its event `first`) into `opened`, let the load's
/// background work finish when `settled`, then time the rollup that folds exactly them.
#[allow(clippy::too_many_arguments)]
async fn load_then_roll_up(
    args: &Args,
    opened: &Opened,
    subjects: &Arc<Vec<Subject>>,
    window: Window,
    first: u64,
    n: u64,
    settled: bool,
) -> anyhow::Result<Duration> {
    load(args, &opened.store, subjects, window, first, n).await?;
    if settled {
        settle().await;
    }
    let (folded, d, _) = rollup_all(&opened.store, args.step).await?;
    if folded != n {
        bail!("a rollup folded {folded} of {n} events");
    }
    Ok(d)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn rate(events: u64, d: Duration) -> f64 {
    events as f64 / d.as_secs_f64().max(1e-9)
}

/// One store's figures.
#[derive(Debug)]
struct Figures {
    backend: Backend,
    assign: Duration,
    load: Duration,
    cold: Duration,
    cold_steps: u64,
    small: Duration,
    large: Duration,
}

async fn measure(args: &Args, backend: Backend, dir: &Path) -> anyhow::Result<Figures> {
    let history_window = Window {
        from: T0,
        span_ms: args.days.max(1) * DAY_MS,
        total: args.events,
    };
    // (a) cold: load everything, then roll it all up.
    eprintln!(
        "[{}] assigning {} subjects …",
        backend.name(),
        args.subjects
    );
    let (big, subjects, assign) =
        prepared(args, backend, dir, "cold", serde_json::json!({})).await?;
    let result = async {
        eprintln!("[{}] loading {} events …", backend.name(), args.events);
        let load_time = load(args, &big.store, &subjects, history_window, 0, args.events).await?;
        eprintln!(
            "[{}]   {:.1} s ({:.0} events/s); cold rollup …",
            backend.name(),
            load_time.as_secs_f64(),
            rate(args.events, load_time)
        );
        let (folded, cold, cold_steps) = rollup_all(&big.store, args.step).await?;
        if folded != args.events {
            bail!("the cold rollup folded {folded} of {} events", args.events);
        }
        eprintln!(
            "[{}]   {:.1} s ({:.0} events/s)",
            backend.name(),
            cold.as_secs_f64(),
            rate(folded, cold)
        );

        // (b) incremental: a small history next to the cold store's large one.
        eprintln!(
            "[{}] preparing {} events of history …",
            backend.name(),
            args.history
        );
        let (small, small_subjects, _) =
            prepared(args, backend, dir, "small", serde_json::json!({})).await?;
        let inner = async {
            let small_window = Window {
                total: args.history,
                ..history_window
            };
            load(
                args,
                &small.store,
                &small_subjects,
                small_window,
                0,
                args.history,
            )
            .await?;
            rollup_all(&small.store, args.step).await?;
            let (mut t_small, mut t_large) = (Vec::new(), Vec::new());
            for r in 0..args.repeats.max(1) as u64 {
                let window = new_events_window(history_window, r, args.new_events);
                for (opened, subj, times) in [
                    (&small, &small_subjects, &mut t_small),
                    (&big, &subjects, &mut t_large),
                ] {
                    let first = 1_000_000_000 * (r + 1);
                    times.push(
                        load_then_roll_up(
                            args,
                            opened,
                            subj,
                            window,
                            first,
                            args.new_events,
                            false,
                        )
                        .await?,
                    );
                }
                eprintln!(
                    "[{}]   incremental #{}: {:.0} ms ({} history), {:.0} ms ({} history)",
                    backend.name(),
                    r + 1,
                    t_small[r as usize].as_secs_f64() * 1e3,
                    args.history,
                    t_large[r as usize].as_secs_f64() * 1e3,
                    args.events
                );
            }
            anyhow::Ok((median(t_small), median(t_large)))
        }
        .await;
        small.close(args.keep).await?;
        let (small_t, large_t) = inner?;
        anyhow::Ok(Figures {
            backend,
            assign,
            load: load_time,
            cold,
            cold_steps,
            small: small_t,
            large: large_t,
        })
    }
    .await;
    big.close(args.keep).await?;
    result
}

/// One store's figures with and without a declared dimension.
#[derive(Debug)]
struct DimensionFigures {
    backend: Backend,
    /// Cold rollup of `--events`: without, with.
    cold: (Duration, Duration),
    /// Median incremental rollup of `--new-events`: without, with.
    incremental: (Duration, Duration),
}

async fn measure_dimension(
    args: &Args,
    backend: Backend,
    dir: &Path,
) -> anyhow::Result<DimensionFigures> {
    let declared = serde_json::json!({"breakdown": {"source": "event", "attribute": "platform"}});
    eprintln!(
        "[{}] two stores of {} subjects …",
        backend.name(),
        args.subjects
    );
    let (plain, plain_subjects, _) =
        prepared(args, backend, dir, "plain", serde_json::json!({})).await?;
    let (dim, dim_subjects, _) = prepared(args, backend, dir, "dimension", declared).await?;
    let result = async {
        let history = Window {
            from: T0,
            span_ms: args.days.max(1) * DAY_MS,
            total: args.events,
        };
        let mut cold = Vec::new();
        for (opened, subjects) in [(&plain, &plain_subjects), (&dim, &dim_subjects)] {
            cold.push(
                load_then_roll_up(args, opened, subjects, history, 0, args.events, true).await?,
            );
        }
        eprintln!(
            "[{}]   cold: {:.0} ms without, {:.0} ms with the dimension",
            backend.name(),
            cold[0].as_secs_f64() * 1e3,
            cold[1].as_secs_f64() * 1e3
        );
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for r in 0..args.repeats.max(1) as u64 {
            let window = new_events_window(history, r, args.new_events);
            let mut pair = [
                (&plain, &plain_subjects, &mut without),
                (&dim, &dim_subjects, &mut with),
            ];
            // Each goes first every other round.
            if r % 2 == 1 {
                pair.reverse();
            }
            for (opened, subjects, times) in pair {
                let first = 1_000_000_000 * (r + 1);
                times.push(
                    load_then_roll_up(args, opened, subjects, window, first, args.new_events, true)
                        .await?,
                );
            }
        }
        anyhow::Ok(DimensionFigures {
            backend,
            cold: (cold[0], cold[1]),
            incremental: (median(without), median(with)),
        })
    }
    .await;
    plain.close(args.keep).await?;
    dim.close(args.keep).await?;
    result
}

/// Let what a load left running in the background (SQLite's checkpoints of both stores,
/// which share the machine) finish before a timed rollup.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn dimension_report(args: &Args, figures: &[DimensionFigures]) -> String {
    let mut table = String::from(
        "| store | measurement | events | without | with the dimension | ratio |\n|---|---|---:|---:|---:|---:|\n",
    );
    for f in figures {
        for (what, events, (without, with)) in [
            (
                format!(
                    "cold rollup, `rollup({})` until caught up",
                    thousands(args.step as u64)
                ),
                args.events,
                f.cold,
            ),
            (
                format!("incremental rollup, median of {}", args.repeats.max(1)),
                args.new_events,
                f.incremental,
            ),
        ] {
            let ratio = with.as_secs_f64() / without.as_secs_f64().max(1e-9);
            table.push_str(&format!(
                "| {} | {what} | {} | {} | {} | **{ratio:.2}×** (target ≤ 1.5×) |\n",
                f.backend.name(),
                thousands(events),
                human(without),
                human(with),
            ));
        }
    }
    format!(
        "Measured by `cargo run --release -p verdict-bench --bin rollup -- --dimension --events {} \
         --subjects {} --repeats {} --write BENCHMARKS.md` (every event carries \
         `meta.platform`, {PLATFORMS} values; {} cores; MongoDB: secantusd-rs on the same \
         machine).\n\n{table}",
        args.events,
        args.subjects,
        args.repeats.max(1),
        cores()
    )
}

fn report(args: &Args, figures: &[Figures]) -> String {
    let mut table = String::from(
        "| store | measurement | events | time | events/s | note |\n|---|---|---:|---:|---:|---|\n",
    );
    for f in figures {
        let name = f.backend.name();
        let load_rate = rate(args.events, f.load);
        let cold_rate = rate(args.events, f.cold);
        table.push_str(&format!(
            "| {name} | load: `append_events`, batches of {}, {} concurrent | {} | {} | {:.0} | raw write rate, for comparison ({} subjects assigned first in {}) |\n",
            thousands(args.load_batch as u64),
            args.load_concurrency,
            thousands(args.events),
            human(f.load),
            load_rate,
            thousands(args.subjects as u64),
            human(f.assign),
        ));
        table.push_str(&format!(
            "| {name} | cold rollup, `rollup({})` until caught up | {} | {} | {:.0} | {} calls of `rollup`; {:.1}× the load rate |\n",
            thousands(args.step as u64),
            thousands(args.events),
            human(f.cold),
            cold_rate,
            f.cold_steps,
            cold_rate / load_rate,
        ));
        table.push_str(&format!(
            "| {name} | incremental rollup, {} events of history | {} | {} | {:.0} | median of {} |\n",
            thousands(args.history),
            thousands(args.new_events),
            human(f.small),
            rate(args.new_events, f.small),
            args.repeats.max(1),
        ));
        let ratio = f.large.as_secs_f64() / f.small.as_secs_f64().max(1e-9);
        table.push_str(&format!(
            "| {name} | incremental rollup, {} events of history | {} | {} | {:.0} | median of {}; **{ratio:.2}×** the {}-history time (target ≤ 1.5×) |\n",
            thousands(args.events),
            thousands(args.new_events),
            human(f.large),
            rate(args.new_events, f.large),
            args.repeats.max(1),
            thousands(args.history),
        ));
    }
    let command = if args.events == 1_000_000 && args.history == 100_000 {
        "cargo run --release -p verdict-bench --bin rollup -- --write BENCHMARKS.md".to_owned()
    } else {
        format!(
            "cargo run --release -p verdict-bench --bin rollup -- --events {} --history {} --write BENCHMARKS.md",
            args.events, args.history
        )
    };
    format!(
        "Measured by `{command}` ({} subjects, events over {} days, {} cores; MongoDB: \
         secantusd-rs on the same machine; SQLite: `synchronous = FULL`, WAL, local disk).\n\n{table}",
        thousands(args.subjects as u64),
        args.days,
        cores()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let which = args.store.unwrap_or(if args.mongodb_uri.is_some() {
        Which::Both
    } else {
        Which::Sqlite
    });
    let backends: &[Backend] = match which {
        Which::Sqlite => &[Backend::Sqlite],
        Which::Mongodb => &[Backend::Mongodb],
        Which::Both => &[Backend::Sqlite, Backend::Mongodb],
    };
    if backends.contains(&Backend::Mongodb) && args.mongodb_uri.is_none() {
        bail!("--store mongodb needs --mongodb-uri or VERDICT_TEST_MONGODB_URI");
    }
    if args.subjects == 0 || args.events == 0 || args.history == 0 || args.new_events == 0 {
        bail!("--subjects, --events, --history and --new-events must be positive");
    }
    let dir = tempfile::tempdir()?;
    let (section, report) = if args.dimension {
        let mut figures = Vec::new();
        for &b in backends {
            figures.push(measure_dimension(&args, b, dir.path()).await?);
        }
        (DIMENSION_SECTION, dimension_report(&args, &figures))
    } else {
        let mut figures = Vec::new();
        for &b in backends {
            figures.push(measure(&args, b, dir.path()).await?);
        }
        (SECTION, report(&args, &figures))
    };
    if args.keep {
        eprintln!("kept SQLite files in {}", dir.keep().display());
    }
    println!("{report}");
    if let Some(path) = &args.write {
        verdict_bench::write_section(path, section, &report)?;
    }
    Ok(())
}
