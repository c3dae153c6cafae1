//! [`JobStore`] on SQLite: leases are one row per job changed in `BEGIN IMMEDIATE`
//! transactions (so two processes on one file serialize on SQLite's write lock), fenced
//! writes check the token in the transaction that writes.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::{SqliteStore, begin, check_fence, commit, decode, encode, internal};
use crate::Result;
use crate::jobs::{Fence, JobStore, Lease, LeaseGrant, RetentionFilter, RunRecord};
use crate::model::{Page, PageRequest, Purge, from_millis, to_millis};

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

/// A stored lease row: owner, token, expiry (ms), last tick granted (ms).
type LeaseRow = (String, i64, i64, Option<i64>);

fn read_lease(c: &Connection, job: &str) -> Result<Option<LeaseRow>> {
    c.query_row(
        "SELECT owner, token, expires_at, last_tick FROM leases WHERE job = ?1",
        [job],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
    .map_err(internal("reading a lease"))
}

/// Names of a [`RetentionFilter`] as SQL: `(clause, parameters)` over `column` (the
/// experiment id column) appended to a query that already has `?1`.
pub(super) fn scope_clause(filter: &RetentionFilter, column: &str) -> (String, Vec<String>) {
    match &filter.only {
        Some(id) => (format!(" AND {column} = ?2"), vec![id.clone()]),
        None if filter.except.is_empty() => (String::new(), Vec::new()),
        None => {
            let marks = (0..filter.except.len())
                .map(|i| format!("?{}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!(" AND {column} NOT IN ({marks})"),
                filter.except.clone(),
            )
        }
    }
}

/// Deletes at most `limit` raw events received before `?1`, oldest first, that the rollups
/// have folded in (at or below the watermark: an event not yet rolled up is never a
/// candidate), narrowed by `clause` (from [`scope_clause`]).
///
/// The candidates are read through `events_by_received`, so a run that finds nothing old
/// enough reads nothing, and one that finds some reads just those. The `+` before `seq` and
/// `experiment_id` keeps SQLite from choosing the rowid range or `events_by_experiment`
/// instead, which would read every event below the watermark or every event of the
/// experiment.
pub(super) fn expired_events_sql(clause: &str, limit: usize) -> String {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    format!(
        "DELETE FROM events WHERE seq IN (
             SELECT seq FROM events
             WHERE received_at < ?1
               AND +seq <= COALESCE((SELECT seq FROM rollup_state WHERE name = 'events'), 0){clause}
             ORDER BY received_at, seq LIMIT {limit})"
    )
}

/// What a deleted experiment leaves, in purge order: raw events first (nothing is rolled up
/// from them meanwhile), then what was rolled up or decided from them. Each statement
/// deletes at most `?2` rows of experiment `?1`, by the table's own key.
const PURGE_STATEMENTS: &[&str] = &[
    "DELETE FROM events WHERE seq IN (
         SELECT seq FROM events WHERE experiment_id = ?1 LIMIT ?2)",
    "DELETE FROM buckets WHERE (experiment_id, event, granularity, start, variant) IN (
         SELECT experiment_id, event, granularity, start, variant FROM buckets
         WHERE experiment_id = ?1 LIMIT ?2)",
    "DELETE FROM subject_metrics WHERE (experiment, event, subject) IN (
         SELECT experiment, event, subject FROM subject_metrics
         WHERE experiment = (SELECT id FROM rollup_names WHERE name = ?1) LIMIT ?2)",
    "DELETE FROM subject_segments WHERE (experiment, subject) IN (
         SELECT experiment, subject FROM subject_segments
         WHERE experiment = (SELECT id FROM rollup_names WHERE name = ?1) LIMIT ?2)",
    "DELETE FROM assignments WHERE (experiment_id, subject) IN (
         SELECT experiment_id, subject FROM assignments WHERE experiment_id = ?1 LIMIT ?2)",
    "DELETE FROM forced_variants WHERE (experiment_id, subject) IN (
         SELECT experiment_id, subject FROM forced_variants WHERE experiment_id = ?1 LIMIT ?2)",
    "DELETE FROM evaluation_state WHERE experiment_id = ?1 AND ?2 > 0",
    "DELETE FROM evaluation_history WHERE seq IN (
         SELECT seq FROM evaluation_history WHERE experiment_id = ?1 LIMIT ?2)",
];

/// Deletes at most `limit` points of evaluation history evaluated before `?1`, oldest first,
/// narrowed by `clause` (from [`scope_clause`]), found through `evaluation_history_by_time`.
pub(super) fn expired_evaluations_sql(clause: &str, limit: usize) -> String {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    format!(
        "DELETE FROM evaluation_history WHERE seq IN (
             SELECT seq FROM evaluation_history
             WHERE at < ?1{clause}
             ORDER BY at, seq LIMIT {limit})"
    )
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn acquire_lease(
        &self,
        job: &str,
        owner: &str,
        ttl: Duration,
        now: OffsetDateTime,
        tick: Option<OffsetDateTime>,
    ) -> Result<LeaseGrant> {
        let (job, owner) = (job.to_owned(), owner.to_owned());
        self.write(move |c| {
            let tx = begin(c)?;
            let now_ms = to_millis(now);
            let tick_ms = tick.map(to_millis);
            let current = read_lease(&tx, &job)?;
            let mut next_token = 1;
            if let Some((holder, token, expires_at, last_tick)) = current {
                if expires_at > now_ms {
                    return Ok(LeaseGrant::Held {
                        owner: holder,
                        expires_at: from_millis(expires_at),
                    });
                }
                if let (Some(t), Some(last)) = (tick_ms, last_tick)
                    && last >= t
                {
                    return Ok(LeaseGrant::AlreadyRan);
                }
                next_token = token + 1;
            }
            let expires_at = now_ms.saturating_add(ttl_ms(ttl));
            tx.execute(
                "INSERT INTO leases (job, owner, token, expires_at, last_tick)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job) DO UPDATE SET owner = excluded.owner,
                     token = excluded.token, expires_at = excluded.expires_at,
                     last_tick = COALESCE(excluded.last_tick, leases.last_tick)",
                params![job, owner, next_token, expires_at, tick_ms],
            )
            .map_err(internal("granting a lease"))?;
            commit(tx)?;
            Ok(LeaseGrant::Acquired(Lease {
                job,
                owner,
                token: next_token as u64,
                expires_at: from_millis(expires_at),
            }))
        })
        .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>> {
        let lease = lease.clone();
        self.write(move |c| {
            let expires_at = to_millis(now).saturating_add(ttl_ms(ttl));
            let n = c
                .execute(
                    "UPDATE leases SET expires_at = ?1 WHERE job = ?2 AND owner = ?3 AND token = ?4",
                    params![expires_at, lease.job, lease.owner, lease.token as i64],
                )
                .map_err(internal("renewing a lease"))?;
            Ok((n == 1).then(|| Lease {
                expires_at: from_millis(expires_at),
                ..lease
            }))
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease, now: OffsetDateTime) -> Result<()> {
        let lease = lease.clone();
        self.write(move |c| {
            c.execute(
                "UPDATE leases SET expires_at = MIN(expires_at, ?1)
                 WHERE job = ?2 AND owner = ?3 AND token = ?4",
                params![to_millis(now), lease.job, lease.owner, lease.token as i64],
            )
            .map_err(internal("releasing a lease"))?;
            Ok(())
        })
        .await
    }

    async fn get_lease(&self, job: &str) -> Result<Option<Lease>> {
        let job = job.to_owned();
        self.read_point(move |c| {
            Ok(
                read_lease(c, &job)?.map(|(owner, token, expires_at, _)| Lease {
                    job,
                    owner,
                    token: token as u64,
                    expires_at: from_millis(expires_at),
                }),
            )
        })
        .await
    }

    async fn put_run(&self, run: &RunRecord) -> Result<()> {
        let doc = encode(run)?;
        let (id, job) = (run.id.clone(), run.job.clone());
        let (started, finished) = (to_millis(run.started_at), run.finished_at.map(to_millis));
        self.write(move |c| {
            c.execute(
                "INSERT INTO job_runs (id, job, started_at, finished_at, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at,
                     doc = excluded.doc",
                params![id, job, started, finished, doc],
            )
            .map_err(internal("writing a run record"))?;
            Ok(())
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_owned();
        self.read_point(move |c| {
            let doc: Option<String> = c
                .query_row("SELECT doc FROM job_runs WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(internal("reading a run record"))?;
            doc.map(|d| decode(&d, "reading a run record")).transpose()
        })
        .await
    }

    async fn list_runs(&self, job: Option<&str>, page: PageRequest) -> Result<Page<RunRecord>> {
        let job = job.map(str::to_owned);
        self.read(move |c| {
            let (total, docs): (i64, Vec<String>) = {
                let limit = page.limit() as i64;
                let offset = page.offset() as i64;
                let total = c
                    .query_row(
                        "SELECT COUNT(*) FROM job_runs WHERE ?1 IS NULL OR job = ?1",
                        [&job],
                        |r| r.get(0),
                    )
                    .map_err(internal("counting run records"))?;
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM job_runs WHERE ?1 IS NULL OR job = ?1
                         ORDER BY started_at DESC, id DESC LIMIT ?2 OFFSET ?3",
                    )
                    .map_err(internal("listing run records"))?;
                let docs = stmt
                    .query_map(params![job, limit, offset], |r| r.get(0))
                    .map_err(internal("listing run records"))?
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(internal("listing run records"))?;
                (total, docs)
            };
            Ok(Page {
                items: docs
                    .iter()
                    .map(|d| decode(d, "listing run records"))
                    .collect::<Result<_>>()?,
                total: total as u64,
            })
        })
        .await
    }

    async fn delete_events(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let (clause, ids) = scope_clause(filter, "+experiment_id");
        let sql = expired_events_sql(&clause, limit);
        self.fenced_delete(sql, to_millis(filter.before), ids, fence)
            .await
    }

    async fn delete_buckets(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let (clause, ids) = scope_clause(filter, "experiment_id");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "DELETE FROM buckets
             WHERE (experiment_id, event, granularity, start, variant) IN (
                 SELECT experiment_id, event, granularity, start, variant FROM buckets
                 WHERE start < ?1{clause} LIMIT {limit})"
        );
        self.fenced_delete(sql, to_millis(filter.before), ids, fence)
            .await
    }

    async fn delete_evaluation_history(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let (clause, ids) = scope_clause(filter, "+experiment_id");
        let sql = expired_evaluations_sql(&clause, limit);
        self.fenced_delete(sql, to_millis(filter.before), ids, fence)
            .await
    }

    async fn delete_webhook_attempts(
        &self,
        before: OffsetDateTime,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "DELETE FROM webhook_attempts WHERE id IN (
                 SELECT a.id FROM webhook_attempts a
                 LEFT JOIN webhook_deliveries d
                   ON d.endpoint_id = a.endpoint_id AND d.message_id = a.message_id
                 WHERE a.at < ?1 AND COALESCE(d.status, 'gone') <> 'pending'
                 ORDER BY a.id LIMIT {limit})"
        );
        self.fenced_delete(sql, to_millis(before), Vec::new(), fence)
            .await
    }

    async fn pending_purges(&self) -> Result<Vec<Purge>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, deleted_at FROM deleted_experiments ORDER BY deleted_at, id",
                )
                .map_err(internal("listing deleted experiments"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(internal("listing deleted experiments"))?;
            Ok(rows
                .into_iter()
                .map(|(experiment_id, at)| Purge {
                    experiment_id,
                    deleted_at: from_millis(at),
                })
                .collect())
        })
        .await
    }

    async fn purge_experiment_data(
        &self,
        experiment_id: &str,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let (id, fence) = (experiment_id.to_owned(), fence.cloned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |c| {
            let tx = begin(c)?;
            check_fence(&tx, fence.as_ref())?;
            let exists = tx
                .query_row("SELECT 1 FROM experiments WHERE id = ?1", [&id], |_| Ok(()))
                .optional()
                .map_err(internal("reading an experiment"))?
                .is_some();
            let mut deleted = 0;
            if !exists {
                for sql in PURGE_STATEMENTS {
                    if deleted >= limit {
                        break;
                    }
                    let n = tx
                        .prepare_cached(sql)
                        .and_then(|mut st| st.execute(params![id, limit - deleted]))
                        .map_err(internal("deleting a deleted experiment's data"))?;
                    deleted += n as i64;
                }
            }
            commit(tx)?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn finish_purge(&self, experiment_id: &str, fence: Option<&Fence>) -> Result<()> {
        let (id, fence) = (experiment_id.to_owned(), fence.cloned());
        self.write(move |c| {
            let tx = begin(c)?;
            check_fence(&tx, fence.as_ref())?;
            tx.execute("DELETE FROM deleted_experiments WHERE id = ?1", [&id])
                .map_err(internal("forgetting a finished purge"))?;
            commit(tx)
        })
        .await
    }

    async fn delete_runs(
        &self,
        before: OffsetDateTime,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "DELETE FROM job_runs WHERE id IN (
                 SELECT id FROM job_runs WHERE finished_at < ?1 ORDER BY finished_at LIMIT {limit})"
        );
        self.fenced_delete(sql, to_millis(before), Vec::new(), fence)
            .await
    }

    async fn delete_old_publications(
        &self,
        keep: u64,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "DELETE FROM publications WHERE (environment, organization, version) IN (
                 SELECT p.environment, p.organization, p.version
                 FROM publications p
                 JOIN (SELECT environment, organization, MAX(version) AS newest
                       FROM publications GROUP BY environment, organization) s
                   ON s.environment = p.environment AND s.organization = p.organization
                 WHERE p.version <= s.newest - ?1
                 ORDER BY p.version LIMIT {limit})"
        );
        self.fenced_delete(sql, keep, Vec::new(), fence).await
    }
}

impl SqliteStore {
    /// Run one bounded `DELETE` (`?1` = the cutoff (a time, or a number of versions kept),
    /// then `ids`) if `fence` still holds, in one transaction.
    async fn fenced_delete(
        &self,
        sql: String,
        cutoff: i64,
        ids: Vec<String>,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let fence = fence.cloned();
        self.write(move |c| {
            let tx = begin(c)?;
            check_fence(&tx, fence.as_ref())?;
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![&cutoff];
            values.extend(ids.iter().map(|s| s as &dyn rusqlite::ToSql));
            let n = tx
                .execute(&sql, values.as_slice())
                .map_err(internal("deleting expired data"))?;
            commit(tx)?;
            Ok(n as u64)
        })
        .await
    }
}
