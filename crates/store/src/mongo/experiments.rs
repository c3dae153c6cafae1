//! [`ExperimentStore`] on MongoDB: collections `experiments`, `audit` and `outbox`.
//!
//! Every change is a compare-and-set on the experiment's `version`. The outbox messages a
//! change causes ride in the same single-document update (`outbox_pending`), so they exist
//! if and only if the change does, without a transaction; a relay then moves them to the
//! `outbox` collection (inserted with stable ids, duplicates ignored, then pulled). A crash
//! between the two leaves them pending in the experiment document, and the next relay
//! ([`ExperimentStore::list_outbox`], every webhook fan-out) moves them.
//!
//! The crossing state of an experiment's metric thresholds lives in its document too
//! (`threshold_state: {announced, doc}`, beside the definition in `doc`), so that a new
//! state and the messages announcing its crossings are again one single-document update.

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, doc};
use serde_json::json;
use time::OffsetDateTime;
use verdict_domain::outbox::messages_for_change;
use verdict_domain::{Experiment, OutboxMessage, Scope, ThresholdState};

use super::{
    MongoStore, bdate, collect, db_err, doc_field, documents, encode, get_bson, get_date, get_str,
    get_u64, is_duplicate, opt_array,
};
use crate::Result;
use crate::error::StoreError;
use crate::experiments::ExperimentStore;
use crate::model::{
    AuditEntry, Deletion, ExperimentFilter, Page, PageRequest, StatusChange, WinnerChange,
};

const EXPERIMENTS: &str = "`experiments`";

fn org_field(org: &Option<String>) -> &str {
    org.as_deref().unwrap_or("")
}

fn experiment_fields(e: &Experiment) -> Result<Document> {
    Ok(doc! {
        "environment": &e.scope.environment,
        "organization": org_field(&e.scope.organization),
        "key": &e.key,
        "status": e.status.as_str(),
        "audience": e.audience.as_deref().unwrap_or(""),
        "version": e.version as i64,
        // The rollup records segments for the experiments broken down by an event key.
        "breakdown_event": e
            .breakdown
            .as_ref()
            .filter(|b| b.source == verdict_domain::DimensionSource::Event)
            .map(|b| b.attribute.as_str()),
        "doc": encode(e)?,
    })
}

/// A regular expression matching `text` literally.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}-/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn outbox_doc(m: &OutboxMessage) -> Result<Document> {
    Ok(doc! {
        "_id": &m.id,
        "experiment_id": &m.experiment_id,
        "created_at": bdate(m.created_at),
        "doc": encode(m)?,
    })
}

/// Add to `update` the `$push` of `messages` onto the experiment document's
/// `outbox_pending`, each with `version` and its position (the order they are listed in).
fn push_pending(update: &mut Document, messages: &[OutboxMessage], version: u64) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let pending = messages
        .iter()
        .enumerate()
        .map(|(pos, m)| {
            let mut d = outbox_doc(m)?;
            d.insert("version", version as i64);
            d.insert("pos", pos as i64);
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    update.insert("$push", doc! {"outbox_pending": {"$each": pending}});
    Ok(())
}

impl MongoStore {
    async fn load_experiment(&self, id: &str) -> Result<Option<Experiment>> {
        self.coll("experiments")
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_err("reading an experiment"))?
            .map(|d| doc_field(&d, EXPERIMENTS, "reading an experiment"))
            .transpose()
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
        let mut update = doc! {"$set": experiment_fields(e)?};
        push_pending(&mut update, outbox, e.version)?;
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
                    db_err("updating an experiment")(err)
                }
            })?;
        Ok(res.matched_count == 1)
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
        let pending: Vec<Document> = documents(
            opt_array(&d, "outbox_pending", EXPERIMENTS)?,
            "outbox_pending",
            EXPERIMENTS,
        )?
        .into_iter()
        .cloned()
        .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let ids = pending
            .iter()
            .map(|p| get_bson(p, "_id", "pending outbox messages of `experiments`").cloned())
            .collect::<Result<Vec<Bson>>>()?;
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
    pub(super) async fn relay_all_outbox(&self) -> Result<()> {
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
            self.relay_outbox(get_str(&d, "_id", EXPERIMENTS)?).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ExperimentStore for MongoStore {
    async fn create_experiment(&self, experiment: &Experiment, actor: &str) -> Result<()> {
        let e = experiment;
        let mut d = experiment_fields(e)?;
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
                .map_err(db_err("reading an experiment"))?,
            "reading an experiment",
        )
        .await?;
        // A key match wins over an id match, as in the SQL adapter.
        let mut best = None;
        for d in &docs {
            if get_str(d, "key", EXPERIMENTS)? == key_or_id {
                best = Some(d);
                break;
            }
        }
        best.or_else(|| docs.first())
            .map(|d| doc_field(d, EXPERIMENTS, "reading an experiment"))
            .transpose()
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
        match &filter.organization {
            Some(Some(org)) if filter.with_global => {
                f.insert("organization", doc! {"$in": [org, ""]});
            }
            Some(org) => {
                f.insert("organization", org_field(org));
            }
            None => {}
        }
        if let Some(st) = filter.status {
            f.insert("status", st.as_str());
        }
        if let Some(text) = &filter.text {
            let contains = doc! {"$regex": regex_literal(text), "$options": "i"};
            f.insert(
                "$or",
                vec![doc! {"key": contains.clone()}, doc! {"doc.name": contains}],
            );
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
                &json!({
                    "from": previous, "to": ch.winner.variant, "source": ch.winner.source,
                    "details": ch.winner.details,
                }),
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

    async fn delete_experiment(&self, deletion: &Deletion) -> Result<bool> {
        let d = deletion;
        // Messages of changes already made leave the document before it goes; none can be
        // added after, as each change bumps the version the delete below is filtered on.
        self.relay_outbox(&d.experiment_id).await?;
        // The purge is queued first: a crash before the delete leaves a purge whose
        // experiment still exists, which the purge never acts on (and drops).
        let purges = self.coll("deleted_experiments");
        purges
            .update_one(
                doc! {"_id": &d.experiment_id},
                doc! {"$set": {"deleted_at": bdate(d.at)}},
            )
            .upsert(true)
            .await
            .map_err(db_err("queueing a deleted experiment's purge"))?;
        let removed = self
            .coll("experiments")
            .delete_one(doc! {"_id": &d.experiment_id, "version": d.version as i64})
            .await
            .map_err(db_err("deleting an experiment"))?;
        if removed.deleted_count == 0 {
            purges
                .delete_one(doc! {"_id": &d.experiment_id})
                .await
                .map_err(db_err("dropping a purge queued in vain"))?;
            return Ok(false);
        }
        self.audit(&d.experiment_id, d.at, &d.actor, "deleted", &d.details)
            .await?;
        Ok(true)
    }

    async fn list_audit(&self, experiment_id: &str, page: PageRequest) -> Result<Page<AuditEntry>> {
        const WHAT: &str = "`audit`";
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
                    id: get_u64(d, "_id", WHAT)?,
                    experiment_id: experiment_id.to_owned(),
                    at: get_date(d, "at", WHAT)?,
                    actor: get_str(d, "actor", WHAT)?.to_owned(),
                    action: get_str(d, "action", WHAT)?.to_owned(),
                    details: super::decode(get_str(d, "details", WHAT)?, "listing audit entries")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    async fn record_audit(
        &self,
        subject: &str,
        actor: &str,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        self.audit(subject, OffsetDateTime::now_utc(), actor, action, details)
            .await
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
            .map(|d| doc_field(d, "`outbox`", "listing outbox messages"))
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    async fn threshold_state(&self, experiment_id: &str) -> Result<ThresholdState> {
        const CONTEXT: &str = "reading a threshold state";
        let found = self
            .coll("experiments")
            .find_one(doc! {"_id": experiment_id})
            .projection(doc! {"threshold_state": 1})
            .await
            .map_err(db_err(CONTEXT))?;
        match found
            .as_ref()
            .and_then(|d| d.get_document("threshold_state").ok())
        {
            Some(state) => doc_field(state, EXPERIMENTS, CONTEXT),
            None => Ok(ThresholdState::default()),
        }
    }

    async fn record_threshold_state(
        &self,
        experiment_id: &str,
        expected_announced: u64,
        state: &ThresholdState,
        messages: &[OutboxMessage],
    ) -> Result<bool> {
        let stored_is_expected = if expected_announced == 0 {
            doc! {"$or": [
                {"threshold_state": {"$exists": false}},
                {"threshold_state.announced": 0_i64},
            ]}
        } else {
            doc! {"threshold_state.announced": expected_announced as i64}
        };
        let mut update = doc! {"$set": {"threshold_state": {
            "announced": state.announced as i64,
            "doc": encode(state)?,
        }}};
        push_pending(&mut update, messages, state.announced)?;
        let res = self
            .coll("experiments")
            .update_one(
                doc! {"$and": [{"_id": experiment_id}, stored_is_expected]},
                update,
            )
            .await
            .map_err(db_err("recording a threshold state"))?;
        if res.matched_count == 0 {
            return Ok(false);
        }
        if !messages.is_empty() {
            self.relay_outbox(experiment_id).await?;
        }
        Ok(true)
    }
}
