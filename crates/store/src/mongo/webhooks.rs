//! [`WebhookStore`] for [`MongoStore`], without multi-document transactions.
//!
//! # Collections
//! - `webhook_endpoints`: `_id` = endpoint id, `environment`, `order` (creation order), a
//!   revision `rev`, and the endpoint as JSON (`doc`). Every change is a compare-and-set on
//!   `rev`, retried on a race.
//! - `webhook_deliveries`: `_id` = `{endpoint_id}/{message_id}` (so fanning a message out
//!   twice cannot create a second delivery), `seq` from the `counters` document
//!   `webhook_deliveries` (creation order), state fields, and the lease (`lease_token`,
//!   `lease_until`).
//! - `webhook_attempts`: `_id` from the `counters` document `webhook_attempts`.
//! - `outbox` (written by `experiments.rs`): fan-out marks each message `fanned_out: true` *after*
//!   inserting its deliveries; a crash in between fans it out again, and the `_id`s make
//!   that harmless.
//!
//! # Claiming
//! Three steps, each safe under concurrency: find up to `limit` due candidates; one
//! `update_many` that leases those still free *re-checking the due-and-free filter on each
//! document atomically* (so of two claimers racing for a delivery exactly one matches it);
//! then read back which of the candidates now carry this claim's token and lease.
//!
//! What each change does to an endpoint or a delivery is decided by
//! [`verdict_domain::webhook`]; this module makes it atomic.

use async_trait::async_trait;
use mongodb::IndexModel;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use time::OffsetDateTime;
use verdict_domain::OutboxMessage;

use verdict_domain::webhook::Completion;

use super::{
    MongoStore, bdate, collect, db_err, decode, doc_field, encode, get_bson, get_date, get_i64,
    get_str, get_u64, is_duplicate, opt_date, opt_i64, opt_str,
};
use crate::Result;
use crate::error::StoreError;
use crate::model::{Page, PageRequest};
use crate::webhooks::{
    Attempt, AttemptResult, Delivery, DeliveryStatus, DeliveryUpdate, Endpoint, EndpointPatch,
    WebhookStore, experiment_message_range,
};

const ENDPOINTS: &str = "webhook_endpoints";
const DELIVERIES: &str = "webhook_deliveries";
const ATTEMPTS: &str = "webhook_attempts";

/// The indexes of the webhook collections, created with the store's others.
pub(super) fn indexes() -> Vec<(&'static str, Vec<IndexModel>)> {
    let plain = |keys: Document| IndexModel::builder().keys(keys).build();
    vec![
        (
            ENDPOINTS,
            vec![
                plain(doc! {"environment": 1, "order": 1}),
                plain(doc! {"order": 1}),
            ],
        ),
        (
            DELIVERIES,
            vec![
                plain(doc! {"status": 1, "next_attempt_at": 1, "seq": 1}),
                plain(doc! {"endpoint_id": 1, "status": 1, "seq": -1}),
                plain(doc! {"endpoint_id": 1, "seq": -1}),
                // One experiment's deliveries: a range of message ids.
                plain(doc! {"message_id": 1}),
                IndexModel::builder()
                    .keys(doc! {"lease_token": 1})
                    .options(IndexOptions::builder().sparse(true).build())
                    .build(),
            ],
        ),
        (
            ATTEMPTS,
            vec![plain(doc! {"endpoint_id": 1, "message_id": 1, "_id": -1})],
        ),
        (
            "outbox",
            vec![plain(
                doc! {"fanned_out": 1, "created_at": 1, "version": 1, "pos": 1},
            )],
        ),
    ]
}

pub(super) fn delivery_id(endpoint_id: &str, message_id: &str) -> String {
    format!("{endpoint_id}/{message_id}")
}

/// A status code as stored: an integer that fits a `u16`.
fn status_code(d: &Document, key: &str, what: &str) -> Result<Option<u16>> {
    opt_i64(d, key, what)?
        .map(|c| {
            u16::try_from(c).map_err(|_| {
                StoreError::corrupt(format!(
                    "reading {what}: field `{key}` should be an HTTP status, found {c}"
                ))
            })
        })
        .transpose()
}

fn to_delivery(d: &Document) -> Result<Delivery> {
    const WHAT: &str = "`webhook_deliveries`";
    let status = get_str(d, "status", WHAT)?;
    Ok(Delivery {
        endpoint_id: get_str(d, "endpoint_id", WHAT)?.to_owned(),
        message: decode(
            get_str(d, "message", WHAT)?,
            "reading a webhook delivery's message",
        )?,
        seq: get_u64(d, "seq", WHAT)?,
        status: DeliveryStatus::parse(status).ok_or_else(|| {
            StoreError::corrupt(format!(
                "reading {WHAT}: field `status` holds an unknown status '{status}'"
            ))
        })?,
        attempts: u32::try_from(get_u64(d, "attempts", WHAT)?).unwrap_or(u32::MAX),
        next_attempt_at: opt_date(d, "next_attempt_at", WHAT)?,
        last_attempt_at: opt_date(d, "last_attempt_at", WHAT)?,
        last_status_code: status_code(d, "last_status_code", WHAT)?,
        last_error: opt_str(d, "last_error", WHAT)?.map(str::to_owned),
        created_at: get_date(d, "created_at", WHAT)?,
        updated_at: get_date(d, "updated_at", WHAT)?,
    })
}

fn to_attempt(d: &Document) -> Result<Attempt> {
    const WHAT: &str = "`webhook_attempts`";
    let result = get_str(d, "result", WHAT)?;
    Ok(Attempt {
        id: get_u64(d, "_id", WHAT)?,
        endpoint_id: get_str(d, "endpoint_id", WHAT)?.to_owned(),
        message_id: get_str(d, "message_id", WHAT)?.to_owned(),
        attempt: u32::try_from(get_u64(d, "attempt", WHAT)?).unwrap_or(u32::MAX),
        at: get_date(d, "at", WHAT)?,
        status_code: status_code(d, "status_code", WHAT)?,
        latency_ms: get_u64(d, "latency_ms", WHAT)?,
        response: opt_str(d, "response", WHAT)?.map(str::to_owned),
        error: opt_str(d, "error", WHAT)?.map(str::to_owned),
        result: AttemptResult::parse(result).ok_or_else(|| {
            StoreError::corrupt(format!(
                "reading {WHAT}: field `result` holds an unknown result '{result}'"
            ))
        })?,
        next_attempt_at: opt_date(d, "next_attempt_at", WHAT)?,
    })
}

fn nullable_date(t: Option<OffsetDateTime>) -> Bson {
    t.map_or(Bson::Null, |t| Bson::DateTime(bdate(t)))
}

/// Back to pending, due at `now`, a new round of attempts, lease dropped.
fn redeliver_set(now: OffsetDateTime) -> Document {
    doc! {"$set": {
        "status": "pending", "attempts": 0_i64, "next_attempt_at": bdate(now),
        "lease_token": Bson::Null, "lease_until": DateTime::from_millis(0),
        "updated_at": bdate(now),
    }}
}

/// The update applying one claimed delivery's outcome (see
/// [`WebhookStore::complete_deliveries`]): the fields [`verdict_domain::webhook`] decides,
/// and the lease dropped.
fn delivery_update(u: &DeliveryUpdate, at: OffsetDateTime) -> Document {
    let mut set = doc! {
        "lease_token": Bson::Null,
        "lease_until": DateTime::from_millis(0),
    };
    let mut update = Document::new();
    if let Completion::Update(change) = u.next.completion(u.attempt.as_ref().map(Attempt::facts)) {
        set.insert("status", change.status.as_str());
        set.insert("next_attempt_at", nullable_date(change.next_attempt_at));
        set.insert("updated_at", bdate(at));
        if let Some((attempted_at, code)) = change.last_attempt {
            set.insert("last_attempt_at", bdate(attempted_at));
            set.insert(
                "last_status_code",
                code.map_or(Bson::Null, |c| Bson::Int32(i32::from(c))),
            );
        }
        if let Some(error) = change.last_error {
            set.insert(
                "last_error",
                error.map_or(Bson::Null, |e| Bson::String(e.to_owned())),
            );
        }
        if change.attempts_added > 0 {
            update.insert("$inc", doc! {"attempts": i64::from(change.attempts_added)});
        }
    }
    update.insert("$set", set);
    update
}

impl MongoStore {
    /// Compare-and-set one endpoint on its revision until it applies; `None` when absent.
    /// `change` says whether it changed anything (nothing is written when it did not).
    async fn modify_endpoint(
        &self,
        id: &str,
        change: impl Fn(&mut Endpoint) -> bool,
    ) -> Result<Option<Endpoint>> {
        loop {
            let Some(d) = self
                .coll(ENDPOINTS)
                .find_one(doc! {"_id": id})
                .await
                .map_err(db_err("reading a webhook endpoint"))?
            else {
                return Ok(None);
            };
            let rev = get_i64(&d, "rev", "`webhook_endpoints`")?;
            let mut e: Endpoint =
                doc_field(&d, "`webhook_endpoints`", "reading a webhook endpoint")?;
            if !change(&mut e) {
                return Ok(Some(e));
            }
            let res = self
                .coll(ENDPOINTS)
                .update_one(
                    doc! {"_id": id, "rev": rev},
                    doc! {"$set": {"doc": encode(&e)?, "rev": rev + 1}},
                )
                .await
                .map_err(db_err("updating a webhook endpoint"))?;
            if res.matched_count == 1 {
                return Ok(Some(e));
            }
        }
    }

    /// The deliveries `filter` selects: their count, and a page of them newest first.
    async fn delivery_page(&self, filter: Document, page: PageRequest) -> Result<Page<Delivery>> {
        let c = self.coll(DELIVERIES);
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err("counting webhook deliveries"))?;
        let items = collect(
            c.find(filter)
                .sort(doc! {"seq": -1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err("listing webhook deliveries"))?,
            "listing webhook deliveries",
        )
        .await?
        .iter()
        .map(to_delivery)
        .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }
}

#[async_trait]
impl WebhookStore for MongoStore {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let order = self.next_seq(ENDPOINTS, 1).await?;
        match self
            .coll(ENDPOINTS)
            .insert_one(doc! {
                "_id": &endpoint.id,
                "environment": &endpoint.environment,
                "order": order,
                "rev": 0_i64,
                "doc": encode(endpoint)?,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Err(StoreError::Conflict(format!(
                "webhook endpoint '{}' already exists",
                endpoint.id
            ))),
            Err(e) => Err(db_err("inserting webhook endpoint")(e)),
        }
    }

    async fn get_endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        self.coll(ENDPOINTS)
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_err("reading a webhook endpoint"))?
            .map(|d| doc_field(&d, "`webhook_endpoints`", "reading a webhook endpoint"))
            .transpose()
    }

    async fn list_endpoints(
        &self,
        environment: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Endpoint>> {
        let filter = match environment {
            Some(env) => doc! {"environment": env},
            None => doc! {},
        };
        self.page_of(ENDPOINTS, filter, page, "listing webhook endpoints")
            .await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>> {
        self.modify_endpoint(id, |e| {
            e.apply(patch, at);
            true
        })
        .await
    }

    async fn set_endpoint_disabled(
        &self,
        id: &str,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>> {
        self.modify_endpoint(id, |e| {
            e.set_disabled(reason, at);
            true
        })
        .await
    }

    async fn rotate_endpoint_secret(
        &self,
        id: &str,
        secret: &str,
        previous_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>> {
        self.modify_endpoint(id, |e| {
            e.rotate_secret(secret.to_owned(), previous_expires_at, at);
            true
        })
        .await
    }

    async fn record_endpoint_health(
        &self,
        id: &str,
        succeeded: bool,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        // Written only when `failing_since` changes (the first failure, the first
        // success after failures), so a streak of failures costs one read per round.
        Ok(self
            .modify_endpoint(id, |e| e.record_health(succeeded, at))
            .await?
            .and_then(|e| e.failing_since))
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool> {
        let res = self
            .coll(ENDPOINTS)
            .delete_one(doc! {"_id": id})
            .await
            .map_err(db_err("deleting a webhook endpoint"))?;
        self.coll(DELIVERIES)
            .delete_many(doc! {"endpoint_id": id})
            .await
            .map_err(db_err("deleting webhook deliveries"))?;
        self.coll(ATTEMPTS)
            .delete_many(doc! {"endpoint_id": id})
            .await
            .map_err(db_err("deleting webhook attempts"))?;
        Ok(res.deleted_count > 0)
    }

    async fn fan_out_webhooks(&self, now: OffsetDateTime, limit: usize) -> Result<u64> {
        // Messages a crash left in their experiment's document first.
        self.relay_all_outbox().await?;
        let pending = collect(
            self.coll("outbox")
                .find(doc! {"fanned_out": Bson::Null})
                .sort(doc! {"created_at": 1, "version": 1, "pos": 1})
                .limit(limit as i64)
                .await
                .map_err(db_err("reading the outbox"))?,
            "reading the outbox",
        )
        .await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let endpoints: Vec<Endpoint> = collect(
            self.coll(ENDPOINTS)
                .find(doc! {})
                .sort(doc! {"order": 1})
                .await
                .map_err(db_err("reading webhook endpoints"))?,
            "reading webhook endpoints",
        )
        .await?
        .iter()
        .map(|d| {
            doc_field(
                d,
                "`webhook_endpoints`",
                "fanning out webhooks (reading endpoints)",
            )
        })
        .collect::<Result<_>>()?;
        let mut wanted = Vec::new();
        let mut ids = Vec::new();
        for d in &pending {
            let json = get_str(d, "doc", "`outbox`")?;
            let message: OutboxMessage = decode(json, "fanning out webhooks (reading the outbox)")?;
            for e in endpoints.iter().filter(|e| e.wants(&message)) {
                wanted.push((e.id.clone(), message.id.clone(), json.to_owned()));
            }
            ids.push(Bson::String(message.id));
        }
        let mut created = 0;
        if !wanted.is_empty() {
            let last = self.next_seq(DELIVERIES, wanted.len() as i64).await?;
            let first = last - wanted.len() as i64 + 1;
            let docs: Vec<Document> = wanted
                .into_iter()
                .enumerate()
                .map(|(i, (endpoint_id, message_id, message))| {
                    doc! {
                        "_id": delivery_id(&endpoint_id, &message_id),
                        "seq": first + i as i64,
                        "endpoint_id": endpoint_id,
                        "message_id": message_id,
                        "message": message,
                        "status": "pending",
                        "attempts": 0_i64,
                        "next_attempt_at": bdate(now),
                        "lease_token": Bson::Null,
                        "lease_until": DateTime::from_millis(0),
                        "created_at": bdate(now),
                        "updated_at": bdate(now),
                    }
                })
                .collect();
            let n = docs.len() as u64;
            created = match self.coll(DELIVERIES).insert_many(docs).ordered(false).await {
                Ok(r) => r.inserted_ids.len() as u64,
                Err(err) if is_duplicate(&err) => match err.kind.as_ref() {
                    mongodb::error::ErrorKind::InsertMany(im) => {
                        n - im.write_errors.as_ref().map_or(0, |w| w.len() as u64)
                    }
                    _ => 0,
                },
                Err(err) => return Err(db_err("creating webhook deliveries")(err)),
            };
        }
        self.coll("outbox")
            .update_many(
                doc! {"_id": {"$in": ids}},
                doc! {"$set": {"fanned_out": true}},
            )
            .await
            .map_err(db_err("marking outbox messages fanned out"))?;
        Ok(created)
    }

    async fn claim_deliveries(
        &self,
        token: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let due = doc! {
            "status": "pending",
            "next_attempt_at": {"$lte": bdate(now)},
            "lease_until": {"$lte": bdate(now)},
        };
        let c = self.coll(DELIVERIES);
        let candidates: Vec<Bson> = collect(
            c.find(due.clone())
                .sort(doc! {"seq": 1})
                .limit(limit as i64)
                .projection(doc! {"_id": 1})
                .await
                .map_err(db_err("finding due webhook deliveries"))?,
            "finding due webhook deliveries",
        )
        .await?
        .iter()
        .map(|d| get_bson(d, "_id", "`webhook_deliveries`").cloned())
        .collect::<Result<_>>()?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut filter = due;
        filter.insert("_id", doc! {"$in": candidates.clone()});
        c.update_many(
            filter,
            doc! {"$set": {"lease_token": token, "lease_until": bdate(lease_until)}},
        )
        .await
        .map_err(db_err("claiming webhook deliveries"))?;
        // Of the candidates, those this claim leased (a token may be reused across claims).
        collect(
            c.find(doc! {
                "_id": {"$in": candidates},
                "lease_token": token,
                "lease_until": bdate(lease_until),
            })
            .sort(doc! {"seq": 1})
            .await
            .map_err(db_err("reading claimed webhook deliveries"))?,
            "reading claimed webhook deliveries",
        )
        .await?
        .iter()
        .map(to_delivery)
        .collect()
    }

    async fn complete_deliveries(
        &self,
        token: &str,
        updates: &[DeliveryUpdate],
        at: OffsetDateTime,
    ) -> Result<()> {
        let attempts = updates.iter().filter(|u| u.attempt.is_some()).count() as i64;
        if attempts > 0 {
            let mut id = self.next_seq(ATTEMPTS, attempts).await? - attempts + 1;
            let docs: Vec<Document> = updates
                .iter()
                .filter_map(|u| u.attempt.as_ref().map(|a| (u, a)))
                .map(|(u, a)| {
                    let d = doc! {
                        "_id": id,
                        "endpoint_id": &u.endpoint_id,
                        "message_id": &u.message_id,
                        "attempt": i64::from(a.attempt),
                        "at": bdate(a.at),
                        "status_code": a.status_code.map_or(Bson::Null, |c| Bson::Int32(i32::from(c))),
                        "latency_ms": a.latency_ms as i64,
                        "response": a.response.clone().map_or(Bson::Null, Bson::String),
                        "error": a.error.clone().map_or(Bson::Null, Bson::String),
                        "result": a.result.as_str(),
                        "next_attempt_at": nullable_date(a.next_attempt_at),
                    };
                    id += 1;
                    d
                })
                .collect();
            self.coll(ATTEMPTS)
                .insert_many(docs)
                .await
                .map_err(db_err("logging webhook attempts"))?;
        }
        // Updates that are alike (typically: delivered, 200, at the same time) go in one
        // `update_many`, so a round costs a few round trips rather than one per delivery.
        let mut groups: Vec<(Document, Vec<Bson>)> = Vec::new();
        for u in updates {
            let update = delivery_update(u, at);
            let id = Bson::String(delivery_id(&u.endpoint_id, &u.message_id));
            match groups.iter_mut().find(|(d, _)| *d == update) {
                Some((_, ids)) => ids.push(id),
                None => groups.push((update, vec![id])),
            }
        }
        for (update, ids) in groups {
            self.coll(DELIVERIES)
                .update_many(doc! {"_id": {"$in": ids}, "lease_token": token}, update)
                .await
                .map_err(db_err("updating webhook deliveries"))?;
        }
        Ok(())
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<Delivery>> {
        let mut filter = doc! {"endpoint_id": endpoint_id};
        if let Some(s) = status {
            filter.insert("status", s.as_str());
        }
        self.delivery_page(filter, page).await
    }

    async fn list_experiment_deliveries(
        &self,
        experiment_id: &str,
        page: PageRequest,
    ) -> Result<Page<Delivery>> {
        let (low, high) = experiment_message_range(experiment_id);
        let filter = doc! {"message_id": {"$gte": low, "$lt": high}};
        self.delivery_page(filter, page).await
    }

    async fn get_delivery(&self, endpoint_id: &str, message_id: &str) -> Result<Option<Delivery>> {
        self.coll(DELIVERIES)
            .find_one(doc! {"_id": delivery_id(endpoint_id, message_id)})
            .await
            .map_err(db_err("reading webhook delivery"))?
            .map(|d| to_delivery(&d))
            .transpose()
    }

    async fn list_attempts(
        &self,
        endpoint_id: &str,
        message_id: &str,
        page: PageRequest,
    ) -> Result<Page<Attempt>> {
        let filter = doc! {"endpoint_id": endpoint_id, "message_id": message_id};
        let c = self.coll(ATTEMPTS);
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err("counting webhook attempts"))?;
        let items = collect(
            c.find(filter)
                .sort(doc! {"_id": -1})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err("listing webhook attempts"))?,
            "listing webhook attempts",
        )
        .await?
        .iter()
        .map(to_attempt)
        .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    async fn redeliver(
        &self,
        endpoint_id: &str,
        message_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Delivery>> {
        let res = self
            .coll(DELIVERIES)
            .update_one(
                doc! {"_id": delivery_id(endpoint_id, message_id)},
                redeliver_set(now),
            )
            .await
            .map_err(db_err("redelivering a webhook message"))?;
        if res.matched_count == 0 {
            return Ok(None);
        }
        self.get_delivery(endpoint_id, message_id).await
    }

    async fn recover_failed(
        &self,
        endpoint_id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64> {
        let res = self
            .coll(DELIVERIES)
            .update_many(
                doc! {
                    "endpoint_id": endpoint_id,
                    "status": "failed",
                    "created_at": {"$gte": bdate(since)},
                },
                redeliver_set(now),
            )
            .await
            .map_err(db_err("recovering failed webhook messages"))?;
        Ok(res.modified_count)
    }
}
