//! [`RollupStore`] on SQLite: tables `buckets`, `subject_metrics` (keyed by the small
//! integer ids of `rollup_names`), `rollup_state` (the watermark), `evaluation_state` and
//! `evaluation_history`.
//! A rollup step is one `BEGIN IMMEDIATE` transaction that folds the events past the
//! watermark and advances it; so is the repair of one experiment's overflowed totals.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use verdict_domain::{Breakdown, DimensionSource};

use super::{
    STARTS, SUBJECT_FIGURES, SqliteStore, begin, check_fence, commit, decode, encode, internal,
    quantile_of_totals, variant_counts_row, variant_counts_row_at, variant_sums,
};
use crate::Result;
use crate::jobs::Fence;
use crate::model::{Attribution, TimeRange, VariantCounts, from_millis, to_millis};
use crate::rollup::{
    Bucket, EvaluationPoint, EventCount, Granularity, RepairOutcome, RollupReport, RollupStore,
    SegmentCounts, check_bound, check_cap,
};

/// The latest `?2` points of experiment `?1`'s history, newest first, through
/// `evaluation_history_by_experiment`.
pub(super) const LATEST_EVALUATIONS: &str = "SELECT doc FROM evaluation_history
     WHERE experiment_id = ?1 ORDER BY seq DESC LIMIT ?2";

/// A bucket whose Σ or Σ² is infinite: the condition of the partial index
/// `buckets_overflowed` (migration 0008) word for word, so that queries use it.
const BUCKET_OVERFLOWED: &str =
    "(abs(sum) > 1.7976931348623157e308 OR sum_sq > 1.7976931348623157e308)";

/// A subject whose total's square is infinite: the condition of the partial index
/// `subject_metrics_overflowed` (migration 0008) word for word.
const SUBJECT_OVERFLOWED: &str = "abs(total) > 1.3407807929942596e154";

/// The attributed events of experiment `?1` up to the watermark `?2` whose `|value|` is at
/// most `?3` (a NaN is not), as the rollup counts them: at or after the subject's assignment.
const KEPT_EVENTS: &str = "FROM events e
    JOIN assignments a ON a.experiment_id = e.experiment_id AND a.subject = e.subject
    WHERE e.experiment_id = ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at
      AND abs(e.value) <= ?3";

/// Every experiment with an overflowed bucket or subject, read from the partial indexes
/// (`INDEXED BY`: they hold only such rows, however large the tables).
pub(super) fn overflowed_experiments_sql() -> String {
    format!(
        "SELECT experiment_id FROM buckets INDEXED BY buckets_overflowed
         WHERE {BUCKET_OVERFLOWED}
         UNION
         SELECT n.name FROM subject_metrics INDEXED BY subject_metrics_overflowed
         JOIN rollup_names n ON n.id = subject_metrics.experiment
         WHERE {SUBJECT_OVERFLOWED}
         ORDER BY 1"
    )
}

/// Whether experiment `?1` (`rollup_names` id `?2`) has an overflowed bucket or subject,
/// read from the partial indexes.
pub(super) fn experiment_overflowed_sql() -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM buckets INDEXED BY buckets_overflowed
                        WHERE experiment_id = ?1 AND {BUCKET_OVERFLOWED})
             OR EXISTS (SELECT 1 FROM subject_metrics INDEXED BY subject_metrics_overflowed
                        WHERE experiment = ?2 AND {SUBJECT_OVERFLOWED})"
    )
}

/// Whether experiment `experiment_id` (`rollup_names` id `names_id`, if it has one) has an
/// overflowed total.
fn has_overflowed(
    c: &rusqlite::Connection,
    experiment_id: &str,
    names_id: Option<i64>,
) -> Result<bool> {
    c.query_row(
        &experiment_overflowed_sql(),
        params![experiment_id, names_id],
        |r| r.get(0),
    )
    .map_err(internal("looking for overflowed totals"))
}

/// The JSON path of key `attribute` (letters, digits, `_`, `-`: see
/// `verdict_domain::Breakdown::check`).
fn json_path(attribute: &str) -> String {
    format!("$.\"{attribute}\"")
}

/// Record the segments of the subjects whose events `(from, to]` are folded, for the live
/// experiments broken down by an event-meta key (`breakdown.source = event`): the key's
/// string value on each subject's first event carrying it, unless the subject has one
/// already (`subject_segments`, migration 0012).
fn record_segments(tx: &rusqlite::Transaction<'_>, from: i64, to: i64) -> Result<()> {
    const DOING: &str = "recording breakdown segments";
    let dims: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT id, json_extract(doc, '$.breakdown.attribute') FROM experiments
             WHERE status IN ('running', 'paused')
               AND json_extract(doc, '$.breakdown.source') = 'event'",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal(DOING))?;
    for (experiment_id, attribute) in dims {
        let names_id: Option<i64> = tx
            .query_row(
                "SELECT id FROM rollup_names WHERE name = ?1",
                [&experiment_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(internal(DOING))?;
        // Named once one of its events was rolled up: none yet, nothing to record.
        let Some(names_id) = names_id else { continue };
        // In ingestion order, so that a subject's first value is inserted and the later
        // ones ignored; the events of subjects with a segment already are skipped before
        // their meta is parsed (after a subject's first events, that is nearly all). The
        // unary `+` keeps the planner on the seq range: the index by experiment would read
        // every event of the experiment, a cost growing with its history.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO subject_segments (experiment, subject, segment)
             SELECT ?3, subject, segment
             FROM (SELECT e.subject AS subject, e.meta ->> ?5 AS segment
                   FROM events e
                   WHERE e.seq > ?1 AND e.seq <= ?2 AND +e.experiment_id = ?4
                     AND e.meta IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM subject_segments g
                                     WHERE g.experiment = ?3 AND g.subject = e.subject)
                   ORDER BY e.seq)
             WHERE typeof(segment) = 'text'",
        )
        .and_then(|mut st| {
            st.execute(params![
                from,
                to,
                names_id,
                experiment_id,
                json_path(&attribute)
            ])
        })
        .map_err(internal(DOING))?;
    }
    Ok(())
}

#[async_trait]
impl RollupStore for SqliteStore {
    async fn rollup(&self, max_events: usize) -> Result<RollupReport> {
        self.rollup_fenced(max_events, None).await
    }

    /// The fence is checked inside the step's own transaction: a stale holder's step writes
    /// nothing, whenever it wakes up.
    async fn rollup_fenced(
        &self,
        max_events: usize,
        fence: Option<&Fence>,
    ) -> Result<RollupReport> {
        let fence = fence.cloned();
        let max = max_events.max(1) as i64;
        self.write(move |c| {
            let tx = begin(c)?;
            check_fence(&tx, fence.as_ref())?;
            let from: i64 = tx
                .query_row(
                    "SELECT COALESCE((SELECT seq FROM rollup_state WHERE name = 'events'), 0)",
                    [],
                    |r| r.get(0),
                )
                .map_err(internal("reading the rollup watermark"))?;
            let (to, events): (i64, i64) = tx
                .query_row(
                    "SELECT COALESCE(MAX(seq), ?1), COUNT(*)
                     FROM (SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
                    params![from, max],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(internal("choosing the rollup range"))?;
            if events == 0 {
                return Ok(RollupReport {
                    watermark: from as u64,
                    ..Default::default()
                });
            }
            // Only events at or after the subject's assignment count (attribution).
            let mut buckets_written = 0;
            for g in [Granularity::Hour, Granularity::Day] {
                buckets_written +=
                    tx.execute(
                        "INSERT INTO buckets
                             (experiment_id, event, granularity, start, variant, count, sum, sum_sq)
                         SELECT e.experiment_id, e.event, ?3, (e.ts / ?4) * ?4, e.variant,
                                COUNT(*), SUM(e.value), SUM(e.value * e.value)
                         FROM events e
                         JOIN assignments a
                           ON a.experiment_id = e.experiment_id AND a.subject = e.subject
                         WHERE e.seq > ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at
                         GROUP BY e.experiment_id, e.event, (e.ts / ?4) * ?4, e.variant
                         ON CONFLICT (experiment_id, event, granularity, start, variant) DO UPDATE
                         SET count = count + excluded.count,
                             sum = sum + excluded.sum,
                             sum_sq = sum_sq + excluded.sum_sq",
                        params![from, to, g.as_str(), g.millis()],
                    )
                    .map_err(internal("rolling up buckets"))? as u64;
            }
            // Per subject, keyed by the integer ids of the experiment and the event (see the
            // migration creating `rollup_names`): the range's names get theirs first.
            tx.execute(
                "INSERT OR IGNORE INTO rollup_names (name)
                 SELECT experiment_id FROM events WHERE seq > ?1 AND seq <= ?2
                 UNION SELECT event FROM events WHERE seq > ?1 AND seq <= ?2",
                params![from, to],
            )
            .map_err(internal("naming rollup keys"))?;
            let subjects_written =
                tx.execute(
                    "INSERT INTO subject_metrics (experiment, event, subject, n, total, first_ts)
                     SELECT x.id, v.id, e.subject, COUNT(*), SUM(e.value), MIN(e.ts)
                     FROM events e
                     JOIN assignments a
                       ON a.experiment_id = e.experiment_id AND a.subject = e.subject
                     JOIN rollup_names x ON x.name = e.experiment_id
                     JOIN rollup_names v ON v.name = e.event
                     WHERE e.seq > ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at
                     GROUP BY x.id, v.id, e.subject
                     ON CONFLICT (experiment, event, subject) DO UPDATE
                     SET n = n + excluded.n,
                         total = total + excluded.total,
                         first_ts = MIN(first_ts, excluded.first_ts)",
                    params![from, to],
                )
                .map_err(internal("rolling up subjects"))? as u64;
            record_segments(&tx, from, to)?;
            tx.execute(
                "INSERT INTO rollup_state (name, seq) VALUES ('events', ?1)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                [to],
            )
            .map_err(internal("advancing the rollup watermark"))?;
            commit(tx)?;
            Ok(RollupReport {
                events: events as u64,
                buckets_written,
                subjects_written,
                watermark: to as u64,
            })
        })
        .await
    }

    async fn rollup_watermark(&self) -> Result<u64> {
        self.read_point(|c| {
            c.query_row(
                "SELECT COALESCE((SELECT seq FROM rollup_state WHERE name = 'events'), 0)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|s| s as u64)
            .map_err(internal("reading the rollup watermark"))
        })
        .await
    }

    async fn experiments_with_overflowed_totals(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&overflowed_experiments_sql())
                .map_err(internal("listing overflowed totals"))?;
            stmt.query_map([], |r| r.get(0))
                .map_err(internal("listing overflowed totals"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing overflowed totals"))
        })
        .await
    }

    /// One transaction (the fence checked inside it): the check, the retention check, the
    /// recomputation. Existing buckets are overwritten with the figures of their kept
    /// events (or deleted when none is left); per-subject rows are replaced.
    async fn repair_totals(
        &self,
        experiment_id: &str,
        max_abs_value: f64,
        fence: Option<&Fence>,
    ) -> Result<RepairOutcome> {
        const DOING: &str = "repairing overflowed totals";
        check_bound(max_abs_value)?;
        let fence = fence.cloned();
        let eid = experiment_id.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            check_fence(&tx, fence.as_ref())?;
            let watermark: i64 = tx
                .query_row(
                    "SELECT COALESCE((SELECT seq FROM rollup_state WHERE name = 'events'), 0)",
                    [],
                    |r| r.get(0),
                )
                .map_err(internal("reading the rollup watermark"))?;
            let names_id: Option<i64> = tx
                .query_row("SELECT id FROM rollup_names WHERE name = ?1", [&eid], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(internal(DOING))?;
            if !has_overflowed(&tx, &eid, names_id)? {
                return Ok(RepairOutcome::Nothing);
            }
            // Every attributed event up to the watermark, and those beyond the bound.
            let (raw, dropped): (i64, i64) = tx
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(NOT (abs(e.value) <= ?3)), 0)
                     FROM events e
                     JOIN assignments a
                       ON a.experiment_id = e.experiment_id AND a.subject = e.subject
                     WHERE e.experiment_id = ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at",
                    params![eid, watermark, max_abs_value],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(internal(DOING))?;
            let rolled_up: i64 = tx
                .query_row(
                    "SELECT COALESCE(SUM(n), 0) FROM subject_metrics WHERE experiment = ?1",
                    [names_id],
                    |r| r.get(0),
                )
                .map_err(internal(DOING))?;
            if raw != rolled_up {
                return Ok(RepairOutcome::NotRetained {
                    raw_events: raw as u64,
                    rolled_up_events: rolled_up as u64,
                });
            }
            for g in [Granularity::Hour, Granularity::Day] {
                let args = params![eid, watermark, max_abs_value, g.millis(), g.as_str()];
                tx.execute(
                    &format!(
                        "UPDATE buckets SET count = f.c, sum = f.s, sum_sq = f.q
                         FROM (SELECT e.event AS event, (e.ts / ?4) * ?4 AS start,
                                      e.variant AS variant, COUNT(*) AS c, SUM(e.value) AS s,
                                      SUM(e.value * e.value) AS q
                               {KEPT_EVENTS}
                               GROUP BY e.event, (e.ts / ?4) * ?4, e.variant) AS f
                         WHERE buckets.experiment_id = ?1 AND buckets.granularity = ?5
                           AND buckets.event = f.event AND buckets.start = f.start
                           AND buckets.variant = f.variant"
                    ),
                    args,
                )
                .map_err(internal(DOING))?;
                tx.execute(
                    &format!(
                        "DELETE FROM buckets
                         WHERE experiment_id = ?1 AND granularity = ?5 AND NOT EXISTS (
                             SELECT 1 {KEPT_EVENTS}
                               AND e.event = buckets.event AND e.variant = buckets.variant
                               AND e.ts >= buckets.start AND e.ts < buckets.start + ?4)"
                    ),
                    args,
                )
                .map_err(internal(DOING))?;
            }
            tx.execute(
                "DELETE FROM subject_metrics WHERE experiment = ?1",
                [names_id],
            )
            .map_err(internal(DOING))?;
            tx.execute(
                "INSERT INTO subject_metrics (experiment, event, subject, n, total, first_ts)
                 SELECT ?4, v.id, e.subject, COUNT(*), SUM(e.value), MIN(e.ts)
                 FROM events e
                 JOIN assignments a
                   ON a.experiment_id = e.experiment_id AND a.subject = e.subject
                 JOIN rollup_names v ON v.name = e.event
                 WHERE e.experiment_id = ?1 AND e.seq <= ?2 AND e.ts >= a.assigned_at
                   AND abs(e.value) <= ?3
                 GROUP BY v.id, e.subject",
                params![eid, watermark, max_abs_value, names_id],
            )
            .map_err(internal(DOING))?;
            commit(tx)?;
            Ok(RepairOutcome::Repaired {
                dropped_events: dropped as u64,
            })
        })
        .await
    }

    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
        cap: Option<f64>,
    ) -> Result<Vec<VariantCounts>> {
        check_cap(cap, "reading rolled-up counts")?;
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT a.variant, COUNT(*), {sums}
                     FROM assignments a
                     LEFT JOIN subject_metrics s
                       ON s.experiment = (SELECT id FROM rollup_names WHERE name = ?1)
                      AND s.event = (SELECT id FROM rollup_names WHERE name = ?2)
                      AND s.subject = a.subject
                     WHERE a.experiment_id = ?1
                     GROUP BY a.variant ORDER BY a.variant",
                    sums = variant_sums(3)
                ))
                .map_err(internal("reading rolled-up counts"))?;
            stmt.query_map(params![eid, ev, cap], variant_counts_row)
                .map_err(internal("reading rolled-up counts"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("reading rolled-up counts"))
        })
        .await
    }

    async fn segment_counts(
        &self,
        experiment_id: &str,
        event: &str,
        dimension: &Breakdown,
        cap: Option<f64>,
    ) -> Result<Vec<SegmentCounts>> {
        const DOING: &str = "reading rolled-up counts per segment";
        check_cap(cap, DOING)?;
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        let dimension = dimension.clone();
        self.read(move |c| {
            let sums = variant_sums(3);
            let figures = "LEFT JOIN subject_metrics s
                   ON s.experiment = (SELECT id FROM rollup_names WHERE name = ?1)
                  AND s.event = (SELECT id FROM rollup_names WHERE name = ?2)
                  AND s.subject = a.subject";
            let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<SegmentCounts> {
                Ok(SegmentCounts {
                    segment: r.get(0)?,
                    counts: variant_counts_row_at(r, 1)?,
                })
            };
            let rows = match dimension.source {
                DimensionSource::Assignment => c
                    .prepare_cached(&format!(
                        "SELECT CASE WHEN json_type(a.context, ?4) = 'text'
                                     THEN json_extract(a.context, ?4) END,
                                a.variant, COUNT(*), {sums}
                         FROM assignments a {figures}
                         WHERE a.experiment_id = ?1
                         GROUP BY 1, 2 ORDER BY 1, 2"
                    ))
                    .and_then(|mut st| {
                        st.query_map(params![eid, ev, cap, json_path(&dimension.attribute)], row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
                DimensionSource::Event => c
                    .prepare_cached(&format!(
                        "SELECT g.segment, a.variant, COUNT(*), {sums}
                         FROM assignments a {figures}
                         LEFT JOIN subject_segments g
                           ON g.experiment = (SELECT id FROM rollup_names WHERE name = ?1)
                          AND g.subject = a.subject
                         WHERE a.experiment_id = ?1
                         GROUP BY 1, 2 ORDER BY 1, 2"
                    ))
                    .and_then(|mut st| {
                        st.query_map(params![eid, ev, cap], row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
            };
            rows.map_err(internal(DOING))
        })
        .await
    }

    /// Rollups: the totals of `subject_metrics` (every row has at least one event). Raw
    /// events: the totals of `SUBJECT_FIGURES` under the attribution.
    async fn subject_value_quantile(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: Option<&Attribution>,
        q: f64,
    ) -> Result<Option<f64>> {
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        let attribution = attribution.cloned();
        self.read(move |c| match attribution {
            None => quantile_of_totals(
                c,
                "",
                "SELECT total FROM subject_metrics
                 WHERE experiment = (SELECT id FROM rollup_names WHERE name = ?1)
                   AND event = (SELECT id FROM rollup_names WHERE name = ?2)",
                &[&eid, &ev],
                q,
            ),
            Some(a) => {
                let from = a.range.from.map(to_millis);
                let to = a.range.to.map(to_millis);
                let window = a.window_millis();
                quantile_of_totals(
                    c,
                    &format!("WITH {STARTS}"),
                    SUBJECT_FIGURES,
                    &[&eid, &ev, &from, &to, &a.exposure_event, &window],
                    q,
                )
            }
        })
        .await
    }

    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>> {
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        let from = range.from.map(to_millis);
        let to = range.to.map(to_millis);
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT variant, start, count, sum, sum_sq FROM buckets
                     WHERE experiment_id = ?1 AND event = ?2 AND granularity = ?3
                       AND (?4 IS NULL OR start >= ?4) AND (?5 IS NULL OR start < ?5)
                     ORDER BY start, variant",
                )
                .map_err(internal("reading buckets"))?;
            stmt.query_map(params![eid, ev, granularity.as_str(), from, to], |r| {
                Ok(Bucket {
                    variant: r.get(0)?,
                    event: ev.clone(),
                    start: from_millis(r.get(1)?),
                    count: r.get::<_, i64>(2)? as u64,
                    sum: r.get(3)?,
                    sum_of_squares: r.get(4)?,
                })
            })
            .map_err(internal("reading buckets"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal("reading buckets"))
        })
        .await
    }

    async fn event_counts(
        &self,
        experiment_id: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<EventCount>> {
        let eid = experiment_id.to_owned();
        let from = range.from.map(to_millis);
        let to = range.to.map(to_millis);
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT variant, event, SUM(count) FROM buckets
                     WHERE experiment_id = ?1 AND granularity = ?2
                       AND (?3 IS NULL OR start >= ?3) AND (?4 IS NULL OR start < ?4)
                     GROUP BY variant, event HAVING SUM(count) > 0
                     ORDER BY variant, event",
                )
                .map_err(internal("counting events by type"))?;
            stmt.query_map(params![eid, granularity.as_str(), from, to], |r| {
                Ok(EventCount {
                    variant: r.get(0)?,
                    event: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(internal("counting events by type"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal("counting events by type"))
        })
        .await
    }

    async fn get_evaluation_state(&self, experiment_id: &str) -> Result<Option<Value>> {
        let eid = experiment_id.to_owned();
        self.read_point(move |c| {
            let raw: Option<String> = c
                .query_row(
                    "SELECT state FROM evaluation_state WHERE experiment_id = ?1",
                    [&eid],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal("reading evaluation state"))?;
            raw.map(|s| decode(&s, "reading evaluation state"))
                .transpose()
        })
        .await
    }

    async fn put_evaluation_state(&self, experiment_id: &str, state: &Value) -> Result<()> {
        let (eid, state) = (experiment_id.to_owned(), state.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO evaluation_state (experiment_id, state) VALUES (?1, ?2)
                 ON CONFLICT (experiment_id) DO UPDATE SET state = excluded.state",
                params![eid, state],
            )
            .map_err(internal("writing evaluation state"))?;
            Ok(())
        })
        .await
    }

    async fn record_evaluation(&self, point: &EvaluationPoint) -> Result<()> {
        let doc = encode(point)?;
        let (eid, at) = (point.experiment_id.clone(), to_millis(point.at));
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO evaluation_history (experiment_id, at, doc) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![eid, at, doc]))
            .map_err(internal("recording an evaluation"))?;
            Ok(())
        })
        .await
    }

    async fn evaluation_history(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<EvaluationPoint>> {
        let eid = experiment_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let docs = c
                .prepare_cached(LATEST_EVALUATIONS)
                .and_then(|mut st| {
                    st.query_map(params![eid, limit], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(internal("reading evaluation history"))?;
            docs.iter()
                .rev()
                .map(|d| decode(d, "reading evaluation history"))
                .collect()
        })
        .await
    }
}
