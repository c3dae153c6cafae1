//! `ingest_mongo`: `MongoStore::append_events` against the driver's raw `insert_many`.
//!
//! One process, one run, one MongoDB server, one fresh database (dropped at the end): a
//! running experiment with pre-assigned subjects is set up through the `Store` API, then
//! the same load loop (N concurrent tasks, each sending batches of new unique events for
//! a fixed time) drives, in alternating rounds:
//! - the baseline: unordered `insert_many` of the same event documents the store writes,
//!   into a plain collection with the same unique index on (experiment_id, event_id);
//! - the same, into a collection with all the indexes of the store's `events` collection;
//! - `MongoStore::append_events` (attribution, seq allocation, insert).
//!
//! Then the batches sent to the store are sent again (every event a duplicate). With
//! `--breakdown`, the steps of `append_events` are replayed one by one with the driver,
//! under the same load, and timed separately, to show where a batch's time goes.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use time::OffsetDateTime;
use verdict_bench::{Rng, Subject, T0, assign_subjects, cores, running_experiment, thousands};
use verdict_domain::NewEvent;
use verdict_store::model::to_millis;
use verdict_store::{AppendOutcome, DynStore, EventStore, MongoStore, Store};

const SECTION: &str = "verdict-bench-mongo-ingest";
const EXPERIMENT: &str = "exp-ingest";

/// Measure `MongoStore::append_events` against a raw `insert_many` of the same documents.
#[derive(Debug, Parser)]
#[command(name = "ingest_mongo", version, about, long_about)]
struct Args {
    /// MongoDB connection string. Each run creates a fresh database and drops it at the end.
    #[arg(long, env = "VERDICT_TEST_MONGODB_URI")]
    mongodb_uri: String,
    /// Seconds per scenario and round.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Alternating rounds of (baseline, baseline with all indexes, store); the figures are
    /// totals over all rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent tasks sending batches.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Subjects assigned before the run (events pick one at random).
    #[arg(long, default_value_t = 10_000)]
    subjects: usize,
    /// Also time the steps of `append_events` one by one (replayed with the driver).
    #[arg(long)]
    breakdown: bool,
    /// Replace this command's section of this markdown file with the results.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
}

/// What the batches of one scenario came to.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
    }

    fn of(outcomes: &[AppendOutcome]) -> Tally {
        let mut t = Tally::default();
        for o in outcomes {
            match o {
                AppendOutcome::Accepted => t.accepted += 1,
                AppendOutcome::Duplicate => t.duplicates += 1,
                _ => t.rejected += 1,
            }
        }
        t
    }

    fn events(&self) -> u64 {
        self.accepted + self.duplicates + self.rejected
    }
}

/// One scenario's totals (possibly summed over rounds).
#[derive(Debug, Default, Clone)]
struct Run {
    tally: Tally,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.tally.add(other.tally);
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    fn events_per_second(&self) -> f64 {
        self.tally.events() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        verdict_bench::percentile(&l, p)
    }
}

/// Run `concurrency` loops for `duration`, each awaiting `job(i)` for increasing `i`.
async fn drive<F, Fut>(concurrency: usize, duration: Duration, job: F) -> anyhow::Result<Run>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Tally>> + Send + 'static,
{
    let job = Arc::new(job);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (job, counter) = (job.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                run.tally.add(job(i).await?);
                run.latencies.push(t.elapsed());
            }
            anyhow::Ok(run)
        }));
    }
    let mut total = Run::default();
    for t in tasks {
        total.merge(t.await??);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// The event mix: exposures, conversions, revenue.
fn event_batch(subjects: &[Subject], seed: u64, size: usize) -> Vec<NewEvent> {
    let mut rng = Rng::new(seed);
    let now = OffsetDateTime::now_utc();
    (0..size)
        .map(|_| {
            let s = &subjects[rng.below(subjects.len() as u64) as usize];
            let (event, value) = match rng.below(10) {
                0..=5 => ("exposure", 1.0),
                6..=8 => ("conversion", 1.0),
                _ => ("revenue", (500.0 + rng.unit() * 19_500.0).round() / 100.0),
            };
            NewEvent {
                experiment_id: EXPERIMENT.into(),
                event_id: uuid::Uuid::new_v4().to_string(),
                subject: s.id.clone(),
                variant: Some(s.variant.clone()),
                event: event.into(),
                value,
                ts: now,
                received_at: now,
                meta: None,
            }
        })
        .collect()
}

fn bdate(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis(to_millis(t))
}

/// The document `MongoStore::append_events` writes for `e` (same fields, same types).
fn event_doc(seq: i64, e: &NewEvent, variant: &str, assigned_at: DateTime) -> Document {
    doc! {
        "_id": seq,
        "seq": seq,
        "experiment_id": &e.experiment_id,
        "event_id": &e.event_id,
        "subject": &e.subject,
        "variant": variant,
        "event": &e.event,
        "value": e.value,
        "ts": bdate(e.ts),
        "received_at": bdate(e.received_at),
        "assigned_at": assigned_at,
    }
}

fn unique(keys: Document) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().unique(true).build())
        .build()
}

/// A collection with the unique (experiment_id, event_id) index, and optionally the store's
/// other `events` indexes.
async fn raw_collection(
    db: &Database,
    name: &str,
    all_indexes: bool,
) -> anyhow::Result<Collection<Document>> {
    let c = db.collection::<Document>(name);
    c.create_index(unique(doc! {"experiment_id": 1, "event_id": 1}))
        .await?;
    if all_indexes {
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"experiment_id": 1, "event": 1, "ts": 1})
                .build(),
        )
        .await?;
        c.create_index(IndexModel::builder().keys(doc! {"seq": 1}).build())
            .await?;
    }
    Ok(c)
}

type Lookup = Arc<HashMap<String, (String, DateTime)>>;

/// A driver error without the hundreds of per-document write errors of an `insert_many`.
fn short(e: mongodb::error::Error) -> anyhow::Error {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::InsertMany(im) => {
            let errors = im.write_errors.as_deref().unwrap_or_default();
            anyhow::anyhow!(
                "insert_many: {} write errors, the first: {:?}",
                errors.len(),
                errors.first().map(|w| &w.message)
            )
        }
        _ => e.into(),
    }
}

/// Baseline: the store's documents, seqs from a local counter, one unordered insert.
fn raw_insert(
    coll: Collection<Document>,
    seq: Arc<AtomicI64>,
    subjects: Arc<Vec<Subject>>,
    lookup: Lookup,
    batch: usize,
    seed: u64,
) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Tally>> + Send>>
+ Send
+ Sync
+ 'static {
    move |i| {
        let (coll, subjects, lookup, seq) =
            (coll.clone(), subjects.clone(), lookup.clone(), seq.clone());
        Box::pin(async move {
            let events = event_batch(&subjects, seed.wrapping_add(i), batch);
            let first = seq.fetch_add(events.len() as i64, Ordering::Relaxed);
            let docs: Vec<Document> = events
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let (variant, at) = &lookup[&e.subject];
                    event_doc(first + k as i64, e, variant, *at)
                })
                .collect();
            let n = docs.len() as u64;
            coll.insert_many(docs).ordered(false).await.map_err(short)?;
            Ok(Tally {
                accepted: n,
                ..Tally::default()
            })
        })
    }
}

/// How long each step of one `append_events` call took, summed over the batches.
#[derive(Debug, Default, Clone, Copy)]
struct Steps {
    batches: u64,
    lookup: Duration,
    attribute: Duration,
    allocate: Duration,
    insert: Duration,
    release: Duration,
}

impl Steps {
    fn add(&mut self, o: &Steps) {
        self.batches += o.batches;
        self.lookup += o.lookup;
        self.attribute += o.attribute;
        self.allocate += o.allocate;
        self.insert += o.insert;
        self.release += o.release;
    }

    fn total(&self) -> Duration {
        self.lookup + self.attribute + self.allocate + self.insert + self.release
    }
}

/// The steps of `MongoStore::append_events` (crates/store/src/mongo.rs), replayed with the
/// driver on separate collections, each timed: (1) one `find` of the batch's assignments
/// (`$or` of `$in`), (2) attribution and in-batch duplicates in memory, (3) the seq
/// allocation (`find_one_and_update` with an update pipeline on the `counters` document,
/// registering a pending entry), (4) one unordered `insert_many`, (5) the release of the
/// pending entry (`update_one` with `$pull`).
async fn breakdown_batch(
    db: &Database,
    events_coll: &Collection<Document>,
    batch: Vec<NewEvent>,
) -> anyhow::Result<Steps> {
    let mut steps = Steps {
        batches: 1,
        ..Steps::default()
    };
    let t = Instant::now();
    let mut subjects: Vec<&str> = batch.iter().map(|e| e.subject.as_str()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    let found: Vec<Document> = db
        .collection::<Document>("assignments")
        .find(doc! {"$or": [{"experiment_id": EXPERIMENT, "subject": {"$in": subjects}}]})
        .await?
        .try_collect()
        .await?;
    steps.lookup = t.elapsed();

    let t = Instant::now();
    let mut assigned: HashMap<(String, String), (String, DateTime)> = HashMap::new();
    for d in &found {
        assigned.insert(
            (
                d.get_str("experiment_id")?.to_owned(),
                d.get_str("subject")?.to_owned(),
            ),
            (
                d.get_str("variant")?.to_owned(),
                *d.get_datetime("assigned_at")?,
            ),
        );
    }
    let mut keep = Vec::with_capacity(batch.len());
    let mut seen = std::collections::HashSet::new();
    for (i, e) in batch.iter().enumerate() {
        let Some((variant, at)) = assigned.get(&(e.experiment_id.clone(), e.subject.clone()))
        else {
            continue;
        };
        if e.variant.as_ref().is_some_and(|c| c != variant) || !seen.insert(&e.event_id) {
            continue;
        }
        keep.push((i, variant.clone(), *at));
    }
    steps.attribute = t.elapsed();

    let t = Instant::now();
    let token = uuid::Uuid::new_v4().to_string();
    let n = keep.len() as i64;
    let seq = doc! {"$ifNull": ["$seq", 0_i64]};
    let pipeline = vec![
        doc! {"$set": {"pending": {"$concatArrays": [
            {"$ifNull": ["$pending", []]},
            [{"token": &token, "start": {"$add": [seq.clone(), 1_i64]}, "at": "$$NOW"}],
        ]}}},
        doc! {"$set": {"seq": {"$add": [seq, n]}}},
    ];
    let counters = db.collection::<Document>("counters");
    let d = counters
        .find_one_and_update(doc! {"_id": "breakdown_events"}, pipeline)
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await?
        .context("seq allocation returned nothing")?;
    let first = d.get_i64("seq")? - n + 1;
    steps.allocate = t.elapsed();

    let t = Instant::now();
    let docs: Vec<Document> = keep
        .iter()
        .enumerate()
        .map(|(k, (i, variant, at))| event_doc(first + k as i64, &batch[*i], variant, *at))
        .collect();
    events_coll
        .insert_many(docs)
        .ordered(false)
        .await
        .map_err(short)?;
    steps.insert = t.elapsed();

    let t = Instant::now();
    counters
        .update_one(
            doc! {"_id": "breakdown_events"},
            doc! {"$pull": {"pending": {"token": &token}}},
        )
        .await?;
    steps.release = t.elapsed();
    Ok(steps)
}

fn row(name: &str, r: &Run, baseline: f64, note: &str) -> String {
    let rate = r.events_per_second();
    format!(
        "| {name} | {} | {rate:.0} | {:.2} | {:.1} ms | {:.1} ms | {note} |\n",
        thousands(r.tally.events()),
        rate / baseline,
        r.percentile(0.5).as_secs_f64() * 1e3,
        r.percentile(0.99).as_secs_f64() * 1e3,
    )
}

async fn bench(args: &Args, store: MongoStore) -> anyhow::Result<String> {
    let db = store.database().clone();
    let dyn_store: DynStore = Arc::new(store.clone());
    let duration = Duration::from_secs(args.seconds);

    eprintln!("assigning {} subjects …", args.subjects);
    let experiment = running_experiment(&dyn_store, EXPERIMENT, "ingest").await?;
    let t = Instant::now();
    let subjects = assign_subjects(&dyn_store, &experiment, args.subjects, 16, |_| T0).await?;
    eprintln!("  {:.1} s", t.elapsed().as_secs_f64());
    let lookup: Lookup = Arc::new(
        subjects
            .iter()
            .map(|s| (s.id.clone(), (s.variant.clone(), bdate(s.assigned_at))))
            .collect(),
    );
    let subjects = Arc::new(subjects);

    let plain = raw_collection(&db, "raw_events", false).await?;
    let indexed = raw_collection(&db, "raw_events_indexed", true).await?;
    let (plain_seq, indexed_seq) = (Arc::new(AtomicI64::new(1)), Arc::new(AtomicI64::new(1)));
    let recorded: Arc<Mutex<Vec<Vec<NewEvent>>>> = Arc::default();
    let (mut base, mut base_all, mut via_store) = (Run::default(), Run::default(), Run::default());
    for round in 0..args.rounds {
        let seed = (round as u64 + 1) << 40;
        eprintln!("round {}: raw insert_many …", round + 1);
        let job = raw_insert(
            plain.clone(),
            plain_seq.clone(),
            subjects.clone(),
            lookup.clone(),
            args.batch,
            seed,
        );
        base.merge(drive(args.concurrency, duration, job).await?);

        eprintln!("round {}: raw insert_many, all indexes …", round + 1);
        let job = raw_insert(
            indexed.clone(),
            indexed_seq.clone(),
            subjects.clone(),
            lookup.clone(),
            args.batch,
            seed + (1 << 39),
        );
        base_all.merge(drive(args.concurrency, duration, job).await?);

        eprintln!("round {}: MongoStore::append_events …", round + 1);
        let (s, subj, rec, batch) = (
            store.clone(),
            subjects.clone(),
            recorded.clone(),
            args.batch,
        );
        let run = drive(args.concurrency, duration, move |i| {
            let (s, subj, rec) = (s.clone(), subj.clone(), rec.clone());
            async move {
                let events = event_batch(&subj, (seed + (1 << 38)).wrapping_add(i), batch);
                {
                    let mut r = rec.lock().unwrap_or_else(|p| p.into_inner());
                    if r.len() < 400 {
                        r.push(events.clone());
                    }
                }
                Ok(Tally::of(&s.append_events(events).await?))
            }
        })
        .await?;
        via_store.merge(run);
    }
    if via_store.tally.accepted != via_store.tally.events() {
        bail!(
            "append_events accepted {} of {} new events",
            via_store.tally.accepted,
            via_store.tally.events()
        );
    }

    eprintln!("replaying stored batches (all duplicates) …");
    let (s, rec) = (store.clone(), recorded.clone());
    let replay = drive(args.concurrency, duration, move |i| {
        let (s, rec) = (s.clone(), rec.clone());
        async move {
            let events = {
                let r = rec.lock().unwrap_or_else(|p| p.into_inner());
                r[i as usize % r.len()].clone()
            };
            Ok(Tally::of(&s.append_events(events).await?))
        }
    })
    .await?;
    if replay.tally.duplicates != replay.tally.events() {
        bail!(
            "a replay answered {} duplicates of {} events",
            replay.tally.duplicates,
            replay.tally.events()
        );
    }

    // The store kept exactly what it accepted.
    let stored = db
        .collection::<Document>("events")
        .count_documents(doc! {})
        .await?;
    if stored != via_store.tally.accepted {
        bail!(
            "events collection holds {stored}, {} were accepted",
            via_store.tally.accepted
        );
    }

    let steps = if args.breakdown {
        eprintln!("breakdown of append_events' steps …");
        let coll = raw_collection(&db, "breakdown_events", true).await?;
        let totals: Arc<Mutex<Steps>> = Arc::default();
        let (d, subj, t, batch) = (db.clone(), subjects.clone(), totals.clone(), args.batch);
        let run = drive(args.concurrency, duration, move |i| {
            let (d, subj, t, coll) = (d.clone(), subj.clone(), t.clone(), coll.clone());
            async move {
                let events = event_batch(&subj, (7 << 36) + i, batch);
                let n = events.len() as u64;
                let s = breakdown_batch(&d, &coll, events).await?;
                t.lock().unwrap_or_else(|p| p.into_inner()).add(&s);
                Ok(Tally {
                    accepted: n,
                    ..Tally::default()
                })
            }
        })
        .await?;
        let steps = *totals.lock().unwrap_or_else(|p| p.into_inner());
        Some((run, steps))
    } else {
        None
    };

    let b = base.events_per_second();
    let mut table = String::from(
        "| scenario | events | events/s | ratio to baseline | p50 batch | p99 batch | note |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    table.push_str(&row(
        "raw `insert_many`, unique (experiment_id, event_id) only (baseline)",
        &base,
        b,
        "",
    ));
    table.push_str(&row(
        "raw `insert_many`, all indexes of `events`",
        &base_all,
        b,
        "adds the (experiment_id, event, ts) and (seq) indexes",
    ));
    table.push_str(&row(
        "`MongoStore::append_events`, new events",
        &via_store,
        b,
        "target ≥ 0.60",
    ));
    table.push_str(&row(
        "`MongoStore::append_events`, replayed batches",
        &replay,
        b,
        "every event a duplicate",
    ));
    let mut report = format!(
        "Measured by `cargo run --release -p verdict-bench --bin ingest_mongo --{} --write BENCHMARKS.md` \
         against secantusd-rs ({} rounds × {} s per scenario, alternating; {} concurrent tasks, \
         batches of {}, {} pre-assigned subjects; {} cores, client and server not pinned).\n\n{table}",
        if args.breakdown { " --breakdown" } else { "" },
        args.rounds,
        args.seconds,
        args.concurrency,
        args.batch,
        thousands(args.subjects as u64),
        cores()
    );
    if let Some((run, s)) = steps {
        let per = |d: Duration| d.as_secs_f64() * 1e3 / s.batches.max(1) as f64;
        let share = |d: Duration| 100.0 * d.as_secs_f64() / s.total().as_secs_f64().max(1e-9);
        report.push_str(&format!(
            "\nWhere an `append_events` batch spends its time (its steps replayed with the driver \
             under the same load, `--breakdown`: {:.0} events/s, {} batches):\n\n\
             | step | mean per batch | share |\n|---|---:|---:|\n",
            run.events_per_second(),
            s.batches
        ));
        for (name, d) in [
            ("1. `find` the batch's assignments (`$or`/`$in`)", s.lookup),
            (
                "2. attribution, in-batch duplicates (in memory)",
                s.attribute,
            ),
            (
                "3. allocate seqs (`find_one_and_update` pipeline on `counters`)",
                s.allocate,
            ),
            ("4. unordered `insert_many`", s.insert),
            (
                "5. release the allocation (`$pull` on `counters`)",
                s.release,
            ),
        ] {
            report.push_str(&format!(
                "| {name} | {:.2} ms | {:.0}% |\n",
                per(d),
                share(d)
            ));
        }
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = format!("verdict_bench_ingest_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&args.mongodb_uri, &database)
        .await
        .context("connecting to MongoDB")?;
    store.ping().await?;
    let result = bench(&args, store.clone()).await;
    store
        .database()
        .drop()
        .await
        .with_context(|| format!("dropping database {database}"))?;
    let report = result?;
    println!("{report}");
    if let Some(path) = &args.write {
        verdict_bench::write_section(path, SECTION, &report)?;
    }
    Ok(())
}
