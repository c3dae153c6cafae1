//! The MongoDB store (official `mongodb` driver, 3.x).
//!
//! Same semantics as [`crate::SqliteStore`], without relying on multi-document
//! transactions (a standalone MongoDB server has none): every rule is made atomic with a
//! single-document operation (unique indexes, `find_one_and_update`, conditional
//! `update_one`), and the multi-step operations are made idempotent instead.
//!
//! # Collections
//! - `experiments`: `_id` = experiment id, the projected fields queries filter on
//!   (`environment`, `organization` (`""` when global), `key`, `status`, `audience`,
//!   `version`, `order`) and the whole experiment as a JSON string (`doc`), written in one
//!   update. Unique (environment, organization, key). Changes are a compare-and-set on
//!   `version` (every change bumps it), so a status change filtered on the version read is
//!   also filtered on the status read.
//! - `assignments`, `forced_variants`: unique (experiment_id, subject). Get-or-create is an
//!   upsert with `$setOnInsert`; a concurrent upsert losing with E11000 re-reads.
//! - `events`: `_id` = `seq`, the ingestion order, allocated in blocks from the `counters`
//!   document `events` (never reused), also stored as the indexed field `seq`: readers
//!   select seq ranges on that index (a range on `_id` scans the whole collection on some
//!   wire-compatible servers, a range on a secondary index does not). Unique
//!   (experiment_id, event_id) makes appends idempotent. Each event also keeps its
//!   subject's `assigned_at`, so rollups and counts apply "only events at or after the
//!   assignment" without a join (assignments never change once stored). See `events.rs`
//!   for how in-flight allocations hold watermarks back.
//! - `audit`: `_id` = an increasing id from the `counters` document `audit`.
//! - `environments`, `audiences`, `api_keys`: JSON documents with an `order` from
//!   `counters` (creation order for lists) and unique keys.
//! - `buckets`, `subject_metrics`, `rollup_state`, `evaluation_state`: rollups;
//!   `evaluation_history`: each experiment's recorded evaluations, `_id` from the `counters`
//!   document `evaluation_history` (the order of recording).
//! - `outbox`, `webhook_*`, `leases`, `job_runs`: see `experiments.rs`, `webhooks.rs`,
//!   `jobs.rs`.
//!
//! Reads are strict: a required field that is missing or of the wrong type is corrupt data
//! ([`StoreError::Internal`] naming the collection and the field), never read as 0 or
//! empty. Fields that may legitimately be absent are read as `Option`s.
//!
//! # Non-atomic pairs (no transactions)
//! - A change and its audit entry are two writes: the change is applied (compare-and-set)
//!   first, then the audit entry is inserted. A crash in between loses the audit entry,
//!   never the change.
//! - `append_events` inserts with one unordered `insert_many`; when it fails for another
//!   reason than duplicates (network, …) some events of the batch may be stored. Retrying
//!   the batch is safe: stored events then answer `Duplicate`.
//! - `delete_audience` checks for running experiments, then deletes: an experiment
//!   activated between the two steps can end up running with a deleted audience.
//!
//! # Layout
//! This file: [`MongoStore`], connecting, indexes, error mapping, field readers, counters
//! and the helpers several aggregates use. One child module per aggregate holds that
//! trait's `impl`: `experiments` (with the outbox relay), `assignments`, `events` (seq
//! allocation), `rollups`, `jobs`, `webhooks`, `environments`, `audiences`, `keys`. Besides
//! this file's helpers, a child uses another child's in one direction only (`rollups` →
//! the safe seq of `events`, `webhooks` → the outbox relay of `experiments`, `jobs` → the
//! delivery ids of `webhooks`), never in a circle.

mod assignments;
mod audiences;
mod environments;
mod events;
mod experiments;
mod jobs;
mod keys;
mod publications;
mod rollups;
mod webhooks;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, bson, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::model::{
    Attribution, Page, PageRequest, TimeRange, VariantCounts, from_millis, to_millis,
};
use crate::{Result, Store};

pub use events::PENDING_LEASE;

const DUPLICATE_KEY: i32 = 11000;

/// Server error codes worth retrying (network, elections, shutdown, time limits).
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// The MongoDB store. Cheap to clone (the driver's client is a handle).
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    /// Whether the deployment runs multi-document transactions (a replica set or a sharded
    /// cluster; a standalone server does not): fenced deletes then check the lease in the
    /// same transaction (see `jobs.rs`).
    transactions: bool,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.db.name())
            .field("transactions", &self.transactions)
            .finish()
    }
}

// ---- error mapping ----------------------------------------------------------------------

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .is_some_and(|w| !w.is_empty() && w.iter().all(|x| x.code == DUPLICATE_KEY)),
        _ => false,
    }
}

fn is_transient(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        _ => {
            e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
                || e.contains_label(mongodb::error::RETRYABLE_ERROR)
        }
    }
}

/// Map a driver error met while doing `context`: duplicate key →
/// [`StoreError::Conflict`], network/timeouts/selection → [`StoreError::Unavailable`],
/// anything else → [`StoreError::Internal`]; the driver error is kept as the source of
/// the last two.
fn db_err(context: &'static str) -> impl FnOnce(mongodb::error::Error) -> StoreError {
    move |e| {
        if is_duplicate(&e) {
            StoreError::Conflict(format!("{context}: already exists"))
        } else if is_transient(&e) {
            StoreError::unavailable(context, e)
        } else {
            StoreError::internal(context, e)
        }
    }
}

// ---- value helpers ----------------------------------------------------------------------

fn bdate(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis(to_millis(t))
}

fn from_bdate(d: DateTime) -> OffsetDateTime {
    from_millis(d.timestamp_millis())
}

fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::internal("encoding JSON", e))
}

/// Decode a JSON string field read while `doing` something (e.g. "reading an experiment").
fn decode<T: DeserializeOwned>(doc: &str, doing: &'static str) -> Result<T> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::internal(format!("{doing}: decoding its stored JSON"), e))
}

// ---- field readers ----------------------------------------------------------------------
//
// `what` names where the document comes from, as the error should say it: a collection
// ("`events`") or an aggregation over one ("per-variant figures of `subject_metrics`").

fn missing(what: &str, key: &str) -> StoreError {
    StoreError::corrupt(format!("reading {what}: required field `{key}` is missing"))
}

fn mistyped(what: &str, key: &str, wanted: &str, found: &Bson) -> StoreError {
    StoreError::corrupt(format!(
        "reading {what}: field `{key}` should be {wanted}, found {:?}",
        found.element_type()
    ))
}

/// A required field, whatever its type.
fn get_bson<'a>(d: &'a Document, key: &str, what: &str) -> Result<&'a Bson> {
    d.get(key).ok_or_else(|| missing(what, key))
}

/// A field that may be absent: a missing field and an explicit `null` are both `None`.
fn opt_bson<'a>(d: &'a Document, key: &str) -> Option<&'a Bson> {
    d.get(key).filter(|b| !matches!(b, Bson::Null))
}

fn as_str<'a>(b: &'a Bson, key: &str, what: &str) -> Result<&'a str> {
    b.as_str().ok_or_else(|| mistyped(what, key, "a string", b))
}

/// An integer of any BSON integer type (aggregations answer int32 or int64); a double is
/// accepted only when it holds a whole number (some servers sum integers into doubles).
fn as_i64(b: &Bson, key: &str, what: &str) -> Result<i64> {
    match b {
        Bson::Int32(v) => Ok(i64::from(*v)),
        Bson::Int64(v) => Ok(*v),
        Bson::Double(v) if v.fract() == 0.0 && v.abs() < 9.2e18 => Ok(*v as i64),
        other => Err(mistyped(what, key, "an integer", other)),
    }
}

/// A number of any BSON numeric type.
fn as_f64(b: &Bson, key: &str, what: &str) -> Result<f64> {
    match b {
        Bson::Int32(v) => Ok(f64::from(*v)),
        Bson::Int64(v) => Ok(*v as f64),
        Bson::Double(v) => Ok(*v),
        other => Err(mistyped(what, key, "a number", other)),
    }
}

fn as_date(b: &Bson, key: &str, what: &str) -> Result<OffsetDateTime> {
    match b {
        Bson::DateTime(d) => Ok(from_bdate(*d)),
        other => Err(mistyped(what, key, "a date", other)),
    }
}

fn get_str<'a>(d: &'a Document, key: &str, what: &str) -> Result<&'a str> {
    as_str(get_bson(d, key, what)?, key, what)
}

fn get_i64(d: &Document, key: &str, what: &str) -> Result<i64> {
    as_i64(get_bson(d, key, what)?, key, what)
}

/// A required count (never negative).
fn get_u64(d: &Document, key: &str, what: &str) -> Result<u64> {
    let v = get_i64(d, key, what)?;
    u64::try_from(v).map_err(|_| {
        StoreError::corrupt(format!(
            "reading {what}: field `{key}` should be a count, found {v}"
        ))
    })
}

fn get_f64(d: &Document, key: &str, what: &str) -> Result<f64> {
    as_f64(get_bson(d, key, what)?, key, what)
}

fn get_date(d: &Document, key: &str, what: &str) -> Result<OffsetDateTime> {
    as_date(get_bson(d, key, what)?, key, what)
}

fn opt_str<'a>(d: &'a Document, key: &str, what: &str) -> Result<Option<&'a str>> {
    opt_bson(d, key).map(|b| as_str(b, key, what)).transpose()
}

fn opt_i64(d: &Document, key: &str, what: &str) -> Result<Option<i64>> {
    opt_bson(d, key).map(|b| as_i64(b, key, what)).transpose()
}

fn opt_date(d: &Document, key: &str, what: &str) -> Result<Option<OffsetDateTime>> {
    opt_bson(d, key).map(|b| as_date(b, key, what)).transpose()
}

/// An array field that may be absent (absent or `null`: empty).
fn opt_array<'a>(d: &'a Document, key: &str, what: &str) -> Result<&'a [Bson]> {
    match opt_bson(d, key) {
        None => Ok(&[]),
        Some(Bson::Array(a)) => Ok(a),
        Some(other) => Err(mistyped(what, key, "an array", other)),
    }
}

/// The elements of an array field, each required to be a document.
fn documents<'a>(items: &'a [Bson], key: &str, what: &str) -> Result<Vec<&'a Document>> {
    items
        .iter()
        .map(|b| {
            b.as_document()
                .ok_or_else(|| mistyped(what, key, "an array of documents", b))
        })
        .collect()
}

/// The JSON record in field `doc`, read while `doing` something.
fn doc_field<T: DeserializeOwned>(d: &Document, what: &str, doing: &'static str) -> Result<T> {
    decode(get_str(d, "doc", what)?, doing)
}

fn time_filter(range: TimeRange) -> Option<Document> {
    let mut f = Document::new();
    if let Some(from) = range.from {
        f.insert("$gte", bdate(from));
    }
    if let Some(to) = range.to {
        f.insert("$lt", bdate(to));
    }
    (!f.is_empty()).then_some(f)
}

async fn collect(cursor: mongodb::Cursor<Document>, what: &'static str) -> Result<Vec<Document>> {
    cursor.try_collect().await.map_err(db_err(what))
}

// ---- per-variant figures (shared by raw-event counts and rollups) -------------------------

/// Only events at or after the subject's assignment count.
fn counted() -> Document {
    doc! {"$expr": {"$gte": ["$ts", "$assigned_at"]}}
}

/// Stages turning `events` into one document per counted subject of `experiment_id`
/// (`_id` = subject, `variant`, `n` = counted `event` events, `total` = Σ value), under
/// `attribution`.
///
/// Events carry their subject's `assigned_at`, so without an exposure event the start is on
/// every event and one `$group` per subject sums those counted (only subjects with a
/// counted event come out). With one, a subject's start depends on its other events: the
/// stages group the metric and exposure events per subject (first exposure, metric events),
/// keep exposed subjects, and filter their metric events to the start and window; every
/// exposed subject comes out, `n = 0` when none of its events counts.
fn subject_stages(experiment_id: &str, event: &str, attribution: &Attribution) -> Vec<Document> {
    let window = attribution.window_millis();
    // `ts < start + window` (`$dateAdd`: a test server has no `$add` on dates).
    let within = |ts: &str, start: &str, window: i64| -> Bson {
        bson!({"$lt": [ts, {"$dateAdd": {"startDate": start, "unit": "millisecond", "amount": window}}]})
    };
    let mut stages = Vec::new();
    match attribution.exposure_event.as_deref() {
        None => {
            let mut m = doc! {"experiment_id": experiment_id, "event": event};
            if let Some(t) = time_filter(attribution.range) {
                m.insert("ts", t);
            }
            m.extend(counted());
            stages.push(doc! {"$match": m});
            if let Some(w) = window {
                stages.push(doc! {"$match": {"$expr": within("$ts", "$assigned_at", w)}});
            }
            stages.push(doc! {"$group": {
                "_id": "$subject",
                "variant": {"$first": "$variant"},
                "n": {"$sum": 1},
                "total": {"$sum": "$value"},
            }});
        }
        Some(exposure) => {
            let mut m = doc! {"experiment_id": experiment_id, "event": {"$in": [event, exposure]}};
            m.extend(counted());
            let mut keep = vec![
                bson!({"$ne": ["$$e", Bson::Null]}),
                bson!({"$gte": ["$$e.ts", "$start"]}),
            ];
            if let Some(w) = window {
                keep.push(within("$$e.ts", "$start", w));
            }
            if let Some(from) = attribution.range.from {
                keep.push(bson!({"$gte": ["$$e.ts", bdate(from)]}));
            }
            if let Some(to) = attribution.range.to {
                keep.push(bson!({"$lt": ["$$e.ts", bdate(to)]}));
            }
            // (`$reduce`, not `$sum` of "$counted.value": a test server sums array paths
            // to 0.)
            stages.extend([
                doc! {"$match": m},
                doc! {"$group": {
                    "_id": "$subject",
                    "variant": {"$first": "$variant"},
                    "start": {"$min": {"$cond": [{"$eq": ["$event", exposure]}, "$ts", Bson::Null]}},
                    "events": {"$push": {"$cond": [
                        {"$eq": ["$event", event]},
                        {"ts": "$ts", "value": "$value"},
                        Bson::Null,
                    ]}},
                }},
                doc! {"$match": {"start": {"$ne": Bson::Null}}},
                doc! {"$project": {
                    "variant": 1,
                    "counted": {"$filter": {"input": "$events", "as": "e", "cond": {"$and": keep}}},
                }},
                doc! {"$project": {
                    "variant": 1,
                    "n": {"$size": "$counted"},
                    "total": {"$reduce": {
                        "input": "$counted",
                        "initialValue": 0.0,
                        "in": {"$add": ["$$value", "$$this.value"]},
                    }},
                }},
            ]);
        }
    }
    stages
}

/// Stages from per-subject figures (`n`, `total`) to per-variant ones: subjects, converted
/// subjects (`n > 0`), events, and over the subjects' totals capped at `cap` (`t`; negative
/// totals left as they are) Σt, Σt², Σn² and Σn·t.
fn per_variant_totals(cap: Option<f64>) -> [Document; 2] {
    let t = match cap {
        None => Bson::String("$total".to_owned()),
        Some(c) => bson!({"$cond": [
            {"$and": [{"$gte": ["$total", 0]}, {"$gt": ["$total", c]}]},
            c,
            "$total",
        ]}),
    };
    [
        doc! {"$set": {"t": t}},
        doc! {"$group": {
            "_id": "$variant",
            "subjects": {"$sum": 1},
            "converted": {"$sum": {"$cond": [{"$gt": ["$n", 0]}, 1, 0]}},
            "events": {"$sum": "$n"},
            "sum": {"$sum": "$t"},
            "sum_sq": {"$sum": {"$multiply": ["$t", "$t"]}},
            "events_sq": {"$sum": {"$multiply": ["$n", "$n"]}},
            "events_value": {"$sum": {"$multiply": ["$n", "$t"]}},
        }},
    ]
}

/// Join subjects per variant with per-variant figures (`_id` = variant, `converted`,
/// `events`, `sum`, `sum_sq`, `events_sq`, `events_value`, as [`per_variant_totals`] makes
/// them; `what` names their source), ordered by variant, like the SQL adapter.
fn combine(
    subjects: BTreeMap<String, u64>,
    figures: &[Document],
    what: &str,
) -> Result<Vec<VariantCounts>> {
    let mut by_variant: HashMap<&str, &Document> = HashMap::with_capacity(figures.len());
    for d in figures {
        by_variant.insert(get_str(d, "_id", what)?, d);
    }
    subjects
        .into_iter()
        .map(|(variant, n)| {
            let counts = match by_variant.get(variant.as_str()) {
                Some(d) => VariantCounts {
                    subjects: n,
                    converted_subjects: get_u64(d, "converted", what)?,
                    events: get_u64(d, "events", what)?,
                    sum: get_f64(d, "sum", what)?,
                    sum_of_squares: get_f64(d, "sum_sq", what)?,
                    sum_events_squared: get_u64(d, "events_sq", what)?,
                    sum_events_value: get_f64(d, "events_value", what)?,
                    variant,
                },
                None => VariantCounts {
                    subjects: n,
                    variant,
                    ..VariantCounts::default()
                },
            };
            Ok(counts)
        })
        .collect()
}

impl MongoStore {
    /// Connect to `uri`, use `database`, and create the indexes (idempotent).
    pub async fn connect(uri: &str, database: &str) -> Result<Self> {
        Self::connect_with_timeout(uri, database, None).await
    }

    /// [`MongoStore::connect`], failing when no server answers within `timeout` (for the
    /// connection and for server selection; the driver's defaults are 10 s and 30 s).
    pub async fn connect_with_timeout(
        uri: &str,
        database: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Self> {
        let mut options = mongodb::options::ClientOptions::parse(uri)
            .await
            .map_err(db_err("parsing the MongoDB URI"))?;
        if let Some(t) = timeout {
            options.connect_timeout = Some(t);
            options.server_selection_timeout = Some(t);
        }
        options.app_name.get_or_insert_with(|| "verdict".to_owned());
        let client = Client::with_options(options).map_err(db_err("connecting to MongoDB"))?;
        let db = client.database(database);
        let hello = db
            .run_command(doc! {"hello": 1_i32})
            .await
            .map_err(db_err("asking the deployment what it is"))?;
        let transactions =
            hello.get_str("setName").is_ok() || hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
        let store = Self { db, transactions };
        store.create_indexes().await?;
        Ok(store)
    }

    /// Whether the deployment runs multi-document transactions (then fenced deletes check
    /// the lease in their own transaction).
    pub fn runs_transactions(&self) -> bool {
        self.transactions
    }

    /// A fenced rollup step without the look at the lease that precedes it: what a stale
    /// holder runs when that look came just before a newer grant. For tests of the fencing
    /// the step's own writes carry.
    #[cfg(feature = "contract")]
    pub async fn rollup_step_after_lease_check(
        &self,
        max_events: usize,
        fence: &crate::jobs::Fence,
    ) -> Result<crate::rollup::RollupReport> {
        self.rollup_step(max_events, Some(fence)).await
    }

    /// The database this store uses.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    async fn create_indexes(&self) -> Result<()> {
        let unique = |keys: Document| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).build())
                .build()
        };
        let plain = |keys: Document| IndexModel::builder().keys(keys).build();
        let specs: Vec<(&str, Vec<IndexModel>)> = vec![
            (
                "experiments",
                vec![
                    unique(doc! {"environment": 1, "organization": 1, "key": 1}),
                    plain(doc! {"order": 1}),
                    plain(doc! {"environment": 1, "audience": 1, "status": 1}),
                ],
            ),
            (
                "assignments",
                vec![unique(doc! {"experiment_id": 1, "subject": 1})],
            ),
            (
                "forced_variants",
                vec![unique(doc! {"experiment_id": 1, "subject": 1})],
            ),
            (
                "events",
                vec![
                    unique(doc! {"experiment_id": 1, "event_id": 1}),
                    plain(doc! {"experiment_id": 1, "event": 1, "ts": 1}),
                    plain(doc! {"seq": 1}),
                    // Retention: expired events found without reading the rest.
                    plain(doc! {"received_at": 1}),
                ],
            ),
            ("audit", vec![plain(doc! {"experiment_id": 1, "_id": -1})]),
            ("environments", vec![plain(doc! {"order": 1})]),
            (
                "audiences",
                vec![
                    unique(doc! {"environment": 1, "key": 1}),
                    plain(doc! {"environment": 1, "order": 1}),
                ],
            ),
            (
                "api_keys",
                vec![unique(doc! {"hash": 1}), plain(doc! {"order": 1})],
            ),
            (
                "buckets",
                vec![unique(doc! {
                    "experiment_id": 1, "event": 1, "granularity": 1, "start": 1, "variant": 1
                })],
            ),
            (
                "subject_metrics",
                vec![unique(doc! {"experiment_id": 1, "event": 1, "subject": 1})],
            ),
            (
                "subject_segments",
                vec![unique(doc! {"experiment_id": 1, "subject": 1})],
            ),
            (
                "evaluation_history",
                vec![
                    // An experiment's latest points, and its purge.
                    plain(doc! {"experiment_id": 1, "_id": -1}),
                    // Retention: expired points found without reading the rest.
                    plain(doc! {"at": 1}),
                ],
            ),
            (
                "outbox",
                vec![plain(doc! {"created_at": 1, "version": 1, "pos": 1})],
            ),
            (
                "publications",
                vec![unique(
                    doc! {"environment": 1, "organization": 1, "version": -1},
                )],
            ),
            (
                "job_runs",
                vec![
                    plain(doc! {"job": 1, "started_at": -1}),
                    plain(doc! {"started_at": -1}),
                    plain(doc! {"finished_at": 1}),
                ],
            ),
        ];
        for (coll, indexes) in specs.into_iter().chain(webhooks::indexes()) {
            self.coll(coll)
                .create_indexes(indexes)
                .await
                .map_err(db_err("creating indexes"))?;
        }
        // Events stored before `seq` was a field of its own get it (their `_id`), so seq
        // ranges find them. `seq: null` also matches a missing field, through the index.
        self.coll("events")
            .update_many(
                doc! {"seq": Bson::Null},
                vec![doc! {"$set": {"seq": "$_id"}}],
            )
            .await
            .map_err(db_err("backfilling event seqs"))?;
        Ok(())
    }

    /// Advance the counter `name` by `n` and return its new value (the last one allocated).
    async fn next_seq(&self, name: &str, n: i64) -> Result<i64> {
        let d = self
            .upsert_counter(name, doc! {"$inc": {"seq": n}}, "advancing a counter")
            .await?;
        get_i64(&d, "seq", "`counters`")
    }

    /// `find_one_and_update` with upsert on counter `name`, returning the document after.
    /// Concurrent upserts of a counter that does not exist yet may lose the race to create
    /// it (E11000, or no document on some servers): the loser retries, then updates the
    /// document the winner created.
    async fn upsert_counter(
        &self,
        name: &str,
        update: impl Into<mongodb::options::UpdateModifications> + Clone,
        what: &'static str,
    ) -> Result<Document> {
        for _ in 0..5 {
            match self
                .coll("counters")
                .find_one_and_update(doc! {"_id": name}, update.clone())
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
            {
                Ok(Some(d)) => return Ok(d),
                Ok(None) => {}
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(db_err(what)(e)),
            }
        }
        Err(StoreError::corrupt(format!(
            "{what} (`{name}`): five upserts of the counter returned nothing"
        )))
    }

    /// Insert a keyed JSON record with a creation `order`; Conflict on a unique key.
    async fn insert_record(&self, coll: &str, mut d: Document, what: String) -> Result<()> {
        let order = self.next_seq(coll, 1).await?;
        d.insert("order", order);
        match self.coll(coll).insert_one(d).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => {
                Err(StoreError::Conflict(format!("{what} already exists")))
            }
            Err(e) => Err(db_err("inserting a record")(e)),
        }
    }

    /// A page of the JSON records (field `doc`) of `coll` matching `filter`, in creation
    /// `order`; `doing` names the operation for errors.
    async fn page_of<T: DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
        page: PageRequest,
        doing: &'static str,
    ) -> Result<Page<T>> {
        let c = self.coll(coll);
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err(doing))?;
        let docs = collect(
            c.find(filter)
                .sort(doc! {"order": 1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err(doing))?,
            doing,
        )
        .await?;
        let what = format!("`{coll}`");
        let items = docs
            .iter()
            .map(|d| doc_field(d, &what, doing))
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// The JSON record (field `doc`) of the document of `coll` matching `filter`, if any.
    async fn find_doc<T: DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
        doing: &'static str,
    ) -> Result<Option<T>> {
        self.coll(coll)
            .find_one(filter)
            .await
            .map_err(db_err(doing))?
            .map(|d| doc_field(&d, &format!("`{coll}`"), doing))
            .transpose()
    }

    /// Write an audit entry of experiment `experiment_id` (after the change it records).
    async fn audit(
        &self,
        experiment_id: &str,
        at: OffsetDateTime,
        actor: &str,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        let id = self.next_seq("audit", 1).await?;
        self.coll("audit")
            .insert_one(doc! {
                "_id": id,
                "experiment_id": experiment_id,
                "at": bdate(at),
                "actor": actor,
                "action": action,
                "details": details.to_string(),
            })
            .await
            .map_err(db_err("writing an audit entry"))?;
        Ok(())
    }

    /// Subjects per variant of one experiment, from the assignments.
    async fn subjects_per_variant(&self, experiment_id: &str) -> Result<BTreeMap<String, u64>> {
        const WHAT: &str = "subjects per variant of `assignments`";
        let docs = collect(
            self.coll("assignments")
                .aggregate(vec![
                    doc! {"$match": {"experiment_id": experiment_id}},
                    doc! {"$group": {"_id": "$variant", "n": {"$sum": 1}}},
                ])
                .await
                .map_err(db_err("counting subjects"))?,
            "counting subjects",
        )
        .await?;
        docs.iter()
            .map(|d| Ok((get_str(d, "_id", WHAT)?.to_owned(), get_u64(d, "n", WHAT)?)))
            .collect()
    }
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> Result<()> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map_err(db_err("pinging the server"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_required_number_is_an_error_naming_where_it_was_read() {
        let d = doc! {"count": 3_i64};
        let err = get_i64(&d, "sum", "`buckets`").unwrap_err();
        assert!(matches!(err, StoreError::Internal { source: None, .. }));
        assert_eq!(
            err.to_string(),
            "store failure while reading `buckets`: required field `sum` is missing"
        );
        assert!(get_f64(&d, "sum", "`buckets`").is_err());
    }

    #[test]
    fn a_mistyped_field_is_an_error_not_zero() {
        let d = doc! {"n": "three", "sum": true, "at": 5_i64, "fraction": 1.5};
        assert!(
            get_i64(&d, "n", "`subject_metrics`")
                .unwrap_err()
                .to_string()
                .contains("field `n` should be an integer, found String")
        );
        assert!(get_f64(&d, "sum", "`buckets`").is_err());
        assert!(get_date(&d, "at", "`webhook_attempts`").is_err());
        assert!(
            get_i64(&d, "fraction", "`counters`").is_err(),
            "a fractional double is not an integer"
        );
    }

    #[test]
    fn numbers_of_every_numeric_type_are_read() {
        let d = doc! {"a": 3_i32, "b": 4_i64, "c": 5.0, "d": 2.5};
        assert_eq!(get_i64(&d, "a", "x").unwrap(), 3);
        assert_eq!(get_i64(&d, "b", "x").unwrap(), 4);
        assert_eq!(get_i64(&d, "c", "x").unwrap(), 5);
        assert_eq!(get_f64(&d, "d", "x").unwrap(), 2.5);
        assert_eq!(get_f64(&d, "a", "x").unwrap(), 3.0);
        assert!(get_u64(&doc! {"n": -1_i64}, "n", "x").is_err());
    }

    #[test]
    fn optional_fields_are_none_when_absent_or_null_and_errors_when_mistyped() {
        let d = doc! {"code": Bson::Null, "error": "timed out", "bad": 1_i32};
        assert_eq!(opt_i64(&d, "code", "x").unwrap(), None);
        assert_eq!(opt_i64(&d, "absent", "x").unwrap(), None);
        assert_eq!(opt_str(&d, "error", "x").unwrap(), Some("timed out"));
        assert!(opt_str(&d, "bad", "x").is_err());
        assert!(opt_date(&d, "bad", "x").is_err());
        assert!(opt_array(&d, "absent", "x").unwrap().is_empty());
        assert!(opt_array(&d, "bad", "x").is_err());
    }

    #[test]
    fn combining_figures_without_a_required_sum_fails() {
        let subjects = BTreeMap::from([("control".to_owned(), 2)]);
        let figures = [doc! {
            "_id": "control", "converted": 1, "events": 2, "sum_sq": 4.0, "events_sq": 4,
            "events_value": 4.0,
        }];
        assert!(combine(subjects.clone(), &figures, "figures").is_err());
        let figures = [doc! {
            "_id": "control", "converted": 1, "events": 2, "sum": 2.0, "sum_sq": 4.0,
            "events_sq": 4, "events_value": 4.0,
        }];
        assert_eq!(
            combine(subjects, &figures, "figures").unwrap(),
            [VariantCounts {
                variant: "control".into(),
                subjects: 2,
                converted_subjects: 1,
                events: 2,
                sum: 2.0,
                sum_of_squares: 4.0,
                sum_events_squared: 4,
                sum_events_value: 4.0,
            }]
        );
    }
}
