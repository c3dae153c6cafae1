//! [`RollupStore`] on MongoDB: collections `buckets`, `subject_metrics`, `rollup_state`
//! (the watermark and the range being folded), `evaluation_state` and `evaluation_history`
//! (`_id` from the `counters` document `evaluation_history`, the order of recording; the
//! point as JSON in `doc`). A rollup step is
//! `$group` + `$merge` pipelines over a seq range of `events`, made idempotent instead of
//! transactional (see [`RollupStore::rollup`] below); so is the repair of one experiment's
//! overflowed totals (see [`RollupStore::repair_totals`] below).

use std::collections::BTreeSet;

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, bson, doc};
use serde_json::Value;
use verdict_domain::{Breakdown, DimensionSource};

use super::{
    MongoStore, bdate, collect, combine, counted, db_err, decode, doc_field, documents, encode,
    get_date, get_f64, get_i64, get_str, get_u64, is_duplicate, opt_i64, opt_str,
    per_variant_totals, subject_stages, time_filter,
};
use crate::jobs::Fence;
use crate::model::{Attribution, TimeRange, VariantCounts};
use crate::rollup::{
    Bucket, EvaluationPoint, EventCount, Granularity, RepairOutcome, RollupReport, RollupStore,
    SQUARE_OVERFLOWS, SegmentCounts, SubjectFigure, check_bound, check_cap, check_fence,
    quantile_position, segment_figures,
};
use crate::{Result, StoreError};

const ROLLUP_STATE: &str = "`rollup_state`";

/// The collection of evaluation history (and the name of its counter).
const EVALUATION_HISTORY: &str = "evaluation_history";

/// A bucket whose Σ or Σ² is not a finite number. (`$not` of the finite range matches
/// ±infinity; NaN is matched by equality too, as servers differ on how a range treats it.)
fn bucket_overflowed() -> Document {
    let max = f64::MAX;
    doc! {"$or": [
        {"sum_sq": {"$not": {"$gte": -max, "$lte": max}}},
        {"sum_sq": f64::NAN},
        {"sum": {"$not": {"$gte": -max, "$lte": max}}},
        {"sum": f64::NAN},
    ]}
}

/// A subject whose total, or its square, is not a finite number.
fn subject_overflowed() -> Document {
    doc! {"$or": [
        {"total": {"$not": {"$gte": -SQUARE_OVERFLOWS, "$lte": SQUARE_OVERFLOWS}}},
        {"total": f64::NAN},
    ]}
}

/// The `rollup_state` document marking a repair of `experiment_id` as under way.
fn repair_marker(experiment_id: &str) -> String {
    format!("repair:{experiment_id}")
}

/// An event a repair keeps: `|value| ≤ max` (NaN, below every number in BSON's order, is
/// not `≥ 0`).
fn kept(max: f64) -> Bson {
    bson!({"$and": [
        {"$gte": [{"$abs": "$value"}, 0.0]},
        {"$lte": [{"$abs": "$value"}, max]},
    ]})
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

    /// Whether experiment `experiment_id` has an overflowed total.
    async fn has_overflowed(&self, experiment_id: &str) -> Result<bool> {
        for (coll, overflowed) in [
            ("buckets", bucket_overflowed()),
            ("subject_metrics", subject_overflowed()),
        ] {
            let found = self
                .coll(coll)
                .find_one(doc! {"$and": [{"experiment_id": experiment_id}, overflowed]})
                .projection(doc! {"_id": 1})
                .await
                .map_err(db_err("looking for overflowed totals"))?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One aggregation answering a single document (`$group` on `null`), or `None` when
    /// nothing matched.
    async fn aggregate_one(
        &self,
        coll: &str,
        pipeline: Vec<Document>,
        doing: &'static str,
    ) -> Result<Option<Document>> {
        let mut found = collect(
            self.coll(coll)
                .aggregate(pipeline)
                .await
                .map_err(db_err(doing))?,
            doing,
        )
        .await?;
        Ok(found.pop())
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
    /// Record the segments of the subjects whose events `(from, to]` are folded, for the
    /// experiments broken down by an event-meta key (their `breakdown_event` field): the
    /// key's string value on each subject's first event carrying it, in
    /// `subject_segments`, unless the subject has one already (unique per experiment and
    /// subject; the first wins, as ranges are folded in increasing order, and a resumed
    /// range inserts the same documents again, ignored). Event `meta` is stored as JSON
    /// text, so the values are read here rather than in a pipeline.
    async fn record_segments(&self, from: i64, to: i64) -> Result<()> {
        const DOING: &str = "recording breakdown segments";
        const EVENTS: &str = "`events`";
        let dims: std::collections::HashMap<String, String> = collect(
            self.coll("experiments")
                .find(doc! {
                    "status": {"$in": ["running", "paused"]},
                    "breakdown_event": {"$type": "string"},
                })
                .projection(doc! {"breakdown_event": 1})
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?
        .iter()
        .map(|d| {
            Ok((
                get_str(d, "_id", "`experiments`")?.to_owned(),
                get_str(d, "breakdown_event", "`experiments`")?.to_owned(),
            ))
        })
        .collect::<Result<_>>()?;
        if dims.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = dims.keys().map(String::as_str).collect();
        let events = collect(
            self.coll("events")
                .find(doc! {
                    "seq": {"$gt": from, "$lte": to},
                    "experiment_id": {"$in": ids},
                    "meta": {"$type": "string"},
                })
                .sort(doc! {"seq": 1})
                // The seq range, not every event of the experiments (their index).
                .hint(mongodb::options::Hint::Keys(doc! {"seq": 1}))
                .projection(doc! {"experiment_id": 1, "subject": 1, "meta": 1})
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        let mut first: std::collections::HashMap<(String, String), String> =
            std::collections::HashMap::new();
        for d in &events {
            let experiment_id = get_str(d, "experiment_id", EVENTS)?;
            let meta: serde_json::Map<String, Value> = decode(get_str(d, "meta", EVENTS)?, DOING)?;
            let Some(Value::String(segment)) = dims.get(experiment_id).and_then(|k| meta.get(k))
            else {
                continue;
            };
            let subject = get_str(d, "subject", EVENTS)?;
            first
                .entry((experiment_id.to_owned(), subject.to_owned()))
                .or_insert_with(|| segment.clone());
        }
        // Leave out the subjects with a segment already (most, after their first events):
        // a duplicate insert costs the server more than this read.
        for experiment_id in dims.keys() {
            let subjects: Vec<&str> = first
                .keys()
                .filter(|(e, _)| e == experiment_id)
                .map(|(_, s)| s.as_str())
                .collect();
            if subjects.is_empty() {
                continue;
            }
            let known = collect(
                self.coll("subject_segments")
                    .find(doc! {"experiment_id": experiment_id, "subject": {"$in": subjects}})
                    .projection(doc! {"_id": 0, "subject": 1})
                    .await
                    .map_err(db_err(DOING))?,
                DOING,
            )
            .await?;
            for d in &known {
                let subject = get_str(d, "subject", "`subject_segments`")?;
                first.remove(&(experiment_id.clone(), subject.to_owned()));
            }
        }
        if first.is_empty() {
            return Ok(());
        }
        let docs = first
            .into_iter()
            .map(|((experiment_id, subject), segment)| {
                doc! {"experiment_id": experiment_id, "subject": subject, "segment": segment}
            });
        match self
            .coll("subject_segments")
            .insert_many(docs)
            .ordered(false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Ok(()),
            Err(e) => Err(db_err(DOING)(e)),
        }
    }

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

        self.record_segments(from, to).await?;

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

    /// Every experiment with a bucket or a subject document overflowed, or with a repair
    /// marked as under way (a repair interrupted midway is finished by the next). Reads
    /// both collections whole (the wire-compatible test server accepts partial indexes but
    /// never uses them for a query, so none is created).
    async fn experiments_with_overflowed_totals(&self) -> Result<Vec<String>> {
        const DOING: &str = "listing overflowed totals";
        let mut ids = BTreeSet::new();
        for (coll, overflowed) in [
            ("buckets", bucket_overflowed()),
            ("subject_metrics", subject_overflowed()),
        ] {
            let found = collect(
                self.coll(coll)
                    .aggregate(vec![
                        doc! {"$match": overflowed},
                        doc! {"$group": {"_id": "$experiment_id"}},
                    ])
                    .await
                    .map_err(db_err(DOING))?,
                DOING,
            )
            .await?;
            let what = format!("the experiments of overflowed `{coll}`");
            for d in &found {
                ids.insert(get_str(d, "_id", &what)?.to_owned());
            }
        }
        let markers = collect(
            self.coll("rollup_state")
                .find(doc! {"repair": {"$exists": true}})
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        for d in &markers {
            ids.insert(get_str(d, "repair", ROLLUP_STATE)?.to_owned());
        }
        Ok(ids.into_iter().collect())
    }

    /// Without transactions, every step is safe to interrupt and to run again:
    ///
    /// 1. The retention check compares the experiment's attributed events up to the
    ///    watermark `w` with what its subject documents account for: `n`, plus `excluded`,
    ///    the events an earlier repair left out of them (kept on the document, which a
    ///    rollup never changes).
    /// 2. A marker (`rollup_state` `_id: "repair:<experiment>"`) is written before any
    ///    figure changes: until it is removed at the end, the experiment is listed by
    ///    [`RollupStore::experiments_with_overflowed_totals`], so an interrupted repair is
    ///    run again by the next aggregation run.
    /// 3. Three `$merge` aggregations (hour buckets, day buckets, subjects) recompute the
    ///    figures of the events up to `w` (kept ones, and `all`), and overwrite the
    ///    matching documents (`whenNotMatched: "discard"`: buckets retention deleted stay
    ///    deleted) with `applied = max(applied, w)`, so a later rollup range adds to them as
    ///    before. Each document is overwritten only when its own count (`count` or `n`,
    ///    plus `excluded`) equals the recomputed `all`: it then holds exactly those events,
    ///    whether an earlier, interrupted repair already overwrote it or not, and whether
    ///    rollups added to it since; one whose events retention deleted meanwhile keeps its
    ///    figures. One update per document: each holds its old figures or its new ones.
    /// 4. Buckets left without events are deleted (reads skip them meanwhile); a subject
    ///    left without events keeps a document with `n = 0` (what it `excluded` counts for
    ///    step 1; reads skip it), then the marker is removed.
    async fn repair_totals(
        &self,
        experiment_id: &str,
        max_abs_value: f64,
        fence: Option<&Fence>,
    ) -> Result<RepairOutcome> {
        const DOING: &str = "repairing overflowed totals";
        const WHAT: &str = "the figures of a repair";
        check_bound(max_abs_value)?;
        check_fence(self, fence).await?;
        let state = self.coll("rollup_state");
        let w = state
            .find_one(doc! {"_id": "events"})
            .await
            .map_err(db_err("reading the rollup watermark"))?
            .map_or(Ok(0), |d| get_i64(&d, "seq", ROLLUP_STATE))?;
        let marker = repair_marker(experiment_id);
        let marked = state
            .find_one(doc! {"_id": &marker})
            .await
            .map_err(db_err(DOING))?
            .is_some();
        if !marked && !self.has_overflowed(experiment_id).await? {
            return Ok(RepairOutcome::Nothing);
        }

        // The experiment's attributed events up to the watermark (the first stage on the
        // experiment's index alone), counted, and those beyond the bound.
        let events = |more: Vec<Document>| {
            let mut stages = vec![
                doc! {"$match": {"experiment_id": experiment_id}},
                doc! {"$match": {"$and": [{"seq": {"$lte": w}}, counted()]}},
                doc! {"$set": {"keep": kept(max_abs_value)}},
            ];
            stages.extend(more);
            stages
        };
        let (raw, dropped) = match self
            .aggregate_one(
                "events",
                events(vec![doc! {"$group": {
                    "_id": Bson::Null,
                    "all": {"$sum": 1_i64},
                    "dropped": {"$sum": {"$cond": ["$keep", 0_i64, 1_i64]}},
                }}]),
                DOING,
            )
            .await?
        {
            Some(d) => (get_u64(&d, "all", WHAT)?, get_u64(&d, "dropped", WHAT)?),
            None => (0, 0),
        };
        let rolled_up = match self
            .aggregate_one(
                "subject_metrics",
                vec![
                    doc! {"$match": {"experiment_id": experiment_id}},
                    doc! {"$group": {
                        "_id": Bson::Null,
                        "n": {"$sum": {"$add": ["$n", {"$ifNull": ["$excluded", 0_i64]}]}},
                    }},
                ],
                DOING,
            )
            .await?
        {
            Some(d) => get_u64(&d, "n", WHAT)?,
            None => 0,
        };
        if raw != rolled_up {
            return Ok(RepairOutcome::NotRetained {
                raw_events: raw,
                rolled_up_events: rolled_up,
            });
        }

        check_fence(self, fence).await?;
        match state
            .update_one(
                doc! {"_id": &marker},
                doc! {"$set": {"repair": experiment_id, "watermark": w}},
            )
            .upsert(true)
            .await
        {
            // A concurrent upsert wrote the same marker.
            Ok(_) => {}
            Err(e) if is_duplicate(&e) => {}
            Err(e) => return Err(db_err("marking a repair")(e)),
        }

        // Overwrite a document with the recomputed figures when its own count, plus what
        // an earlier repair excluded from it, equals the recomputed `all`.
        let overwrite = |count: &str, fields: &[&str]| -> Document {
            let holds_them = bson!({"$eq": [
                {"$add": [format!("${count}"), {"$ifNull": ["$excluded", 0_i64]}]},
                "$$new.all",
            ]});
            let pick =
                |new: Bson, old: Bson| -> Bson { bson!({"$cond": [holds_them.clone(), new, old]}) };
            let mut set = Document::new();
            for f in fields {
                set.insert(
                    *f,
                    pick(
                        Bson::String(format!("$$new.{f}")),
                        Bson::String(format!("${f}")),
                    ),
                );
            }
            set.insert(
                "excluded",
                pick(
                    bson!({"$subtract": ["$$new.all", format!("$$new.{count}")]}),
                    bson!({"$ifNull": ["$excluded", 0_i64]}),
                ),
            );
            set.insert(
                "applied",
                pick(
                    bson!({"$max": ["$applied", w]}),
                    Bson::String("$applied".into()),
                ),
            );
            doc! {"$set": set}
        };
        let value_if_kept = |v: Bson| -> Bson { bson!({"$sum": {"$cond": ["$keep", v, 0.0]}}) };
        for g in [Granularity::Hour, Granularity::Day] {
            let unit = g.as_str();
            self.run_merge(events(vec![
                doc! {"$group": {
                    "_id": {
                        "event": "$event",
                        "variant": "$variant",
                        "start": {"$dateTrunc": {"date": "$ts", "unit": unit, "timezone": "UTC"}},
                    },
                    "all": {"$sum": 1_i64},
                    "count": {"$sum": {"$cond": ["$keep", 1_i64, 0_i64]}},
                    "sum": value_if_kept(Bson::String("$value".into())),
                    "sum_sq": value_if_kept(bson!({"$multiply": ["$value", "$value"]})),
                }},
                doc! {"$project": {
                    "_id": 0,
                    "experiment_id": {"$literal": experiment_id},
                    "event": "$_id.event",
                    "granularity": {"$literal": unit},
                    "start": "$_id.start",
                    "variant": "$_id.variant",
                    "all": 1,
                    "count": 1,
                    "sum": 1,
                    "sum_sq": 1,
                }},
                doc! {"$merge": {
                    "into": "buckets",
                    "on": ["experiment_id", "event", "granularity", "start", "variant"],
                    "whenMatched": [overwrite("count", &["count", "sum", "sum_sq"])],
                    "whenNotMatched": "discard",
                }},
            ]))
            .await?;
        }
        self.run_merge(events(vec![
            doc! {"$group": {
                "_id": {"event": "$event", "subject": "$subject"},
                "all": {"$sum": 1_i64},
                "n": {"$sum": {"$cond": ["$keep", 1_i64, 0_i64]}},
                "total": value_if_kept(Bson::String("$value".into())),
                // `null` when none is kept (a later rollup's `$min` then takes its own).
                "first_ts": {"$min": {"$cond": ["$keep", "$ts", Bson::Null]}},
            }},
            doc! {"$project": {
                "_id": 0,
                "experiment_id": {"$literal": experiment_id},
                "event": "$_id.event",
                "subject": "$_id.subject",
                "all": 1,
                "n": 1,
                "total": 1,
                "first_ts": 1,
            }},
            doc! {"$merge": {
                "into": "subject_metrics",
                "on": ["experiment_id", "event", "subject"],
                "whenMatched": [overwrite("n", &["n", "total", "first_ts"])],
                "whenNotMatched": "discard",
            }},
        ]))
        .await?;
        self.coll("buckets")
            .delete_many(doc! {"experiment_id": experiment_id, "count": 0_i64})
            .await
            .map_err(db_err(DOING))?;
        state
            .delete_one(doc! {"_id": &marker})
            .await
            .map_err(db_err("ending a repair"))?;
        Ok(RepairOutcome::Repaired {
            dropped_events: dropped,
        })
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

    /// The subjects' segments, variants and figures are read and grouped here
    /// (`segment_figures`): assignment contexts and event `meta` are stored as JSON text.
    async fn segment_counts(
        &self,
        experiment_id: &str,
        event: &str,
        dimension: &Breakdown,
        cap: Option<f64>,
    ) -> Result<Vec<SegmentCounts>> {
        const DOING: &str = "reading rolled-up counts per segment";
        check_cap(cap, DOING)?;
        let find = |coll: &'static str, filter: Document, projection: Document| async move {
            collect(
                self.coll(coll)
                    .find(filter)
                    .projection(projection)
                    .await
                    .map_err(db_err(DOING))?,
                DOING,
            )
            .await
        };
        let assignments = find(
            "assignments",
            doc! {"experiment_id": experiment_id},
            doc! {"subject": 1, "variant": 1, "context": 1},
        )
        .await?;
        let mut segments: std::collections::HashMap<String, String> = match dimension.source {
            DimensionSource::Event => find(
                "subject_segments",
                doc! {"experiment_id": experiment_id},
                doc! {"subject": 1, "segment": 1},
            )
            .await?
            .iter()
            .map(|d| {
                Ok((
                    get_str(d, "subject", "`subject_segments`")?.to_owned(),
                    get_str(d, "segment", "`subject_segments`")?.to_owned(),
                ))
            })
            .collect::<Result<_>>()?,
            DimensionSource::Assignment => Default::default(),
        };
        let mut figures: std::collections::HashMap<String, (u64, f64)> = find(
            "subject_metrics",
            doc! {"experiment_id": experiment_id, "event": event},
            doc! {"subject": 1, "n": 1, "total": 1},
        )
        .await?
        .iter()
        .map(|d| {
            const WHAT: &str = "`subject_metrics`";
            Ok((
                get_str(d, "subject", WHAT)?.to_owned(),
                (get_u64(d, "n", WHAT)?, get_f64(d, "total", WHAT)?),
            ))
        })
        .collect::<Result<_>>()?;
        let mut subjects = Vec::with_capacity(assignments.len());
        for d in &assignments {
            const WHAT: &str = "`assignments`";
            let subject = get_str(d, "subject", WHAT)?;
            let segment = match dimension.source {
                DimensionSource::Event => segments.remove(subject),
                DimensionSource::Assignment => match opt_str(d, "context", WHAT)? {
                    Some(c) => {
                        let context: serde_json::Map<String, Value> = decode(c, DOING)?;
                        match context.get(&dimension.attribute) {
                            Some(Value::String(v)) => Some(v.clone()),
                            _ => None,
                        }
                    }
                    None => None,
                },
            };
            subjects.push(SubjectFigure {
                segment,
                variant: get_str(d, "variant", WHAT)?.to_owned(),
                events: figures.remove(subject),
            });
        }
        Ok(segment_figures(subjects, cap))
    }

    /// Rollups: the `total`s of `subject_metrics` with at least one event (all but those a
    /// repair left without any), counted, then read with sort + skip from the nearer end. Raw events: the same over
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
            // (`n = 0`: a subject a repair left without events.)
            None => (
                "subject_metrics",
                vec![doc! {"$match": {
                    "experiment_id": experiment_id, "event": event, "n": {"$ne": 0_i64},
                }}],
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
        // (`count = 0`: a bucket a repair left without events, until it deletes it.)
        let mut f = doc! {
            "experiment_id": experiment_id,
            "event": event,
            "granularity": granularity.as_str(),
            "count": {"$ne": 0_i64},
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

    async fn event_counts(
        &self,
        experiment_id: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<EventCount>> {
        const WHAT: &str = "event counts";
        let mut f = doc! {"experiment_id": experiment_id, "granularity": granularity.as_str()};
        if let Some(t) = time_filter(range) {
            f.insert("start", t);
        }
        let docs = collect(
            self.coll("buckets")
                .aggregate(vec![
                    doc! {"$match": f},
                    doc! {"$group": {
                        "_id": {"v": "$variant", "e": "$event"},
                        "n": {"$sum": "$count"},
                    }},
                    doc! {"$match": {"n": {"$gt": 0_i64}}},
                    doc! {"$sort": {"_id.v": 1, "_id.e": 1}},
                ])
                .await
                .map_err(db_err("counting events by type"))?,
            "counting events by type",
        )
        .await?;
        docs.iter()
            .map(|d| {
                let id = match super::get_bson(d, "_id", WHAT)? {
                    Bson::Document(id) => id,
                    other => return Err(super::mistyped(WHAT, "_id", "a document", other)),
                };
                Ok(EventCount {
                    variant: get_str(id, "v", WHAT)?.to_owned(),
                    event: get_str(id, "e", WHAT)?.to_owned(),
                    count: get_u64(d, "n", WHAT)?,
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

    async fn record_evaluation(&self, point: &EvaluationPoint) -> Result<()> {
        let seq = self.next_seq(EVALUATION_HISTORY, 1).await?;
        self.coll(EVALUATION_HISTORY)
            .insert_one(doc! {
                "_id": seq,
                "experiment_id": &point.experiment_id,
                "at": bdate(point.at),
                "doc": encode(point)?,
            })
            .await
            .map_err(db_err("recording an evaluation"))?;
        Ok(())
    }

    async fn evaluation_history(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<EvaluationPoint>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let docs = collect(
            self.coll(EVALUATION_HISTORY)
                .find(doc! {"experiment_id": experiment_id})
                .sort(doc! {"_id": -1})
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .await
                .map_err(db_err("reading evaluation history"))?,
            "reading evaluation history",
        )
        .await?;
        docs.iter()
            .rev()
            .map(|d| doc_field(d, "`evaluation_history`", "reading evaluation history"))
            .collect()
    }
}
