//! [`ExperimentStore`] on SQLite: table `experiments` (the document and its projected
//! columns, written together), `audit`, and `outbox`, whose rows are inserted in the
//! transaction of the change that causes them.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::json;
use time::OffsetDateTime;
use verdict_domain::{Experiment, OutboxMessage, Scope, ThresholdState};

use super::{
    SqliteStore, audit, begin, commit, decode, encode, get_doc, insert_doc, internal,
    is_unique_violation, page_of,
};
use crate::Result;
use crate::error::StoreError;
use crate::experiments::ExperimentStore;
use crate::model::{
    AuditEntry, Deletion, ExperimentFilter, Page, PageRequest, StatusChange, WinnerChange,
    from_millis, to_millis,
};

fn org_column(org: &Option<String>) -> &str {
    org.as_deref().unwrap_or("")
}

fn load_experiment_by_id(conn: &Connection, id: &str) -> Result<Option<Experiment>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM experiments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(internal("reading an experiment"))?;
    doc.map(|d| decode(&d, "reading an experiment")).transpose()
}

/// Write the outbox messages announcing `before` → `after` (inside the change's transaction).
fn enqueue(
    tx: &Transaction<'_>,
    before: &Experiment,
    after: &Experiment,
    at: OffsetDateTime,
) -> Result<()> {
    insert_outbox(
        tx,
        &verdict_domain::outbox::messages_for_change(before, after, at),
    )
}

/// Insert outbox messages (inside the transaction of what they announce); one already
/// there under its stable id stays as it is.
fn insert_outbox(tx: &Transaction<'_>, messages: &[OutboxMessage]) -> Result<()> {
    for m in messages {
        let doc = encode(m)?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO outbox (id, experiment_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![m.id, m.experiment_id, to_millis(m.created_at), doc]))
        .map_err(internal("writing an outbox message"))?;
    }
    Ok(())
}

/// Rewrite the stored document and projections of `e` (inside a transaction).
fn save_experiment(tx: &Transaction<'_>, e: &Experiment) -> Result<()> {
    let res = tx.execute(
        "UPDATE experiments SET key = ?2, status = ?3, audience = ?4, version = ?5, doc = ?6
         WHERE id = ?1",
        params![
            e.id,
            e.key,
            e.status.as_str(),
            e.audience.as_deref().unwrap_or(""),
            e.version as i64,
            encode(e)?
        ],
    );
    match res {
        Ok(_) => Ok(()),
        Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!(
            "an experiment with key '{}' already exists in this environment and organization",
            e.key
        ))),
        Err(err) => Err(internal("updating an experiment")(err)),
    }
}

#[async_trait]
impl ExperimentStore for SqliteStore {
    async fn create_experiment(&self, experiment: &Experiment, actor: &str) -> Result<()> {
        let e = experiment.clone();
        let actor = actor.to_owned();
        let doc = encode(&e)?;
        self.write(move |c| {
            let tx = begin(c)?;
            insert_doc(
                &tx,
                "INSERT INTO experiments
                     (id, environment, organization, key, status, audience, version, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    &e.id,
                    &e.scope.environment,
                    &org_column(&e.scope.organization),
                    &e.key,
                    &e.status.as_str(),
                    &e.audience.as_deref().unwrap_or(""),
                    &(e.version as i64),
                    &doc,
                ],
                &format!(
                    "an experiment with key '{}' in this environment and organization",
                    e.key
                ),
            )?;
            audit(
                &tx,
                &e.id,
                e.created_at,
                &actor,
                "created",
                &json!({"key": e.key}),
            )?;
            commit(tx)
        })
        .await
    }

    async fn get_experiment(&self, scope: &Scope, key_or_id: &str) -> Result<Option<Experiment>> {
        let env = scope.environment.clone();
        let org = org_column(&scope.organization).to_owned();
        let k = key_or_id.to_owned();
        self.read_point(move |c| {
            get_doc(
                c,
                "SELECT doc FROM experiments
                 WHERE environment = ?1 AND organization = ?2 AND (key = ?3 OR id = ?3)
                 ORDER BY key = ?3 DESC LIMIT 1",
                &[&env, &org, &k],
                "reading an experiment",
            )
        })
        .await
    }

    async fn list_experiments(
        &self,
        filter: &ExperimentFilter,
        page: PageRequest,
    ) -> Result<Page<Experiment>> {
        let f = filter.clone();
        self.read(move |c| {
            let mut where_sql = String::from("1 = 1");
            let mut args: Vec<String> = Vec::new();
            // `condition` with `?` for the parameter `value`.
            let mut add = |condition: &str, value: String| {
                args.push(value);
                let at = format!("?{}", args.len());
                where_sql.push_str(" AND ");
                where_sql.push_str(&condition.replace('?', &at));
            };
            if let Some(env) = f.environment {
                add("environment = ?", env);
            }
            match f.organization {
                // Global experiments have organization ''.
                Some(Some(org)) if f.with_global => add("organization IN (?, '')", org),
                Some(org) => add("organization = ?", org.unwrap_or_default()),
                None => {}
            }
            if let Some(st) = f.status {
                add("status = ?", st.as_str().to_owned());
            }
            if let Some(text) = f.text {
                add(
                    "(instr(lower(key), ?) > 0 OR instr(lower(json_extract(doc, '$.name')), ?) > 0)",
                    text.to_ascii_lowercase(),
                );
            }
            let n = args.len();
            let refs: Vec<&dyn rusqlite::ToSql> =
                args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
            page_of(
                c,
                &format!("SELECT COUNT(*) FROM experiments WHERE {where_sql}"),
                &format!(
                    "SELECT doc FROM experiments WHERE {where_sql}
                     ORDER BY rowid LIMIT ?{} OFFSET ?{}",
                    n + 1,
                    n + 2
                ),
                &refs,
                page,
                "listing experiments",
            )
        })
        .await
    }

    async fn update_experiment(&self, experiment: &Experiment, actor: &str) -> Result<Experiment> {
        let e = experiment.clone();
        let actor = actor.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let current = load_experiment_by_id(&tx, &e.id)?.ok_or(StoreError::NotFound)?;
            if current.version != e.version {
                return Err(StoreError::VersionConflict {
                    expected: e.version,
                    actual: current.version,
                });
            }
            let mut next = e;
            // Status, winner and lifecycle stamps change only through their own operations.
            next.status = current.status;
            next.winner = current.winner;
            next.started_at = current.started_at;
            next.completed_at = current.completed_at;
            next.created_at = current.created_at;
            next.version = current.version + 1;
            save_experiment(&tx, &next)?;
            audit(
                &tx,
                &next.id,
                next.updated_at,
                &actor,
                "updated",
                &json!({"version": next.version}),
            )?;
            commit(tx)?;
            Ok(next)
        })
        .await
    }

    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>> {
        let ch = change.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let Some(mut e) = load_experiment_by_id(&tx, &ch.experiment_id)? else {
                return Err(StoreError::NotFound);
            };
            // The compare of the compare-and-set: the writer connection serializes writers,
            // and the read and write share one IMMEDIATE transaction.
            if e.status != ch.from {
                return Ok(None);
            }
            let before = e.clone();
            e.apply_status(ch.to, ch.at);
            save_experiment(&tx, &e)?;
            enqueue(&tx, &before, &e, ch.at)?;
            audit(
                &tx,
                &e.id,
                ch.at,
                &ch.actor,
                "status_changed",
                &json!({"from": ch.from, "to": ch.to}),
            )?;
            commit(tx)?;
            Ok(Some(e))
        })
        .await
    }

    async fn set_winner(&self, change: &WinnerChange) -> Result<Experiment> {
        let ch = change.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let mut e =
                load_experiment_by_id(&tx, &ch.experiment_id)?.ok_or(StoreError::NotFound)?;
            if let Some(expected) = ch.expected_version
                && expected != e.version
            {
                return Err(StoreError::VersionConflict {
                    expected,
                    actual: e.version,
                });
            }
            let at = ch.winner.decided_at;
            let previous = e.winner.as_ref().map(|w| w.variant.clone());
            let before = e.clone();
            let from = e.apply_winner(ch.winner.clone(), ch.complete);
            save_experiment(&tx, &e)?;
            enqueue(&tx, &before, &e, at)?;
            audit(
                &tx,
                &e.id,
                at,
                &ch.actor,
                "winner_set",
                &json!({
                    "from": previous, "to": ch.winner.variant, "source": ch.winner.source,
                    "details": ch.winner.details,
                }),
            )?;
            if e.status != from {
                audit(
                    &tx,
                    &e.id,
                    at,
                    &ch.actor,
                    "status_changed",
                    &json!({"from": from, "to": e.status}),
                )?;
            }
            commit(tx)?;
            Ok(e)
        })
        .await
    }

    async fn delete_experiment(&self, deletion: &Deletion) -> Result<bool> {
        let d = deletion.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let removed = tx
                .execute(
                    "DELETE FROM experiments WHERE id = ?1 AND version = ?2",
                    params![d.experiment_id, d.version as i64],
                )
                .map_err(internal("deleting an experiment"))?;
            if removed == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT OR REPLACE INTO deleted_experiments (id, deleted_at) VALUES (?1, ?2)",
                params![d.experiment_id, to_millis(d.at)],
            )
            .map_err(internal("queueing a deleted experiment's purge"))?;
            tx.execute(
                "DELETE FROM threshold_states WHERE experiment_id = ?1",
                [&d.experiment_id],
            )
            .map_err(internal("deleting an experiment's threshold state"))?;
            audit(&tx, &d.experiment_id, d.at, &d.actor, "deleted", &d.details)?;
            commit(tx)?;
            Ok(true)
        })
        .await
    }

    async fn list_audit(&self, experiment_id: &str, page: PageRequest) -> Result<Page<AuditEntry>> {
        let id = experiment_id.to_owned();
        self.read(move |c| {
            let total: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM audit WHERE experiment_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(internal("counting audit entries"))?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, at, actor, action, details FROM audit WHERE experiment_id = ?1
                     ORDER BY id DESC LIMIT ?2 OFFSET ?3",
                )
                .map_err(internal("listing audit entries"))?;
            let rows = stmt
                .query_map(
                    params![id, page.limit() as i64, page.offset() as i64],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    },
                )
                .map_err(internal("listing audit entries"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing audit entries"))?;
            let items = rows
                .into_iter()
                .map(|(aid, at, actor, action, details)| {
                    Ok(AuditEntry {
                        id: aid as u64,
                        experiment_id: id.clone(),
                        at: from_millis(at),
                        actor,
                        action,
                        details: decode(&details, "listing audit entries")?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn record_audit(
        &self,
        subject: &str,
        actor: &str,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        let (subject, actor, action, details) = (
            subject.to_owned(),
            actor.to_owned(),
            action.to_owned(),
            details.clone(),
        );
        self.write(move |c| {
            let tx = begin(c)?;
            audit(
                &tx,
                &subject,
                OffsetDateTime::now_utc(),
                &actor,
                &action,
                &details,
            )?;
            commit(tx)
        })
        .await
    }

    async fn list_outbox(&self, page: PageRequest) -> Result<Page<OutboxMessage>> {
        self.read(move |c| {
            let total: i64 = c
                .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
                .map_err(internal("counting outbox messages"))?;
            let mut stmt = c
                .prepare_cached("SELECT doc FROM outbox ORDER BY seq LIMIT ?1 OFFSET ?2")
                .map_err(internal("listing outbox messages"))?;
            let docs = stmt
                .query_map(params![page.limit() as i64, page.offset() as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(internal("listing outbox messages"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing outbox messages"))?;
            let items = docs
                .iter()
                .map(|d| decode(d, "listing outbox messages"))
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn threshold_state(&self, experiment_id: &str) -> Result<ThresholdState> {
        let id = experiment_id.to_owned();
        self.read_point(move |c| {
            let doc: Option<String> = c
                .query_row(
                    "SELECT doc FROM threshold_states WHERE experiment_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal("reading a threshold state"))?;
            doc.map(|d| decode(&d, "reading a threshold state"))
                .transpose()
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn record_threshold_state(
        &self,
        experiment_id: &str,
        expected_announced: u64,
        state: &ThresholdState,
        messages: &[OutboxMessage],
    ) -> Result<bool> {
        let id = experiment_id.to_owned();
        let announced = state.announced as i64;
        let doc = encode(state)?;
        let messages = messages.to_vec();
        self.write(move |c| {
            let tx = begin(c)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM experiments WHERE id = ?1)",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(internal("recording a threshold state"))?;
            let stored: i64 = tx
                .query_row(
                    "SELECT COALESCE(
                         (SELECT announced FROM threshold_states WHERE experiment_id = ?1), 0)",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(internal("recording a threshold state"))?;
            if !exists || stored != expected_announced as i64 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO threshold_states (experiment_id, announced, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (experiment_id) DO UPDATE SET announced = ?2, doc = ?3",
                params![id, announced, doc],
            )
            .map_err(internal("recording a threshold state"))?;
            insert_outbox(&tx, &messages)?;
            commit(tx)?;
            Ok(true)
        })
        .await
    }
}
