//! [`AssignmentStore`] on SQLite: tables `assignments` (never updated once stored) and
//! `forced_variants`. New assignments are group-committed on the writer thread with event
//! batches; lookups are point reads on the calling thread.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::json;
use time::OffsetDateTime;
use verdict_domain::Assignment;

use super::{Message, SqliteStore, WriteJob, audit, begin, commit, decode, internal};
use crate::Result;
use crate::assignments::{AssignmentStore, Exposure};
use crate::error::StoreError;
use crate::model::{SubjectRecord, from_millis, to_millis};

/// Store `a` unless its subject has an assignment; the stored one, and whether this made it.
/// Runs inside a group commit of the writer thread.
pub(super) fn assign_in(tx: &Transaction<'_>, a: &Assignment) -> Result<(Assignment, bool)> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO assignments (experiment_id, subject, variant, assigned_at, context)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(params![
                a.experiment_id,
                a.subject,
                a.variant,
                to_millis(a.assigned_at),
                a.context
                    .as_ref()
                    .map(|c| serde_json::Value::Object(c.clone()).to_string())
            ])
        })
        .map_err(internal("inserting an assignment"))?;
    if inserted == 1 {
        // As it reads back: stored to the millisecond.
        let stored = Assignment {
            assigned_at: from_millis(to_millis(a.assigned_at)),
            ..a.clone()
        };
        return Ok((stored, true));
    }
    let stored = select_assignment(tx, &a.experiment_id, &a.subject)?.ok_or_else(|| {
        StoreError::corrupt("storing an assignment, which vanished after its insert")
    })?;
    Ok((stored, false))
}

fn select_assignment(
    c: &Connection,
    experiment_id: &str,
    subject: &str,
) -> Result<Option<Assignment>> {
    let row: Option<(String, i64, Option<String>)> = c
        .prepare_cached(
            "SELECT variant, assigned_at, context FROM assignments
             WHERE experiment_id = ?1 AND subject = ?2",
        )
        .map_err(internal("reading an assignment"))?
        .query_row(params![experiment_id, subject], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(internal("reading an assignment"))?;
    row.map(|(variant, at, context)| {
        Ok(Assignment {
            experiment_id: experiment_id.to_owned(),
            subject: subject.to_owned(),
            variant,
            assigned_at: from_millis(at),
            context: decode_context(context)?,
        })
    })
    .transpose()
}

/// An assignment's stored context (a JSON object, or NULL).
fn decode_context(
    context: Option<String>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    context
        .map(|c| decode(&c, "reading an assignment's context"))
        .transpose()
}

#[async_trait]
impl AssignmentStore for SqliteStore {
    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read_point(move |c| select_assignment(c, &eid, &s))
            .await
    }

    async fn get_or_create_assignment(
        &self,
        assignment: &Assignment,
    ) -> Result<(Assignment, bool)> {
        self.assign(assignment, None).await
    }

    async fn set_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
        variant: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let (eid, s, v, actor) = (
            experiment_id.to_owned(),
            subject.to_owned(),
            variant.map(str::to_owned),
            actor.to_owned(),
        );
        self.write(move |c| {
            let tx = begin(c)?;
            match &v {
                Some(v) => tx.execute(
                    "INSERT INTO forced_variants (experiment_id, subject, variant) VALUES (?1, ?2, ?3)
                     ON CONFLICT (experiment_id, subject) DO UPDATE SET variant = excluded.variant",
                    params![eid, s, v],
                ),
                None => tx.execute(
                    "DELETE FROM forced_variants WHERE experiment_id = ?1 AND subject = ?2",
                    params![eid, s],
                ),
            }
            .map_err(internal("writing a forced variant"))?;
            let now = OffsetDateTime::now_utc();
            audit(&tx, &eid, now, &actor, "forced_variant_set", &json!({"subject": s, "variant": v}))?;
            commit(tx)
        })
        .await
    }

    async fn get_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<String>> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read_point(move |c| {
            c.prepare_cached(
                "SELECT variant FROM forced_variants WHERE experiment_id = ?1 AND subject = ?2",
            )
            .and_then(|mut st| st.query_row(params![eid, s], |r| r.get(0)).optional())
            .map_err(internal("reading a forced variant"))
        })
        .await
    }

    async fn has_forced_variants(&self, experiment_id: &str) -> Result<bool> {
        let eid = experiment_id.to_owned();
        self.read_point(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM forced_variants WHERE experiment_id = ?1)",
            )
            .and_then(|mut st| st.query_row(params![eid], |r| r.get(0)))
            .map_err(internal("looking for forced variants"))
        })
        .await
    }

    async fn forced_variants(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let eid = experiment_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_point(move |c| {
            c.prepare_cached(
                "SELECT subject, variant FROM forced_variants WHERE experiment_id = ?1
                 ORDER BY subject LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![eid, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(internal("listing forced variants"))
        })
        .await
    }

    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        let (eid, s) = (experiment_id.to_owned(), subject.to_owned());
        self.read_point(move |c| {
            // One statement, so one read transaction (each takes the WAL's read lock).
            type Row = (Option<String>, Option<String>, Option<i64>, Option<String>);
            let (forced, variant, assigned_at, context): Row = c
                .prepare_cached(
                    "SELECT (SELECT variant FROM forced_variants
                             WHERE experiment_id = ?1 AND subject = ?2),
                            a.variant, a.assigned_at, a.context
                     FROM (SELECT 1)
                     LEFT JOIN assignments a ON a.experiment_id = ?1 AND a.subject = ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![eid, s], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                })
                .map_err(internal("reading the subject's state"))?;
            let assignment = match variant.zip(assigned_at) {
                Some((variant, at)) => Some(Assignment {
                    experiment_id: eid.clone(),
                    subject: s.clone(),
                    variant,
                    assigned_at: from_millis(at),
                    context: decode_context(context)?,
                }),
                None => None,
            };
            Ok(SubjectRecord { forced, assignment })
        })
        .await
    }
}

impl SqliteStore {
    /// Store `assignment` (and `exposure` of what is stored) through the writer thread.
    /// Callers look for a stored assignment first; new subjects arrive many at a time, so
    /// they are committed in groups like event batches.
    pub(super) async fn assign(
        &self,
        assignment: &Assignment,
        exposure: Option<&Exposure>,
    ) -> Result<(Assignment, bool)> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = WriteJob::Assign {
            assignment: assignment.clone(),
            exposure: exposure.cloned().map(Box::new),
            reply,
        };
        self.send(Message::Commit(job), answer).await
    }
}
