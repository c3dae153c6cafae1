//! [`RollupStore`] on MongoDB: collections `buckets`, `subject_metrics`, `rollup_state`
//! (the watermark and the range being folded) and `evaluation_state`. A rollup step is
//! `$group` + `$merge` pipelines over a seq range of `events`, made idempotent instead of
//! transactional (see [`RollupStore::rollup`] below).

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::{
    MongoStore, collect, combine, counted, db_err, decode, documents, get_date, get_f64, get_i64,
    get_str, get_u64, is_duplicate, opt_i64, per_variant_totals, subject_stages, time_filter,
};
use crate::jobs::Fence;
use crate::model::{Attribution, TimeRange, VariantCounts};
use crate::rollup::{Bucket, Granularity, RollupReport, RollupStore, check_cap, quantile_position};
use crate::{Result, StoreError};

const ROLLUP_STATE: &str = "`rollup_state`";

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

impl MongoStore {
    /// What the events of the seq range `(lo, hi]` hold, in ONE pass over them (the range
    /// read on the `seq` index): how many, the last seq, and the rollup rows the counted
    /// ones touch.
    async fn range_figures(&self, lo: i64, hi: i64) -> Result<RangeFigures> {
        const WHAT: &str = "the rollup range's figures of `events`";
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
        let found = collect(
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
        // `$facet` answers one document, whose facets are empty when no event matched.
        let d = found.first().ok_or_else(|| {
            crate::StoreError::corrupt(format!("reading {WHAT}: the aggregation answered nothing"))
        })?;
        let facet = |name: &str, field: &str| -> Result<i64> {
            let items = match super::get_bson(d, name, WHAT)? {
                Bson::Array(items) => items,
                other => return Err(super::mistyped(WHAT, name, "an array", other)),
            };
            match documents(items, name, WHAT)?.first() {
                Some(row) => get_i64(row, field, WHAT),
                None => Ok(0),
            }
        };
        Ok(RangeFigures {
            events: facet("range", "n")? as u64,
            last: facet("range", "last")?,
            hour_buckets: facet("hour", "n")? as u64,
            day_buckets: facet("day", "n")? as u64,
            subjects: facet("subjects", "n")? as u64,
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

/// The fencing token last recorded in `rollup_state` by a fenced step (0 before any).
fn state_fence(st: &Document) -> Result<u64> {
    Ok(opt_i64(st, "fence_token", ROLLUP_STATE)?.map_or(0, |t| t.max(0) as u64))
}

/// [`StoreError::Fenced`] when a newer token than `fence`'s has written `st`.
fn check_state_fence(st: &Document, fence: Option<&Fence>) -> Result<()> {
    match fence {
        Some(f) if state_fence(st)? > f.token => Err(StoreError::Fenced {
            job: f.job.clone(),
            token: f.token,
        }),
        _ => Ok(()),
    }
}

/// Make a compare-and-set on `rollup_state` also require that no newer token than
/// `fence`'s wrote there (a missing `fence_token` counts as older), and record `fence`'s.
fn fence_write(filter: &mut Document, set: &mut Document, fence: Option<&Fence>) {
    if let Some(f) = fence {
        let token = i64::try_from(f.token).unwrap_or(i64::MAX);
        filter.insert("fence_token", doc! {"$not": {"$gt": token}});
        set.insert("fence_token", token);
    }
}

impl MongoStore {
    /// One step of [`RollupStore::rollup`], its state changes fenced by `fence` (see
    /// [`RollupStore::rollup_fenced`]).
    pub(super) async fn rollup_step(
        &self,
        max_events: usize,
        fence: Option<&Fence>,
    ) -> Result<RollupReport> {
        let state = self.coll("rollup_state");
        let max = i64::try_from(max_events.max(1)).unwrap_or(i64::MAX);
        let (from, to, figures) = loop {
            let st = state
                .find_one(doc! {"_id": "events"})
                .await
                .map_err(db_err("reading the rollup watermark"))?;
            let from = st
                .as_ref()
                .map_or(Ok(0), |d| get_i64(d, "seq", ROLLUP_STATE))?;
            let pending = st
                .as_ref()
                .map_or(Ok(None), |d| opt_i64(d, "pending_to", ROLLUP_STATE))?;
            if let Some(st) = &st {
                check_state_fence(st, fence)?;
            }
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
            let mut filter = doc! {"_id": "events", "seq": from, "pending_to": Bson::Null};
            let mut set = doc! {"seq": from, "pending_to": to};
            fence_write(&mut filter, &mut set, fence);
            let res = state
                .update_one(filter, doc! {"$set": set})
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

        let mut filter = doc! {"_id": "events", "seq": from, "pending_to": to};
        let mut set = doc! {"seq": to, "pending_to": Bson::Null};
        fence_write(&mut filter, &mut set, fence);
        let advanced = state
            .update_one(filter, doc! {"$set": set})
            .await
            .map_err(db_err("advancing the rollup watermark"))?;
        if advanced.matched_count == 0 {
            // A concurrent step advanced it (fine: the range is folded once), unless a newer
            // lease holder took over, which this step must report.
            if let Some(st) = state
                .find_one(doc! {"_id": "events"})
                .await
                .map_err(db_err("reading the rollup watermark"))?
            {
                check_state_fence(&st, fence)?;
            }
        }
        Ok(RollupReport {
            events: figures.events,
            buckets_written: figures.hour_buckets + figures.day_buckets,
            subjects_written: figures.subjects,
            watermark: to as u64,
        })
    }
}

#[async_trait]
impl RollupStore for MongoStore {
    /// Crash safety without transactions (see the module docs of the adapter for why there
    /// are none):
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
        self.rollup_step(max_events, None).await
    }

    /// Fenced in the same atomic writes as the step itself: the compare-and-sets of steps
    /// 1 and 3 on `rollup_state` also require that no newer token than the run's has
    /// written there (`fence_token`), and record the run's. Once a newer lease holder has
    /// recorded a range, a stale holder's step changes no state, whenever it wakes up; the
    /// folds of step 2 it may still be running are those of a range already recorded, which
    /// add nothing twice (the `applied` guard). The lease is also looked at first, so a
    /// stale holder usually stops before reading anything.
    async fn rollup_fenced(
        &self,
        max_events: usize,
        fence: Option<&Fence>,
    ) -> Result<RollupReport> {
        self.check_fence(fence).await?;
        self.rollup_step(max_events, fence).await
    }

    async fn rollup_watermark(&self) -> Result<u64> {
        let st = self
            .coll("rollup_state")
            .find_one(doc! {"_id": "events"})
            .await
            .map_err(db_err("reading the rollup watermark"))?;
        st.map_or(Ok(0), |d| get_u64(&d, "seq", ROLLUP_STATE))
    }

    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
        cap: Option<f64>,
    ) -> Result<Vec<VariantCounts>> {
        check_cap(cap, "reading rolled-up counts")?;
        let mut stages = vec![doc! {"$match": {"experiment_id": experiment_id, "event": event}}];
        stages.extend(per_variant_totals(cap));
        let figures = collect(
            self.coll("subject_metrics")
                .aggregate(stages)
                .await
                .map_err(db_err("reading rolled-up counts"))?,
            "reading rolled-up counts",
        )
        .await?;
        let subjects = self.subjects_per_variant(experiment_id).await?;
        combine(
            subjects,
            &figures,
            "per-variant figures of `subject_metrics`",
        )
    }

    /// Rollups: the `total`s of `subject_metrics` (every document has at least one event),
    /// counted, then read with sort + skip from the nearer end. Raw events: the same over
    /// the per-subject figures of `subject_stages` with at least one counted event.
    async fn subject_value_quantile(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: Option<&Attribution>,
        q: f64,
    ) -> Result<Option<f64>> {
        const DOING: &str = "computing a subject value quantile";
        let (coll, stages) = match attribution {
            None => (
                "subject_metrics",
                vec![doc! {"$match": {"experiment_id": experiment_id, "event": event}}],
            ),
            Some(a) => {
                let mut stages = subject_stages(experiment_id, event, a);
                stages.push(doc! {"$match": {"n": {"$gt": 0}}});
                ("events", stages)
            }
        };
        let what = format!("the per-subject totals of `{coll}`");
        let mut counting = stages.clone();
        counting.push(doc! {"$count": "n"});
        let counted = collect(
            self.coll(coll)
                .aggregate(counting)
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        // `$count` answers nothing at all when nothing matched.
        let n = match counted.first() {
            Some(d) => get_u64(d, "n", &what)?,
            None => 0,
        };
        let Some((descending, offset)) = quantile_position(q, n)? else {
            return Ok(None);
        };
        let mut reading = stages;
        reading.extend([
            doc! {"$sort": {"total": if descending { -1 } else { 1 }}},
            doc! {"$skip": offset as i64},
            doc! {"$limit": 1},
        ]);
        let found = collect(
            self.coll(coll)
                .aggregate(reading)
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        found
            .first()
            .map(|d| get_f64(d, "total", &what))
            .transpose()
    }

    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>> {
        const WHAT: &str = "`buckets`";
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
                    variant: get_str(d, "variant", WHAT)?.to_owned(),
                    event: event.to_owned(),
                    start: get_date(d, "start", WHAT)?,
                    count: get_u64(d, "count", WHAT)?,
                    sum: get_f64(d, "sum", WHAT)?,
                    sum_of_squares: get_f64(d, "sum_sq", WHAT)?,
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
                get_str(&d, "state", "`evaluation_state`")?,
                "reading evaluation state",
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
}
