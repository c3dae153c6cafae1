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
//!   assignment" without a join (assignments never change once stored).
//! - `audit`: `_id` = an increasing id from the `counters` document `audit`.
//! - `environments`, `audiences`, `api_keys`: JSON documents with an `order` from
//!   `counters` (creation order for lists) and unique keys.
//! - `buckets`, `subject_metrics`, `rollup_state`, `evaluation_state`: rollups.
//!
//! # Seq allocation and in-flight batches
//! Two batches can allocate seqs 1..=10 and 11..=20 and the second can be inserted first.
//! A reader that advanced a watermark to 20 at that moment would skip 1..=10 forever. So
//! each allocation registers itself in the counter document (`pending`: token, first seq,
//! time) in the SAME update that advances the counter, and removes itself once its insert
//! returned. Readers that hand out watermarks ([`Store::scan_events`], [`Store::rollup`])
//! never go past the first seq of a pending allocation. A pending entry older than
//! [`PENDING_LEASE`] is considered abandoned (its writer crashed) and ignored; a writer
//! stalled longer than that could still insert events behind a watermark (documented
//! limit).
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, bson, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use verdict_domain::outbox::messages_for_change;
use verdict_domain::{
    ApiKey, Assignment, Audience, Environment, EventRecord, Experiment, NewEvent, OutboxMessage,
    Scope,
};

use crate::error::StoreError;
use crate::model::{
    AppendOutcome, Attribution, AudienceDeletion, AuditEntry, ExperimentFilter, Page, PageRequest,
    StatusChange, SubjectRecord, TimeRange, VariantCounts, WinnerChange, from_millis, to_millis,
};
use crate::rollup::{Bucket, Granularity, RollupReport};
use crate::{Result, Store};

// `impl WebhookStore for MongoStore`: a child module, so it shares this file's helpers.
#[path = "mongo_webhooks.rs"]
pub(crate) mod webhooks;

/// Most seqs one `scan_events` query covers.
const SCAN_WINDOW: usize = 10_000;

/// How long a seq allocation may stay pending before readers consider it abandoned.
pub const PENDING_LEASE: Duration = Duration::from_secs(60);

const DUPLICATE_KEY: i32 = 11000;

/// Server error codes worth retrying (network, elections, shutdown, time limits).
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// The MongoDB store. Cheap to clone (the driver's client is a handle).
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.db.name())
            .finish()
    }
}

// ---- error mapping ----------------------------------------------------------------------

pub(crate) fn is_duplicate(e: &mongodb::error::Error) -> bool {
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

pub(crate) fn is_transient(e: &mongodb::error::Error) -> bool {
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

/// Duplicate key → [`StoreError::Conflict`], network/timeouts/selection →
/// [`StoreError::Unavailable`], anything else → [`StoreError::Internal`].
pub(crate) fn db_err(context: &'static str) -> impl FnOnce(mongodb::error::Error) -> StoreError {
    move |e| {
        if is_duplicate(&e) {
            StoreError::Conflict(format!("{context}: already exists"))
        } else if is_transient(&e) {
            StoreError::Unavailable(Box::new(e))
        } else {
            StoreError::internal(context, e)
        }
    }
}

// ---- value helpers ----------------------------------------------------------------------

pub(crate) fn bdate(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis(to_millis(t))
}

pub(crate) fn from_bdate(d: DateTime) -> OffsetDateTime {
    from_millis(d.timestamp_millis())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::internal("encoding JSON", e))
}

pub(crate) fn decode<T: DeserializeOwned>(doc: &str, what: &'static str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::internal(what, e))
}

pub(crate) fn get_str<'a>(d: &'a Document, key: &str, what: &'static str) -> Result<&'a str> {
    d.get_str(key)
        .map_err(|e| StoreError::internal(format!("{what}: field {key}"), e))
}

pub(crate) fn get_date(d: &Document, key: &str, what: &'static str) -> Result<OffsetDateTime> {
    d.get_datetime(key)
        .map(|d| from_bdate(*d))
        .map_err(|e| StoreError::internal(format!("{what}: field {key}"), e))
}

/// A number of any BSON numeric type (aggregations answer int32, int64 or double).
pub(crate) fn get_i64(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

pub(crate) fn get_f64(d: &Document, key: &str) -> f64 {
    match d.get(key) {
        Some(Bson::Int32(v)) => f64::from(*v),
        Some(Bson::Int64(v)) => *v as f64,
        Some(Bson::Double(v)) => *v,
        _ => 0.0,
    }
}

pub(crate) fn doc_field<T: DeserializeOwned>(d: &Document, what: &'static str) -> Result<T> {
    decode(get_str(d, "doc", what)?, what)
}

fn org_field(org: &Option<String>) -> &str {
    org.as_deref().unwrap_or("")
}

/// `$group` stage from per-subject figures (`n`, `total`) to per-variant ones: subjects,
/// converted subjects (`n > 0`), events, Σ and Σ² of the per-subject totals.
fn per_variant_totals() -> Document {
    doc! {"$group": {
        "_id": "$variant",
        "subjects": {"$sum": 1},
        "converted": {"$sum": {"$cond": [{"$gt": ["$n", 0]}, 1, 0]}},
        "events": {"$sum": "$n"},
        "sum": {"$sum": "$total"},
        "sum_sq": {"$sum": {"$multiply": ["$total", "$total"]}},
    }}
}

pub(crate) async fn collect(
    cursor: mongodb::Cursor<Document>,
    what: &'static str,
) -> Result<Vec<Document>> {
    cursor.try_collect().await.map_err(db_err(what))
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

/// What the events of one seq range hold (see [`MongoStore::range_figures`]).
#[derive(Debug, Clone, Copy)]
struct RangeFigures {
    events: u64,
    /// The highest seq of the range's events.
    last: i64,
    hour_buckets: u64,
    day_buckets: u64,
    subjects: u64,
}

/// Only events at or after the subject's assignment count.
fn counted() -> Document {
    doc! {"$expr": {"$gte": ["$ts", "$assigned_at"]}}
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
        let store = Self {
            db: client.database(database),
        };
        store.create_indexes().await?;
        Ok(store)
    }

    /// The database this store uses.
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub(crate) fn coll(&self, name: &str) -> Collection<Document> {
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
                "outbox",
                vec![plain(doc! {"created_at": 1, "version": 1, "pos": 1})],
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
    pub(crate) async fn next_seq(&self, name: &str, n: i64) -> Result<i64> {
        let d = self
            .upsert_counter(name, doc! {"$inc": {"seq": n}}, "advancing a counter")
            .await?;
        Ok(get_i64(&d, "seq"))
    }

    /// `find_one_and_update` with upsert on counter `name`, returning the document after.
    /// Concurrent upserts of a counter that does not exist yet may lose the race to create
    /// it (E11000, or no document on some servers): the loser retries, then updates the
    /// document the winner created.
    pub(crate) async fn upsert_counter(
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
        Err(StoreError::corrupt("counter upsert returned nothing"))
    }

    /// Allocate `n` event seqs and register them as pending (one atomic update). Returns
    /// the first seq.
    async fn allocate_events(&self, n: i64, token: &str) -> Result<i64> {
        let seq = doc! {"$ifNull": ["$seq", 0_i64]};
        let pipeline = vec![
            doc! {"$set": {"pending": {"$concatArrays": [
                {"$ifNull": ["$pending", []]},
                [{"token": token, "start": {"$add": [seq.clone(), 1_i64]}, "at": "$$NOW"}],
            ]}}},
            doc! {"$set": {"seq": {"$add": [seq, n]}}},
        ];
        let d = self
            .upsert_counter("events", pipeline, "allocating event seqs")
            .await?;
        Ok(get_i64(&d, "seq") - n + 1)
    }

    async fn release_events(&self, token: &str) {
        if let Err(e) = self
            .coll("counters")
            .update_one(
                doc! {"_id": "events"},
                doc! {"$pull": {"pending": {"token": token}}},
            )
            .await
        {
            tracing::warn!(error = %e, "could not release a pending event allocation; it expires");
        }
    }

    /// The highest seq below every live pending allocation: readers never hand out a
    /// watermark past it.
    async fn safe_seq(&self) -> Result<i64> {
        let Some(d) = self
            .coll("counters")
            .find_one(doc! {"_id": "events"})
            .await
            .map_err(db_err("reading the event counter"))?
        else {
            return Ok(0);
        };
        let mut safe = get_i64(&d, "seq");
        let cutoff = DateTime::now().timestamp_millis() - PENDING_LEASE.as_millis() as i64;
        if let Ok(pending) = d.get_array("pending") {
            for p in pending.iter().filter_map(Bson::as_document) {
                let at = p
                    .get_datetime("at")
                    .map(|d| d.timestamp_millis())
                    .unwrap_or(0);
                if at >= cutoff {
                    safe = safe.min(get_i64(p, "start") - 1);
                }
            }
        }
        Ok(safe)
    }

    async fn audit(
        &self,
        experiment_id: &str,
        at: OffsetDateTime,
        actor: &str,
        action: &str,
        details: &Value,
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
            .map_err(db_err("writing audit entry"))?;
        Ok(())
    }

    async fn load_experiment(&self, id: &str) -> Result<Option<Experiment>> {
        self.coll("experiments")
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_err("reading experiment"))?
            .map(|d| doc_field(&d, "stored experiment"))
            .transpose()
    }

    fn experiment_fields(e: &Experiment) -> Result<Document> {
        Ok(doc! {
            "environment": &e.scope.environment,
            "organization": org_field(&e.scope.organization),
            "key": &e.key,
            "status": e.status.as_str(),
            "audience": e.audience.as_deref().unwrap_or(""),
            "version": e.version as i64,
            "doc": encode(e)?,
        })
    }

    /// Replace the experiment if its stored version is still `expected`; `false` when
    /// another writer changed it first.
    ///
    /// `outbox` messages ride in the same single-document update (field `outbox_pending`),
    /// so they exist if and only if the change does, without a transaction;
    /// [`MongoStore::relay_outbox`] then moves them to the `outbox` collection. Their ids are
    /// stable, so a relay interrupted and repeated never duplicates one.
    async fn save_experiment_if(
        &self,
        e: &Experiment,
        expected: u64,
        outbox: &[OutboxMessage],
    ) -> Result<bool> {
        let mut update = doc! {"$set": Self::experiment_fields(e)?};
        if !outbox.is_empty() {
            let pending = outbox
                .iter()
                .enumerate()
                .map(|(pos, m)| {
                    let mut d = Self::outbox_doc(m)?;
                    d.insert("version", e.version as i64);
                    d.insert("pos", pos as i64);
                    Ok(d)
                })
                .collect::<Result<Vec<_>>>()?;
            update.insert("$push", doc! {"outbox_pending": {"$each": pending}});
        }
        let res = self
            .coll("experiments")
            .update_one(doc! {"_id": &e.id, "version": expected as i64}, update)
            .await
            .map_err(|err| {
                if is_duplicate(&err) {
                    StoreError::Conflict(format!(
                        "an experiment with key '{}' already exists in this environment and \
                         organization",
                        e.key
                    ))
                } else {
                    db_err("updating experiment")(err)
                }
            })?;
        Ok(res.matched_count == 1)
    }

    fn outbox_doc(m: &OutboxMessage) -> Result<Document> {
        Ok(doc! {
            "_id": &m.id,
            "experiment_id": &m.experiment_id,
            "created_at": bdate(m.created_at),
            "doc": encode(m)?,
        })
    }

    /// Move the outbox messages waiting in experiment `id`'s document into the `outbox`
    /// collection: insert (duplicates ignored: an earlier relay got that far), then pull.
    async fn relay_outbox(&self, id: &str) -> Result<()> {
        let Some(d) = self
            .coll("experiments")
            .find_one(doc! {"_id": id})
            .projection(doc! {"outbox_pending": 1})
            .await
            .map_err(db_err("reading pending outbox messages"))?
        else {
            return Ok(());
        };
        let pending: Vec<Document> = d
            .get_array("outbox_pending")
            .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
            .unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<Bson> = pending
            .iter()
            .filter_map(|p| p.get("_id").cloned())
            .collect();
        match self
            .coll("outbox")
            .insert_many(pending)
            .ordered(false)
            .await
        {
            Ok(_) => {}
            Err(err) if is_duplicate(&err) => {}
            Err(err) => return Err(db_err("writing outbox messages")(err)),
        }
        self.coll("experiments")
            .update_one(
                doc! {"_id": id},
                doc! {"$pull": {"outbox_pending": {"_id": {"$in": ids}}}},
            )
            .await
            .map_err(db_err("clearing relayed outbox messages"))?;
        Ok(())
    }

    /// Relay every experiment's pending outbox messages (those a crash left behind).
    async fn relay_all_outbox(&self) -> Result<()> {
        let docs = collect(
            self.coll("experiments")
                .find(doc! {"outbox_pending.0": {"$exists": true}})
                .projection(doc! {"_id": 1})
                .await
                .map_err(db_err("finding pending outbox messages"))?,
            "finding pending outbox messages",
        )
        .await?;
        for d in docs {
            if let Ok(id) = d.get_str("_id") {
                self.relay_outbox(id).await?;
            }
        }
        Ok(())
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
            Err(e) => Err(db_err("inserting record")(e)),
        }
    }

    pub(crate) async fn page_of<T: DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
        page: PageRequest,
        what: &'static str,
    ) -> Result<Page<T>> {
        let c = self.coll(coll);
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err(what))?;
        let docs = collect(
            c.find(filter)
                .sort(doc! {"order": 1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err(what))?,
            what,
        )
        .await?;
        let items = docs
            .iter()
            .map(|d| doc_field(d, what))
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    pub(crate) async fn find_doc<T: DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
        what: &'static str,
    ) -> Result<Option<T>> {
        self.coll(coll)
            .find_one(filter)
            .await
            .map_err(db_err(what))?
            .map(|d| doc_field(&d, what))
            .transpose()
    }

    async fn read_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        let Some(d) = self
            .coll("assignments")
            .find_one(doc! {"experiment_id": experiment_id, "subject": subject})
            .await
            .map_err(db_err("reading assignment"))?
        else {
            return Ok(None);
        };
        Ok(Some(Assignment {
            experiment_id: experiment_id.to_owned(),
            subject: subject.to_owned(),
            variant: get_str(&d, "variant", "stored assignment")?.to_owned(),
            assigned_at: get_date(&d, "assigned_at", "stored assignment")?,
        }))
    }

    /// Subjects per variant of one experiment, from the assignments.
    async fn subjects_per_variant(&self, experiment_id: &str) -> Result<BTreeMap<String, u64>> {
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
        Ok(docs
            .iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), get_i64(d, "n") as u64)))
            .collect())
    }

    /// Join subjects per variant with per-variant figures (`_id` = variant, `converted`,
    /// `events`, `sum`, `sum_sq`), ordered by variant, like the SQL adapter.
    fn combine(subjects: BTreeMap<String, u64>, figures: &[Document]) -> Vec<VariantCounts> {
        let by_variant: HashMap<&str, &Document> = figures
            .iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?, d)))
            .collect();
        subjects
            .into_iter()
            .map(|(variant, n)| {
                let f = by_variant.get(variant.as_str());
                VariantCounts {
                    subjects: n,
                    converted_subjects: f.map_or(0, |d| get_i64(d, "converted") as u64),
                    events: f.map_or(0, |d| get_i64(d, "events") as u64),
                    sum: f.map_or(0.0, |d| get_f64(d, "sum")),
                    sum_of_squares: f.map_or(0.0, |d| get_f64(d, "sum_sq")),
                    variant,
                }
            })
            .collect()
    }

    /// What the events of the seq range `(lo, hi]` hold, in ONE pass over them (the range
    /// read on the `seq` index): how many, the last seq, and the rollup rows the counted
    /// ones touch.
    async fn range_figures(&self, lo: i64, hi: i64) -> Result<RangeFigures> {
        let rows = |key: Document| -> Bson {
            Bson::Array(vec![
                Bson::Document(doc! {"$match": counted()}),
                Bson::Document(doc! {"$group": {"_id": key}}),
                Bson::Document(doc! {"$count": "n"}),
            ])
        };
        let bucket = |unit: &str| {
            doc! {
                "e": "$experiment_id", "v": "$event", "x": "$variant",
                "s": {"$dateTrunc": {"date": "$ts", "unit": unit, "timezone": "UTC"}},
            }
        };
        let d = collect(
            self.coll("events")
                .aggregate(vec![
                    doc! {"$match": {"seq": {"$gt": lo, "$lte": hi}}},
                    doc! {"$facet": {
                        "range": [{"$group": {
                            "_id": Bson::Null,
                            "n": {"$sum": 1_i64},
                            "last": {"$max": "$seq"},
                        }}],
                        "hour": rows(bucket("hour")),
                        "day": rows(bucket("day")),
                        "subjects": rows(doc! {"e": "$experiment_id", "v": "$event", "s": "$subject"}),
                    }},
                ])
                .await
                .map_err(db_err("reading the rollup range"))?,
            "reading the rollup range",
        )
        .await?;
        let facet = |name: &str, field: &str| -> i64 {
            d.first()
                .and_then(|d| d.get_array(name).ok())
                .and_then(|a| a.first())
                .and_then(Bson::as_document)
                .map_or(0, |d| get_i64(d, field))
        };
        Ok(RangeFigures {
            events: facet("range", "n") as u64,
            last: facet("range", "last"),
            hour_buckets: facet("hour", "n") as u64,
            day_buckets: facet("day", "n") as u64,
            subjects: facet("subjects", "n") as u64,
        })
    }

    /// Run an aggregation that ends in `$merge` (its cursor is empty). A concurrent rollup
    /// inserting the same new key makes `$merge` fail with E11000; running it again then
    /// finds the key and applies the (guarded) update.
    async fn run_merge(&self, pipeline: Vec<Document>) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.coll("events").aggregate(pipeline.clone()).await {
                Ok(cursor) => {
                    collect(cursor, "rolling up").await?;
                    return Ok(());
                }
                Err(e) if is_duplicate(&e) && attempt < 3 => continue,
                Err(e) => return Err(db_err("rolling up")(e)),
            }
        }
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
            .map_err(db_err("ping"))?;
        Ok(())
    }

    async fn create_experiment(&self, experiment: &Experiment, actor: &str) -> Result<()> {
        let e = experiment;
        let mut d = Self::experiment_fields(e)?;
        d.insert("_id", &e.id);
        self.insert_record(
            "experiments",
            d,
            format!(
                "an experiment with key '{}' in this environment and organization (or id '{}')",
                e.key, e.id
            ),
        )
        .await?;
        self.audit(
            &e.id,
            e.created_at,
            actor,
            "created",
            &json!({"key": e.key}),
        )
        .await
    }

    async fn get_experiment(&self, scope: &Scope, key_or_id: &str) -> Result<Option<Experiment>> {
        let docs = collect(
            self.coll("experiments")
                .find(doc! {
                    "environment": &scope.environment,
                    "organization": org_field(&scope.organization),
                    "$or": [{"key": key_or_id}, {"_id": key_or_id}],
                })
                .limit(2)
                .await
                .map_err(db_err("reading experiment"))?,
            "reading experiment",
        )
        .await?;
        // A key match wins over an id match, as in the SQL adapter.
        let best = docs
            .iter()
            .find(|d| d.get_str("key").ok() == Some(key_or_id))
            .or_else(|| docs.first());
        best.map(|d| doc_field(d, "stored experiment")).transpose()
    }

    async fn list_experiments(
        &self,
        filter: &ExperimentFilter,
        page: PageRequest,
    ) -> Result<Page<Experiment>> {
        let mut f = Document::new();
        if let Some(env) = &filter.environment {
            f.insert("environment", env);
        }
        if let Some(org) = &filter.organization {
            f.insert("organization", org_field(org));
        }
        if let Some(st) = filter.status {
            f.insert("status", st.as_str());
        }
        self.page_of("experiments", f, page, "listing experiments")
            .await
    }

    async fn update_experiment(&self, experiment: &Experiment, actor: &str) -> Result<Experiment> {
        loop {
            let current = self
                .load_experiment(&experiment.id)
                .await?
                .ok_or(StoreError::NotFound)?;
            if current.version != experiment.version {
                return Err(StoreError::VersionConflict {
                    expected: experiment.version,
                    actual: current.version,
                });
            }
            let mut next = experiment.clone();
            // Status, winner and lifecycle stamps change only through their own operations.
            next.status = current.status;
            next.winner = current.winner.clone();
            next.started_at = current.started_at;
            next.completed_at = current.completed_at;
            next.created_at = current.created_at;
            next.version = current.version + 1;
            if self.save_experiment_if(&next, current.version, &[]).await? {
                self.audit(
                    &next.id,
                    next.updated_at,
                    actor,
                    "updated",
                    &json!({"version": next.version}),
                )
                .await?;
                return Ok(next);
            }
            // Changed between the read and the compare-and-set: re-read (the version
            // check above then reports the conflict).
        }
    }

    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>> {
        let ch = change;
        loop {
            let Some(mut e) = self.load_experiment(&ch.experiment_id).await? else {
                return Err(StoreError::NotFound);
            };
            if e.status != ch.from {
                return Ok(None);
            }
            let read_version = e.version;
            let before = e.clone();
            e.apply_status(ch.to, ch.at);
            let outbox = messages_for_change(&before, &e, ch.at);
            // Compare-and-set on the version read, hence on the status read.
            if self.save_experiment_if(&e, read_version, &outbox).await? {
                self.relay_outbox(&e.id).await?;
                self.audit(
                    &e.id,
                    ch.at,
                    &ch.actor,
                    "status_changed",
                    &json!({"from": ch.from, "to": ch.to}),
                )
                .await?;
                return Ok(Some(e));
            }
        }
    }

    async fn set_winner(&self, change: &WinnerChange) -> Result<Experiment> {
        let ch = change;
        loop {
            let mut e = self
                .load_experiment(&ch.experiment_id)
                .await?
                .ok_or(StoreError::NotFound)?;
            if let Some(expected) = ch.expected_version
                && expected != e.version
            {
                return Err(StoreError::VersionConflict {
                    expected,
                    actual: e.version,
                });
            }
            let read_version = e.version;
            let at = ch.winner.decided_at;
            let previous = e.winner.as_ref().map(|w| w.variant.clone());
            let before = e.clone();
            let from = e.apply_winner(ch.winner.clone(), ch.complete);
            let outbox = messages_for_change(&before, &e, at);
            if !self.save_experiment_if(&e, read_version, &outbox).await? {
                continue;
            }
            self.relay_outbox(&e.id).await?;
            self.audit(
                &e.id,
                at,
                &ch.actor,
                "winner_set",
                &json!({"from": previous, "to": ch.winner.variant, "source": ch.winner.source}),
            )
            .await?;
            if e.status != from {
                self.audit(
                    &e.id,
                    at,
                    &ch.actor,
                    "status_changed",
                    &json!({"from": from, "to": e.status}),
                )
                .await?;
            }
            return Ok(e);
        }
    }

    async fn list_outbox(&self, page: PageRequest) -> Result<Page<OutboxMessage>> {
        self.relay_all_outbox().await?;
        let c = self.coll("outbox");
        let total = c
            .count_documents(doc! {})
            .await
            .map_err(db_err("counting outbox messages"))?;
        let docs = collect(
            c.find(doc! {})
                .sort(doc! {"created_at": 1, "version": 1, "pos": 1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err("listing outbox messages"))?,
            "listing outbox messages",
        )
        .await?;
        let items = docs
            .iter()
            .map(|d| doc_field(d, "stored outbox message"))
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    async fn list_audit(&self, experiment_id: &str, page: PageRequest) -> Result<Page<AuditEntry>> {
        let c = self.coll("audit");
        let filter = doc! {"experiment_id": experiment_id};
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err("counting audit entries"))?;
        let docs = collect(
            c.find(filter)
                .sort(doc! {"_id": -1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err("listing audit entries"))?,
            "listing audit entries",
        )
        .await?;
        let items = docs
            .iter()
            .map(|d| {
                Ok(AuditEntry {
                    id: get_i64(d, "_id") as u64,
                    experiment_id: experiment_id.to_owned(),
                    at: get_date(d, "at", "audit entry")?,
                    actor: get_str(d, "actor", "audit entry")?.to_owned(),
                    action: get_str(d, "action", "audit entry")?.to_owned(),
                    details: decode(get_str(d, "details", "audit entry")?, "audit details")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        self.read_assignment(experiment_id, subject).await
    }

    async fn get_or_create_assignment(
        &self,
        assignment: &Assignment,
    ) -> Result<(Assignment, bool)> {
        // Callers look for a stored assignment first: go straight to the upsert.
        let a = assignment;
        let res = self
            .coll("assignments")
            .update_one(
                doc! {"experiment_id": &a.experiment_id, "subject": &a.subject},
                doc! {"$setOnInsert": {
                    "variant": &a.variant,
                    "assigned_at": bdate(a.assigned_at),
                }},
            )
            .upsert(true)
            .await;
        let created = match res {
            Ok(r) => r.upserted_id.is_some(),
            // Two upserts raced on the unique index: the other one stored it.
            Err(e) if is_duplicate(&e) => false,
            Err(e) => return Err(db_err("storing assignment")(e)),
        };
        if created {
            // As it reads back: stored to the millisecond.
            let stored = Assignment {
                assigned_at: crate::model::truncate_to_millis(a.assigned_at),
                ..a.clone()
            };
            return Ok((stored, true));
        }
        let stored = self
            .read_assignment(&a.experiment_id, &a.subject)
            .await?
            .ok_or_else(|| StoreError::corrupt("assignment vanished after upsert"))?;
        Ok((stored, created))
    }

    async fn set_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
        variant: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let c = self.coll("forced_variants");
        let key = doc! {"experiment_id": experiment_id, "subject": subject};
        match variant {
            Some(v) => {
                let res = c
                    .update_one(key.clone(), doc! {"$set": {"variant": v}})
                    .upsert(true)
                    .await;
                match res {
                    Ok(_) => {}
                    // A concurrent upsert inserted it: set it on the stored document.
                    Err(e) if is_duplicate(&e) => {
                        c.update_one(key, doc! {"$set": {"variant": v}})
                            .await
                            .map_err(db_err("writing forced variant"))?;
                    }
                    Err(e) => return Err(db_err("writing forced variant")(e)),
                }
            }
            None => {
                c.delete_one(key)
                    .await
                    .map_err(db_err("clearing forced variant"))?;
            }
        }
        self.audit(
            experiment_id,
            OffsetDateTime::now_utc(),
            actor,
            "forced_variant_set",
            &json!({"subject": subject, "variant": variant}),
        )
        .await
    }

    async fn get_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<String>> {
        let d = self
            .coll("forced_variants")
            .find_one(doc! {"experiment_id": experiment_id, "subject": subject})
            .await
            .map_err(db_err("reading forced variant"))?;
        d.map(|d| get_str(&d, "variant", "forced variant").map(str::to_owned))
            .transpose()
    }

    async fn has_forced_variants(&self, experiment_id: &str) -> Result<bool> {
        let found = self
            .coll("forced_variants")
            .find_one(doc! {"experiment_id": experiment_id})
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_err("looking for forced variants"))?;
        Ok(found.is_some())
    }

    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        let (forced, assignment) = futures::try_join!(
            self.get_forced_variant(experiment_id, subject),
            self.read_assignment(experiment_id, subject)
        )?;
        Ok(SubjectRecord { forced, assignment })
    }

    async fn append_events(&self, batch: Vec<NewEvent>) -> Result<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // 1. The assignments of the batch's (experiment, subject) pairs, in ONE query.
        let mut pairs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in &batch {
            pairs
                .entry(e.experiment_id.as_str())
                .or_default()
                .insert(e.subject.as_str());
        }
        let or: Vec<Document> = pairs
            .iter()
            .map(|(exp, subjects)| {
                doc! {"experiment_id": *exp, "subject": {"$in": subjects.iter().copied().collect::<Vec<_>>()}}
            })
            .collect();
        let found = collect(
            self.coll("assignments")
                .find(doc! {"$or": or})
                .await
                .map_err(db_err("looking up assignments"))?,
            "looking up assignments",
        )
        .await?;
        let mut assigned: HashMap<(String, String), (String, DateTime)> = HashMap::new();
        for d in &found {
            let key = (
                get_str(d, "experiment_id", "assignment")?.to_owned(),
                get_str(d, "subject", "assignment")?.to_owned(),
            );
            let variant = get_str(d, "variant", "assignment")?.to_owned();
            let at = *d
                .get_datetime("assigned_at")
                .map_err(|e| StoreError::internal("assignment: assigned_at", e))?;
            assigned.insert(key, (variant, at));
        }

        // 2. Attribution and duplicates within the batch (the later copy is the duplicate).
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut to_insert: Vec<(usize, &str, DateTime)> = Vec::new();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for (i, e) in batch.iter().enumerate() {
            let Some((variant, at)) = assigned.get(&(e.experiment_id.clone(), e.subject.clone()))
            else {
                outcomes.push(AppendOutcome::NotInExperiment);
                continue;
            };
            if e.variant.as_ref().is_some_and(|claimed| claimed != variant) {
                outcomes.push(AppendOutcome::VariantMismatch);
                continue;
            }
            if !seen.insert((&e.experiment_id, &e.event_id)) {
                outcomes.push(AppendOutcome::Duplicate);
                continue;
            }
            outcomes.push(AppendOutcome::Accepted);
            to_insert.push((i, variant.as_str(), *at));
        }
        if to_insert.is_empty() {
            return Ok(outcomes);
        }

        // 3. Seqs for the survivors, then one unordered insert; E11000 per item means an
        //    earlier batch stored that (experiment, event_id).
        let token = uuid::Uuid::new_v4().to_string();
        let first = self.allocate_events(to_insert.len() as i64, &token).await?;
        let docs = to_insert
            .iter()
            .enumerate()
            .map(|(k, (i, variant, assigned_at))| {
                let e = &batch[*i];
                let mut d = doc! {
                    "_id": first + k as i64,
                    "seq": first + k as i64,
                    "experiment_id": &e.experiment_id,
                    "event_id": &e.event_id,
                    "subject": &e.subject,
                    "variant": *variant,
                    "event": &e.event,
                    "value": e.value,
                    "ts": bdate(e.ts),
                    "received_at": bdate(e.received_at),
                    "assigned_at": *assigned_at,
                };
                if let Some(meta) = &e.meta {
                    d.insert("meta", encode(meta)?);
                }
                Ok(d)
            })
            .collect::<Result<Vec<_>>>();
        let docs = match docs {
            Ok(d) => d,
            Err(e) => {
                self.release_events(&token).await;
                return Err(e);
            }
        };
        let res = self.coll("events").insert_many(docs).ordered(false).await;
        self.release_events(&token).await;
        if let Err(err) = res {
            let ErrorKind::InsertMany(im) = err.kind.as_ref() else {
                return Err(db_err("inserting events")(err));
            };
            if im.write_concern_error.is_some() {
                return Err(StoreError::Unavailable(Box::new(err)));
            }
            for we in im.write_errors.iter().flatten() {
                if we.code != DUPLICATE_KEY {
                    return Err(db_err("inserting events")(err));
                }
            }
            for we in im.write_errors.iter().flatten() {
                let (i, _, _) = to_insert
                    .get(we.index)
                    .ok_or_else(|| StoreError::corrupt("insert_many error index out of range"))?;
                outcomes[*i] = AppendOutcome::Duplicate;
            }
        }
        Ok(outcomes)
    }

    async fn scan_events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRecord>> {
        // Never past an in-flight allocation: a caller keeping the last seq as a watermark
        // would skip the events still being inserted below it.
        let safe = self.safe_seq().await?;
        // Seq windows of at most the events still wanted: seqs are unique, so a window
        // never holds more; gaps (seqs of rejected duplicates) make it hold fewer, and the
        // next window goes on. A server reads a whole window however small the limit.
        let mut docs = Vec::new();
        let mut lo = i64::try_from(after_seq).unwrap_or(i64::MAX);
        while docs.len() < limit && lo < safe {
            let want = (limit - docs.len()).min(SCAN_WINDOW) as i64;
            let hi = lo.saturating_add(want).min(safe);
            docs.extend(
                collect(
                    self.coll("events")
                        .find(doc! {"seq": {"$gt": lo, "$lte": hi}})
                        .sort(doc! {"seq": 1})
                        .await
                        .map_err(db_err("scanning events"))?,
                    "scanning events",
                )
                .await?,
            );
            lo = hi;
        }
        docs.iter()
            .map(|d| {
                const W: &str = "stored event";
                Ok(EventRecord {
                    seq: get_i64(d, "_id") as u64,
                    experiment_id: get_str(d, "experiment_id", W)?.to_owned(),
                    event_id: get_str(d, "event_id", W)?.to_owned(),
                    subject: get_str(d, "subject", W)?.to_owned(),
                    variant: get_str(d, "variant", W)?.to_owned(),
                    event: get_str(d, "event", W)?.to_owned(),
                    value: get_f64(d, "value"),
                    ts: get_date(d, "ts", W)?,
                    received_at: get_date(d, "received_at", W)?,
                    meta: match d.get_str("meta") {
                        Ok(m) => Some(decode(m, "event meta")?),
                        Err(_) => None,
                    },
                })
            })
            .collect()
    }

    /// Events carry their subject's `assigned_at`, so without an exposure event the start
    /// is on every event and one `$group` per subject sums those counted. With one, a
    /// subject's start depends on its other events: the pipeline groups the metric and
    /// exposure events per subject (first exposure, metric events), keeps exposed subjects,
    /// and filters their metric events to the start and window before summing per variant.
    async fn variant_counts(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: &Attribution,
    ) -> Result<Vec<VariantCounts>> {
        const WHAT: &str = "counting variants";
        let window = attribution.window_millis();
        // `ts < start + window` (`$dateAdd`: a test server has no `$add` on dates).
        let within = |ts: &str, start: &str, window: i64| -> Bson {
            bson!({"$lt": [ts, {"$dateAdd": {"startDate": start, "unit": "millisecond", "amount": window}}]})
        };
        let exposure = attribution.exposure_event.as_deref();
        let mut stages = Vec::new();
        match exposure {
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
                let mut m =
                    doc! {"experiment_id": experiment_id, "event": {"$in": [event, exposure]}};
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
        stages.push(per_variant_totals());
        let figures = collect(
            self.coll("events")
                .aggregate(stages)
                .await
                .map_err(db_err(WHAT))?,
            WHAT,
        )
        .await?;
        let subjects = match exposure {
            None => self.subjects_per_variant(experiment_id).await?,
            // The exposed subjects are the population.
            Some(_) => figures
                .iter()
                .filter_map(|d| {
                    Some((
                        d.get_str("_id").ok()?.to_owned(),
                        get_i64(d, "subjects") as u64,
                    ))
                })
                .collect(),
        };
        Ok(Self::combine(subjects, &figures))
    }

    /// Crash safety without transactions (see the module docs for why there are none):
    ///
    /// 1. The range `(from, to]` is chosen (never past an in-flight allocation) and
    ///    recorded in `rollup_state` as `pending_to` BEFORE anything is merged, with a
    ///    compare-and-set on the watermark (concurrent rollups: one records, the other
    ///    re-reads and works on the same range).
    /// 2. Three `$merge` aggregations (hour buckets, day buckets, per-subject figures) fold
    ///    the range's events into their targets. Every target document carries `applied`,
    ///    the `to` of the last range folded into it; the `whenMatched` pipeline adds only
    ///    when `applied < to`, and a new document is inserted with `applied = to`.
    /// 3. The watermark advances to `to` and `pending_to` is cleared (compare-and-set).
    ///
    /// A crash anywhere leaves `pending_to`; the next call resumes that exact range, and
    /// step 2 skips the documents already folded (`applied == to`) and adds to the rest,
    /// so every event is counted exactly once. This relies on ranges being folded in
    /// increasing order (they are: a new range starts at the watermark) and on the range's
    /// events never changing (events are immutable, and the range stops below pending
    /// allocations).
    ///
    /// Cost follows the new events, not the history: every query starts with a `$match`
    /// holding only the seq range (served by the `seq` index; the attribution `$expr`
    /// is a stage of its own, as a server may not use an index for a `$match` mixing
    /// both), and the range is looked for in seq windows of at most `max_events` seqs,
    /// so no query reads more than the events it folds.
    async fn rollup(&self, max_events: usize) -> Result<RollupReport> {
        let state = self.coll("rollup_state");
        let max = i64::try_from(max_events.max(1)).unwrap_or(i64::MAX);
        let (from, to, figures) = loop {
            let st = state
                .find_one(doc! {"_id": "events"})
                .await
                .map_err(db_err("reading the rollup watermark"))?;
            let from = st.as_ref().map_or(0, |d| get_i64(d, "seq"));
            let pending = st
                .as_ref()
                .and_then(|d| d.get("pending_to"))
                .and_then(|b| match b {
                    Bson::Int64(v) => Some(*v),
                    Bson::Int32(v) => Some(i64::from(*v)),
                    _ => None,
                });
            if let Some(to) = pending {
                // Resume an interrupted (or concurrent) run of exactly this range.
                break (from, to, self.range_figures(from, to).await?);
            }
            // The first window of at most `max` seqs past the watermark holding events.
            // Seqs are unique, so it holds at most `max` events; gaps (seqs of rejected
            // duplicates) are skipped, and the range ends at its last event.
            let safe = self.safe_seq().await?;
            let mut lo = from;
            let figures = loop {
                if lo >= safe {
                    return Ok(RollupReport {
                        watermark: from as u64,
                        ..Default::default()
                    });
                }
                let hi = lo.saturating_add(max).min(safe);
                let f = self.range_figures(lo, hi).await?;
                if f.events > 0 {
                    break f;
                }
                lo = hi;
            };
            let to = figures.last;
            let res = state
                .update_one(
                    doc! {"_id": "events", "seq": from, "pending_to": Bson::Null},
                    doc! {"$set": {"seq": from, "pending_to": to}},
                )
                .upsert(true)
                .await;
            match res {
                Ok(r) if r.matched_count == 1 || r.upserted_id.is_some() => {
                    break (from, to, figures);
                }
                // Another rollup moved first: look again.
                Ok(_) => continue,
                Err(e) if is_duplicate(&e) => continue,
                Err(e) => return Err(db_err("recording the rollup range")(e)),
            }
        };

        let range = doc! {"$match": {"seq": {"$gt": from, "$lte": to}}};
        let counted = doc! {"$match": counted()};
        let guarded = |field: &str| -> Bson {
            Bson::Document(doc! {"$cond": [
                {"$lt": ["$applied", to]},
                {"$add": [format!("${field}"), format!("$$new.{field}")]},
                format!("${field}"),
            ]})
        };
        for g in [Granularity::Hour, Granularity::Day] {
            let unit = g.as_str();
            self.run_merge(vec![
                range.clone(),
                counted.clone(),
                doc! {"$group": {
                    "_id": {
                        "experiment_id": "$experiment_id",
                        "event": "$event",
                        "variant": "$variant",
                        "start": {"$dateTrunc": {"date": "$ts", "unit": unit, "timezone": "UTC"}},
                    },
                    "count": {"$sum": 1_i64},
                    "sum": {"$sum": "$value"},
                    "sum_sq": {"$sum": {"$multiply": ["$value", "$value"]}},
                }},
                doc! {"$project": {
                    "_id": 0,
                    "experiment_id": "$_id.experiment_id",
                    "event": "$_id.event",
                    "granularity": {"$literal": unit},
                    "start": "$_id.start",
                    "variant": "$_id.variant",
                    "count": 1,
                    "sum": 1,
                    "sum_sq": 1,
                    "applied": {"$literal": to},
                }},
                doc! {"$merge": {
                    "into": "buckets",
                    "on": ["experiment_id", "event", "granularity", "start", "variant"],
                    "whenMatched": [{"$set": {
                        "count": guarded("count"),
                        "sum": guarded("sum"),
                        "sum_sq": guarded("sum_sq"),
                        "applied": {"$max": ["$applied", to]},
                    }}],
                    "whenNotMatched": "insert",
                }},
            ])
            .await?;
        }
        self.run_merge(vec![
            range,
            counted,
            doc! {"$group": {
                "_id": {"experiment_id": "$experiment_id", "event": "$event", "subject": "$subject"},
                "variant": {"$first": "$variant"},
                "n": {"$sum": 1_i64},
                "total": {"$sum": "$value"},
                "first_ts": {"$min": "$ts"},
            }},
            doc! {"$project": {
                "_id": 0,
                "experiment_id": "$_id.experiment_id",
                "event": "$_id.event",
                "subject": "$_id.subject",
                "variant": 1,
                "n": 1,
                "total": 1,
                "first_ts": 1,
                "applied": {"$literal": to},
            }},
            doc! {"$merge": {
                "into": "subject_metrics",
                "on": ["experiment_id", "event", "subject"],
                "whenMatched": [{"$set": {
                    "n": guarded("n"),
                    "total": guarded("total"),
                    "first_ts": {"$min": ["$first_ts", "$$new.first_ts"]},
                    "applied": {"$max": ["$applied", to]},
                }}],
                "whenNotMatched": "insert",
            }},
        ])
        .await?;

        state
            .update_one(
                doc! {"_id": "events", "seq": from, "pending_to": to},
                doc! {"$set": {"seq": to, "pending_to": Bson::Null}},
            )
            .await
            .map_err(db_err("advancing the rollup watermark"))?;
        Ok(RollupReport {
            events: figures.events,
            buckets_written: figures.hour_buckets + figures.day_buckets,
            subjects_written: figures.subjects,
            watermark: to as u64,
        })
    }

    async fn rollup_watermark(&self) -> Result<u64> {
        let st = self
            .coll("rollup_state")
            .find_one(doc! {"_id": "events"})
            .await
            .map_err(db_err("reading the rollup watermark"))?;
        Ok(st.map_or(0, |d| get_i64(&d, "seq")) as u64)
    }

    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
    ) -> Result<Vec<VariantCounts>> {
        let figures = collect(
            self.coll("subject_metrics")
                .aggregate(vec![
                    doc! {"$match": {"experiment_id": experiment_id, "event": event}},
                    per_variant_totals(),
                ])
                .await
                .map_err(db_err("reading rolled-up counts"))?,
            "reading rolled-up counts",
        )
        .await?;
        let subjects = self.subjects_per_variant(experiment_id).await?;
        Ok(Self::combine(subjects, &figures))
    }

    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>> {
        let mut f = doc! {
            "experiment_id": experiment_id,
            "event": event,
            "granularity": granularity.as_str(),
        };
        if let Some(t) = time_filter(range) {
            f.insert("start", t);
        }
        let docs = collect(
            self.coll("buckets")
                .find(f)
                .sort(doc! {"start": 1, "variant": 1})
                .await
                .map_err(db_err("reading buckets"))?,
            "reading buckets",
        )
        .await?;
        docs.iter()
            .map(|d| {
                Ok(Bucket {
                    variant: get_str(d, "variant", "bucket")?.to_owned(),
                    event: event.to_owned(),
                    start: get_date(d, "start", "bucket")?,
                    count: get_i64(d, "count") as u64,
                    sum: get_f64(d, "sum"),
                    sum_of_squares: get_f64(d, "sum_sq"),
                })
            })
            .collect()
    }

    async fn get_evaluation_state(&self, experiment_id: &str) -> Result<Option<Value>> {
        let d = self
            .coll("evaluation_state")
            .find_one(doc! {"_id": experiment_id})
            .await
            .map_err(db_err("reading evaluation state"))?;
        d.map(|d| {
            decode(
                get_str(&d, "state", "evaluation state")?,
                "evaluation state",
            )
        })
        .transpose()
    }

    async fn put_evaluation_state(&self, experiment_id: &str, state: &Value) -> Result<()> {
        let c = self.coll("evaluation_state");
        let filter = doc! {"_id": experiment_id};
        let update = doc! {"$set": {"state": state.to_string()}};
        match c
            .update_one(filter.clone(), update.clone())
            .upsert(true)
            .await
        {
            Ok(_) => Ok(()),
            // A concurrent upsert inserted it: overwrite.
            Err(e) if is_duplicate(&e) => c
                .update_one(filter, update)
                .await
                .map(|_| ())
                .map_err(db_err("writing evaluation state")),
            Err(e) => Err(db_err("writing evaluation state")(e)),
        }
    }

    async fn create_environment(&self, environment: &Environment) -> Result<()> {
        self.insert_record(
            "environments",
            doc! {"_id": &environment.key, "doc": encode(environment)?},
            format!("environment '{}'", environment.key),
        )
        .await
    }

    async fn get_environment(&self, key: &str) -> Result<Option<Environment>> {
        self.find_doc("environments", doc! {"_id": key}, "reading environment")
            .await
    }

    async fn list_environments(&self, page: PageRequest) -> Result<Page<Environment>> {
        self.page_of(
            "environments",
            Document::new(),
            page,
            "listing environments",
        )
        .await
    }

    async fn create_audience(&self, audience: &Audience) -> Result<()> {
        self.insert_record(
            "audiences",
            doc! {
                "environment": &audience.environment,
                "key": &audience.key,
                "doc": encode(audience)?,
            },
            format!(
                "audience '{}' in environment '{}'",
                audience.key, audience.environment
            ),
        )
        .await
    }

    async fn get_audience(&self, environment: &str, key: &str) -> Result<Option<Audience>> {
        self.find_doc(
            "audiences",
            doc! {"environment": environment, "key": key},
            "reading audience",
        )
        .await
    }

    async fn list_audiences(&self, environment: &str, page: PageRequest) -> Result<Page<Audience>> {
        self.page_of(
            "audiences",
            doc! {"environment": environment},
            page,
            "listing audiences",
        )
        .await
    }

    async fn update_audience(&self, audience: &Audience) -> Result<Audience> {
        let filter = doc! {"environment": &audience.environment, "key": &audience.key};
        let current: Audience = self
            .find_doc("audiences", filter.clone(), "reading audience")
            .await?
            .ok_or(StoreError::NotFound)?;
        let next = Audience {
            created_at: current.created_at,
            ..audience.clone()
        };
        let res = self
            .coll("audiences")
            .update_one(filter, doc! {"$set": {"doc": encode(&next)?}})
            .await
            .map_err(db_err("updating audience"))?;
        if res.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(next)
    }

    /// Check, then delete: not one atomic step on MongoDB without a transaction. An
    /// experiment activated between the check and the delete keeps running with a deleted
    /// audience (the window is one round trip).
    async fn delete_audience(&self, environment: &str, key: &str) -> Result<AudienceDeletion> {
        let users = collect(
            self.coll("experiments")
                .find(doc! {"environment": environment, "audience": key, "status": "running"})
                .sort(doc! {"key": 1})
                .projection(doc! {"key": 1})
                .await
                .map_err(db_err("checking audience use"))?,
            "checking audience use",
        )
        .await?;
        if !users.is_empty() {
            let keys = users
                .iter()
                .map(|d| get_str(d, "key", "experiment").map(str::to_owned))
                .collect::<Result<_>>()?;
            return Ok(AudienceDeletion::InUse(keys));
        }
        let res = self
            .coll("audiences")
            .delete_one(doc! {"environment": environment, "key": key})
            .await
            .map_err(db_err("deleting audience"))?;
        Ok(if res.deleted_count == 1 {
            AudienceDeletion::Deleted
        } else {
            AudienceDeletion::NotFound
        })
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        // The hash is not part of the serialized record; it lives in its own field.
        self.insert_record(
            "api_keys",
            doc! {"_id": &key.id, "hash": &key.hash, "doc": encode(key)?},
            "an API key with this id or secret".to_owned(),
        )
        .await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        let found: Option<ApiKey> = self
            .find_doc("api_keys", doc! {"hash": hash}, "reading API key")
            .await?;
        Ok(found.map(|k| ApiKey {
            hash: hash.to_owned(),
            ..k
        }))
    }

    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>> {
        self.page_of("api_keys", Document::new(), page, "listing API keys")
            .await
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let Some(mut key): Option<ApiKey> = self
            .find_doc("api_keys", doc! {"_id": id}, "reading API key")
            .await?
        else {
            return Ok(false);
        };
        if key.revoked_at.is_some() {
            return Ok(true);
        }
        key.revoked_at = Some(at);
        // Only the first revocation stamps the time.
        self.coll("api_keys")
            .update_one(
                doc! {"_id": id, "revoked": {"$ne": true}},
                doc! {"$set": {"doc": encode(&key)?, "revoked": true}},
            )
            .await
            .map_err(db_err("revoking API key"))?;
        Ok(true)
    }
}
