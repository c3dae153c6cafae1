//! [`EventStore`] on MongoDB: collection `events` (`_id` = `seq`, also stored as the
//! indexed field `seq`) and the `counters` document `events` that allocates seqs.
//!
//! # Seq allocation and in-flight batches
//! Two batches can allocate seqs 1..=10 and 11..=20 and the second can be inserted first.
//! A reader that advanced a watermark to 20 at that moment would skip 1..=10 forever. So
//! each allocation registers itself in the counter document (`pending`: token, first seq,
//! time) in the SAME update that advances the counter, and removes itself once its insert
//! returned. Readers that hand out watermarks ([`EventStore::scan_events`],
//! [`crate::RollupStore::rollup`]) never go past the first seq of a pending allocation
//! ([`MongoStore::safe_seq`]).
//!
//! A writer renews its entry every [`PENDING_RENEW`] while its insert is in flight; an entry
//! not renewed for [`PENDING_LEASE`] (by the server's clock, so replicas' clocks do not
//! matter) belongs to a writer that died, is ignored by readers, and is removed by the next
//! allocation. So a replica killed mid-insert holds results back by a few seconds, and
//! leaves nothing behind in the counter. A writer that is frozen (not dead) for longer than
//! the lease could still insert events behind a watermark: those are stored but not rolled
//! up (a documented limit; the lease is many times the renewal period).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::ErrorKind;
use verdict_domain::{EventRecord, NewEvent};

use super::{
    DUPLICATE_KEY, MongoStore, bdate, collect, combine, db_err, decode, documents, encode,
    get_date, get_f64, get_i64, get_str, get_u64, opt_array, opt_str, per_variant_totals,
    subject_stages,
};
use crate::Result;
use crate::error::StoreError;
use crate::events::EventStore;
use crate::model::{AppendOutcome, Attribution, VariantCounts};
use crate::rollup::check_cap;

/// Most seqs one `scan_events` query covers.
const SCAN_WINDOW: usize = 10_000;

/// How long a seq allocation may go unrenewed before readers consider its writer dead.
pub const PENDING_LEASE: Duration = Duration::from_secs(5);

/// How often a writer renews its pending allocation while its insert is in flight.
pub const PENDING_RENEW: Duration = Duration::from_secs(1);

/// `pending` without the entries not renewed for [`PENDING_LEASE`], by the server's clock
/// (an aggregation expression; `$dateDiff`, MongoDB 5.0+, rather than subtracting dates).
fn live_pending() -> Document {
    doc! {"$filter": {
        "input": {"$ifNull": ["$pending", []]},
        "cond": {"$lt": [
            {"$dateDiff": {"startDate": "$$this.at", "endDate": "$$NOW", "unit": "millisecond"}},
            PENDING_LEASE.as_millis() as i64,
        ]},
    }}
}

const EVENTS: &str = "`events`";
const COUNTERS: &str = "`counters`";

impl MongoStore {
    /// Allocate `n` event seqs and register them as pending (one atomic update). Returns
    /// the first seq.
    async fn allocate_events(&self, n: i64, token: &str) -> Result<i64> {
        let seq = doc! {"$ifNull": ["$seq", 0_i64]};
        // Dead writers' entries are dropped in the same update.
        let pipeline = vec![
            doc! {"$set": {"pending": {"$concatArrays": [
                live_pending(),
                [{"token": token, "start": {"$add": [seq.clone(), 1_i64]}, "at": "$$NOW"}],
            ]}}},
            doc! {"$set": {"seq": {"$add": [seq, n]}}},
        ];
        let d = self
            .upsert_counter("events", pipeline, "allocating event seqs")
            .await?;
        Ok(get_i64(&d, "seq", COUNTERS)? - n + 1)
    }

    /// Renew the pending allocation `token` (its `at` to the server's now).
    async fn renew_events(&self, token: &str) {
        let renewed = vec![doc! {"$set": {"pending": {"$map": {
            "input": "$pending",
            "in": {"$cond": [
                {"$eq": ["$$this.token", token]},
                {"$mergeObjects": ["$$this", {"at": "$$NOW"}]},
                "$$this",
            ]},
        }}}}];
        if let Err(e) = self
            .coll("counters")
            .update_one(doc! {"_id": "events", "pending.token": token}, renewed)
            .await
        {
            tracing::warn!(error = %verdict_domain::ErrorChain(&e), "could not renew a pending event allocation");
        }
    }

    /// Await `work` while renewing the pending allocation `token` every [`PENDING_RENEW`].
    async fn renewing<F: std::future::Future>(&self, token: &str, work: F) -> F::Output {
        tokio::pin!(work);
        let start = tokio::time::Instant::now() + PENDING_RENEW;
        let mut renew = tokio::time::interval_at(start, PENDING_RENEW);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = renew.tick() => self.renew_events(token).await,
            }
        }
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
            tracing::warn!(error = %verdict_domain::ErrorChain(&e), "could not release a pending event allocation; it expires");
        }
    }

    /// The highest seq below every live pending allocation: readers never hand out a
    /// watermark past it.
    pub(super) async fn safe_seq(&self) -> Result<i64> {
        let found = collect(
            self.coll("counters")
                .aggregate(vec![
                    doc! {"$match": {"_id": "events"}},
                    doc! {"$project": {"seq": 1, "live": live_pending()}},
                ])
                .await
                .map_err(db_err("reading the event counter"))?,
            "reading the event counter",
        )
        .await?;
        let Some(d) = found.first() else {
            return Ok(0);
        };
        let mut safe = get_i64(d, "seq", COUNTERS)?;
        const PENDING: &str = "pending event allocations of `counters`";
        for p in documents(opt_array(d, "live", COUNTERS)?, "live", COUNTERS)? {
            safe = safe.min(get_i64(p, "start", PENDING)? - 1);
        }
        Ok(safe)
    }
}

#[async_trait]
impl EventStore for MongoStore {
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
        const ASSIGNMENTS: &str = "`assignments`";
        let mut assigned: HashMap<(String, String), (String, DateTime)> = HashMap::new();
        for d in &found {
            let key = (
                get_str(d, "experiment_id", ASSIGNMENTS)?.to_owned(),
                get_str(d, "subject", ASSIGNMENTS)?.to_owned(),
            );
            let variant = get_str(d, "variant", ASSIGNMENTS)?.to_owned();
            let at = bdate(get_date(d, "assigned_at", ASSIGNMENTS)?);
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
        let events = self.coll("events");
        let insert = events.insert_many(docs).ordered(false);
        let res = self
            .renewing(&token, std::future::IntoFuture::into_future(insert))
            .await;
        self.release_events(&token).await;
        if let Err(err) = res {
            let ErrorKind::InsertMany(im) = err.kind.as_ref() else {
                return Err(db_err("inserting events")(err));
            };
            if im.write_concern_error.is_some() {
                return Err(StoreError::unavailable("inserting events", err));
            }
            for we in im.write_errors.iter().flatten() {
                if we.code != DUPLICATE_KEY {
                    return Err(db_err("inserting events")(err));
                }
            }
            for we in im.write_errors.iter().flatten() {
                let (i, _, _) = to_insert.get(we.index).ok_or_else(|| {
                    StoreError::corrupt(format!(
                        "inserting events: the server reported an error for item {} of {}",
                        we.index,
                        to_insert.len()
                    ))
                })?;
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
                Ok(EventRecord {
                    seq: get_u64(d, "_id", EVENTS)?,
                    experiment_id: get_str(d, "experiment_id", EVENTS)?.to_owned(),
                    event_id: get_str(d, "event_id", EVENTS)?.to_owned(),
                    subject: get_str(d, "subject", EVENTS)?.to_owned(),
                    variant: get_str(d, "variant", EVENTS)?.to_owned(),
                    event: get_str(d, "event", EVENTS)?.to_owned(),
                    value: get_f64(d, "value", EVENTS)?,
                    ts: get_date(d, "ts", EVENTS)?,
                    received_at: get_date(d, "received_at", EVENTS)?,
                    meta: opt_str(d, "meta", EVENTS)?
                        .map(|m| decode(m, "scanning events (an event's meta)"))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// The per-subject figures of `subject_stages`, then per variant
    /// (`per_variant_totals`). Without an exposure event the population is every assigned
    /// subject; with one, the exposed subjects.
    async fn variant_counts(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: &Attribution,
        cap: Option<f64>,
    ) -> Result<Vec<VariantCounts>> {
        const DOING: &str = "counting variants";
        const WHAT: &str = "per-variant figures of `events`";
        check_cap(cap, DOING)?;
        let mut stages = subject_stages(experiment_id, event, attribution);
        stages.extend(per_variant_totals(cap));
        let figures = collect(
            self.coll("events")
                .aggregate(stages)
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        let subjects = match attribution.exposure_event {
            None => self.subjects_per_variant(experiment_id).await?,
            // The exposed subjects are the population.
            Some(_) => figures
                .iter()
                .map(|d| {
                    Ok((
                        get_str(d, "_id", WHAT)?.to_owned(),
                        get_u64(d, "subjects", WHAT)?,
                    ))
                })
                .collect::<Result<_>>()?,
        };
        combine(subjects, &figures, WHAT)
    }
}
