//! [`JobStore`] on MongoDB: a lease is one document per job in `leases`, granted with one
//! `find_one_and_update` + upsert whose filter only matches an expired lease (and, for a
//! scheduled tick, one not granted for that tick); when the filter does not match, the
//! upsert's insert collides with the existing `_id` (E11000) or finds nothing: both mean
//! "not granted" (TESTING.md).
//!
//! Fenced deletes (retention): on a deployment with transactions (a replica set or a
//! sharded cluster) the delete runs in one transaction with a write to the lease document filtered on the run's token:
//! a newer grant either happened before (the filter matches nothing: refused, nothing
//! deleted) or conflicts with the transaction (retried, then refused), so the check and the
//! delete are one atomic write, as on SQLite. A standalone server has no transactions; there
//! a look at the lease precedes the delete, and what makes that safe is that the deletes are
//! idempotent (old, already aggregated data): a race with a newer holder can only remove
//! what the newer holder would remove too. The rollup's own fencing is atomic everywhere
//! (`rollups.rs`).

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;

use time::OffsetDateTime;

use super::publications;
use super::webhooks::delivery_id;
use super::{
    MongoStore, bdate, collect, db_err, doc_field, encode, get_bson, get_date, get_str, get_u64,
    is_duplicate,
};
use crate::jobs::{Fence, JobStore, Lease, LeaseGrant, RetentionFilter, RunRecord};
use crate::model::Purge;
use crate::model::{Page, PageRequest};
use crate::publications::PublicationStore;
use crate::rollup::RollupStore;
use crate::{Result, StoreError};

const LEASES: &str = "`leases`";

fn lease_of(d: &Document) -> Result<Lease> {
    Ok(Lease {
        job: get_str(d, "_id", LEASES)?.to_owned(),
        owner: get_str(d, "owner", LEASES)?.to_owned(),
        token: get_u64(d, "token", LEASES)?,
        expires_at: get_date(d, "expires_at", LEASES)?,
    })
}

fn scope_filter(filter: &RetentionFilter) -> Document {
    match &filter.only {
        Some(id) => doc! {"experiment_id": id},
        None if filter.except.is_empty() => doc! {},
        None => doc! {"experiment_id": {"$nin": &filter.except}},
    }
}

impl MongoStore {
    pub(super) async fn check_fence(&self, fence: Option<&Fence>) -> Result<()> {
        let Some(fence) = fence else { return Ok(()) };
        let current = self
            .coll("leases")
            .find_one(doc! {"_id": &fence.job})
            .await
            .map_err(db_err("checking a fencing token"))?;
        let token = current.map(|d| get_u64(&d, "token", LEASES)).transpose()?;
        if token == Some(fence.token) {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                job: fence.job.clone(),
                token: fence.token,
            })
        }
    }

    /// Where the deployment has no transactions, [`MongoStore::check_fence`] before a fenced
    /// delete (the only check there); with transactions the delete's own transaction checks.
    async fn check_fence_before_delete(&self, fence: Option<&Fence>) -> Result<()> {
        if self.transactions {
            Ok(())
        } else {
            self.check_fence(fence).await
        }
    }

    /// Delete the documents of `coll` whose `_id` is in `ids`, under `fence`: in one
    /// transaction with a token-filtered write to the lease where the deployment has
    /// transactions (see the module docs).
    async fn fenced_delete_ids(
        &self,
        coll: &str,
        ids: Vec<Bson>,
        fence: Option<&Fence>,
        what: &'static str,
    ) -> Result<u64> {
        let filter = doc! {"_id": {"$in": ids}};
        let Some(fence) = fence.filter(|_| self.transactions) else {
            let r = self
                .coll(coll)
                .delete_many(filter)
                .await
                .map_err(db_err(what))?;
            return Ok(r.deleted_count);
        };
        let token = i64::try_from(fence.token).unwrap_or(i64::MAX);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .fenced_delete_in_transaction(coll, filter.clone(), &fence.job, token)
                .await
            {
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {
                    return Err(StoreError::Fenced {
                        job: fence.job.clone(),
                        token: fence.token,
                    });
                }
                // A lease grant raced the transaction: look again (the next try is refused
                // if the grant moved the token).
                Err(e)
                    if attempt < 3
                        && e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) => {}
                Err(e) => return Err(db_err(what)(e)),
            }
        }
    }

    /// One try of [`MongoStore::fenced_delete_ids`]'s transaction: `None` when the lease no
    /// longer carries `token` (nothing deleted).
    async fn fenced_delete_in_transaction(
        &self,
        coll: &str,
        filter: Document,
        job: &str,
        token: i64,
    ) -> mongodb::error::Result<Option<u64>> {
        let mut session = self.db.client().start_session().await?;
        session.start_transaction().await?;
        let held = self
            .coll("leases")
            .update_one(
                doc! {"_id": job, "token": token},
                doc! {"$set": {"fenced_write_at": mongodb::bson::DateTime::now()}},
            )
            .session(&mut session)
            .await?;
        if held.matched_count == 0 {
            session.abort_transaction().await?;
            return Ok(None);
        }
        let deleted = self
            .coll(coll)
            .delete_many(filter)
            .session(&mut session)
            .await?;
        session.commit_transaction().await?;
        Ok(Some(deleted.deleted_count))
    }

    /// Delete up to `limit` documents of `coll` matching `filter`, taken in `sort` order,
    /// under `fence`.
    async fn bounded_delete(
        &self,
        coll: &str,
        filter: Document,
        sort: Document,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        let what = format!("`{coll}`");
        let ids = collect(
            self.coll(coll)
                .find(filter)
                .sort(sort)
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .projection(doc! {"_id": 1})
                .await
                .map_err(db_err("finding expired data"))?,
            "finding expired data",
        )
        .await?
        .iter()
        .map(|d| get_bson(d, "_id", &what).cloned())
        .collect::<Result<Vec<Bson>>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.fenced_delete_ids(coll, ids, fence, "deleting expired data")
            .await
    }
}

#[async_trait]
impl JobStore for MongoStore {
    async fn acquire_lease(
        &self,
        job: &str,
        owner: &str,
        ttl: Duration,
        now: OffsetDateTime,
        tick: Option<OffsetDateTime>,
    ) -> Result<LeaseGrant> {
        let expires_at = now + ttl;
        let mut filter = doc! {"_id": job, "expires_at": {"$lte": bdate(now)}};
        let mut set = doc! {"owner": owner, "expires_at": bdate(expires_at)};
        if let Some(t) = tick {
            filter.insert(
                "$or",
                vec![
                    doc! {"last_tick": {"$lt": bdate(t)}},
                    doc! {"last_tick": Bson::Null},
                ],
            );
            set.insert("last_tick", bdate(t));
        }
        let granted = self
            .coll("leases")
            .find_one_and_update(filter, doc! {"$set": set, "$inc": {"token": 1_i64}})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match granted {
            Ok(Some(d)) => return Ok(LeaseGrant::Acquired(lease_of(&d)?)),
            Ok(None) => {}
            Err(e) if is_duplicate(&e) => {}
            Err(e) => return Err(db_err("granting a lease")(e)),
        }
        // Not granted: tell the caller why.
        let Some(d) = self
            .coll("leases")
            .find_one(doc! {"_id": job})
            .await
            .map_err(db_err("reading a lease"))?
        else {
            return Err(StoreError::Unavailable {
                context: format!("granting the lease of job {job}, which vanished meanwhile"),
                source: None,
            });
        };
        let lease = lease_of(&d)?;
        if lease.expires_at > now {
            Ok(LeaseGrant::Held {
                owner: lease.owner,
                expires_at: lease.expires_at,
            })
        } else {
            Ok(LeaseGrant::AlreadyRan)
        }
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>> {
        let expires_at = crate::model::truncate_to_millis(now + ttl);
        let r = self
            .coll("leases")
            .update_one(
                doc! {"_id": &lease.job, "owner": &lease.owner, "token": lease.token as i64},
                doc! {"$set": {"expires_at": bdate(expires_at)}},
            )
            .await
            .map_err(db_err("renewing a lease"))?;
        Ok((r.matched_count == 1).then(|| Lease {
            expires_at,
            ..lease.clone()
        }))
    }

    async fn release_lease(&self, lease: &Lease, now: OffsetDateTime) -> Result<()> {
        self.coll("leases")
            .update_one(
                doc! {"_id": &lease.job, "owner": &lease.owner, "token": lease.token as i64,
                "expires_at": {"$gt": bdate(now)}},
                doc! {"$set": {"expires_at": bdate(now)}},
            )
            .await
            .map_err(db_err("releasing a lease"))?;
        Ok(())
    }

    async fn get_lease(&self, job: &str) -> Result<Option<Lease>> {
        self.coll("leases")
            .find_one(doc! {"_id": job})
            .await
            .map_err(db_err("reading a lease"))?
            .map(|d| lease_of(&d))
            .transpose()
    }

    async fn put_run(&self, run: &RunRecord) -> Result<()> {
        let finished = run
            .finished_at
            .map_or(Bson::Null, |t| Bson::DateTime(bdate(t)));
        self.coll("job_runs")
            .replace_one(
                doc! {"_id": &run.id},
                doc! {"_id": &run.id, "job": &run.job, "started_at": bdate(run.started_at),
                "finished_at": finished, "doc": encode(run)?},
            )
            .upsert(true)
            .await
            .map_err(db_err("writing a run record"))?;
        Ok(())
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.coll("job_runs")
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_err("reading a run record"))?
            .map(|d| doc_field(&d, "`job_runs`", "reading a run record"))
            .transpose()
    }

    async fn list_runs(&self, job: Option<&str>, page: PageRequest) -> Result<Page<RunRecord>> {
        let filter = job.map_or_else(|| doc! {}, |j| doc! {"job": j});
        let c = self.coll("job_runs");
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err("counting run records"))?;
        let docs = collect(
            c.find(filter)
                .sort(doc! {"started_at": -1, "_id": -1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err("listing run records"))?,
            "listing run records",
        )
        .await?;
        Ok(Page {
            items: docs
                .iter()
                .map(|d| doc_field(d, "`job_runs`", "listing run records"))
                .collect::<Result<_>>()?,
            total,
        })
    }

    async fn delete_events(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        let watermark = self.rollup_watermark().await?;
        let mut f = scope_filter(filter);
        f.insert("_id", doc! {"$lte": watermark as i64});
        f.insert("received_at", doc! {"$lt": bdate(filter.before)});
        // Oldest first through the `received_at` index: a run that finds nothing old
        // enough reads nothing, whatever the size of the collection.
        self.bounded_delete("events", f, doc! {"received_at": 1, "_id": 1}, limit, fence)
            .await
    }

    async fn delete_buckets(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        let mut f = scope_filter(filter);
        f.insert("start", doc! {"$lt": bdate(filter.before)});
        self.bounded_delete("buckets", f, doc! {"start": 1}, limit, fence)
            .await
    }

    async fn delete_evaluation_history(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        let mut f = scope_filter(filter);
        f.insert("at", doc! {"$lt": bdate(filter.before)});
        // Oldest first through the `at` index.
        self.bounded_delete("evaluation_history", f, doc! {"at": 1}, limit, fence)
            .await
    }

    async fn delete_webhook_attempts(
        &self,
        before: OffsetDateTime,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        // The oldest `limit` entries before the cutoff, less those of pending deliveries.
        let candidates = collect(
            self.coll("webhook_attempts")
                .find(doc! {"at": {"$lt": bdate(before)}})
                .sort(doc! {"_id": 1})
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .projection(doc! {"_id": 1, "endpoint_id": 1, "message_id": 1})
                .await
                .map_err(db_err("finding old webhook attempts"))?,
            "finding old webhook attempts",
        )
        .await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        const ATTEMPTS: &str = "`webhook_attempts`";
        let delivery = |d: &Document| -> Result<String> {
            Ok(delivery_id(
                get_str(d, "endpoint_id", ATTEMPTS)?,
                get_str(d, "message_id", ATTEMPTS)?,
            ))
        };
        let ids = candidates
            .iter()
            .map(delivery)
            .collect::<Result<std::collections::BTreeSet<_>>>()?;
        let pending: std::collections::HashSet<String> = collect(
            self.coll("webhook_deliveries")
                .find(
                    doc! {"_id": {"$in": ids.into_iter().collect::<Vec<_>>()}, "status": "pending"},
                )
                .projection(doc! {"_id": 1})
                .await
                .map_err(db_err("reading webhook deliveries"))?,
            "reading webhook deliveries",
        )
        .await?
        .iter()
        .map(|d| get_str(d, "_id", "`webhook_deliveries`").map(str::to_owned))
        .collect::<Result<_>>()?;
        let mut doomed = Vec::new();
        for d in &candidates {
            if !pending.contains(&delivery(d)?) {
                doomed.push(get_bson(d, "_id", ATTEMPTS)?.clone());
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        self.fenced_delete_ids(
            "webhook_attempts",
            doomed,
            fence,
            "deleting old webhook attempts",
        )
        .await
    }

    async fn pending_purges(&self) -> Result<Vec<Purge>> {
        const WHAT: &str = "`deleted_experiments`";
        let docs = collect(
            self.coll("deleted_experiments")
                .find(doc! {})
                .sort(doc! {"deleted_at": 1, "_id": 1})
                .await
                .map_err(db_err("listing deleted experiments"))?,
            "listing deleted experiments",
        )
        .await?;
        docs.iter()
            .map(|d| {
                Ok(Purge {
                    experiment_id: get_str(d, "_id", WHAT)?.to_owned(),
                    deleted_at: get_date(d, "deleted_at", WHAT)?,
                })
            })
            .collect()
    }

    async fn purge_experiment_data(
        &self,
        experiment_id: &str,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        let exists = self
            .coll("experiments")
            .find_one(doc! {"_id": experiment_id})
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_err("reading an experiment"))?
            .is_some();
        if exists {
            return Ok(0);
        }
        // Raw events first (nothing is rolled up from them meanwhile), then what was rolled
        // up or decided from them.
        let mut deleted = 0;
        for (coll, field) in [
            ("events", "experiment_id"),
            ("buckets", "experiment_id"),
            ("subject_metrics", "experiment_id"),
            ("subject_segments", "experiment_id"),
            ("assignments", "experiment_id"),
            ("forced_variants", "experiment_id"),
            ("evaluation_state", "_id"),
            ("evaluation_history", "experiment_id"),
        ] {
            let left = limit.saturating_sub(deleted as usize);
            if left == 0 {
                break;
            }
            deleted += self
                .bounded_delete(
                    coll,
                    doc! {field: experiment_id},
                    doc! {"_id": 1},
                    left,
                    fence,
                )
                .await?;
        }
        Ok(deleted)
    }

    async fn finish_purge(&self, experiment_id: &str, fence: Option<&Fence>) -> Result<()> {
        self.check_fence(fence).await?;
        self.coll("deleted_experiments")
            .delete_one(doc! {"_id": experiment_id})
            .await
            .map_err(db_err("forgetting a finished purge"))?;
        Ok(())
    }

    async fn delete_runs(
        &self,
        before: OffsetDateTime,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        self.bounded_delete(
            "job_runs",
            doc! {"finished_at": {"$lt": bdate(before)}},
            doc! {"finished_at": 1},
            limit,
            fence,
        )
        .await
    }

    async fn delete_old_publications(
        &self,
        keep: u64,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64> {
        self.check_fence_before_delete(fence).await?;
        let limit = limit as u64;
        let mut deleted = 0;
        for scope in self.publication_scopes(None).await? {
            if deleted >= limit {
                break;
            }
            let Some(newest) = self.latest_publication(&scope).await? else {
                continue;
            };
            let last_old = newest.version.saturating_sub(keep.max(1));
            if last_old == 0 {
                continue;
            }
            let mut old = publications::scope_filter(&scope);
            old.insert(
                "version",
                doc! {"$lte": i64::try_from(last_old).unwrap_or(i64::MAX)},
            );
            let left = usize::try_from(limit - deleted).unwrap_or(usize::MAX);
            deleted += self
                .bounded_delete("publications", old, doc! {"version": 1}, left, fence)
                .await?;
        }
        Ok(deleted)
    }
}
