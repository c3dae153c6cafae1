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
//! - `outbox` (written by `mongo.rs`): fan-out marks each message `fanned_out: true` *after*
//!   inserting its deliveries; a crash in between fans it out again, and the `_id`s make
//!   that harmless.
//!
//! # Claiming
//! Three steps, each safe under concurrency: find up to `limit` due candidates; one
//! `update_many` that leases those still free *re-checking the due-and-free filter on each
//! document atomically* (so of two claimers racing for a delivery exactly one matches it);
//! then read back which of the candidates now carry this claim's token and lease.

use async_trait::async_trait;
use mongodb::IndexModel;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use time::OffsetDateTime;
use verdict_domain::OutboxMessage;

use super::{
    MongoStore, bdate, collect, db_err, decode, doc_field, encode, from_bdate, get_i64, get_str,
    is_duplicate,
};
use crate::Result;
use crate::error::StoreError;
use crate::model::{Page, PageRequest};
use crate::webhooks::{
    Attempt, AttemptResult, Delivery, DeliveryNext, DeliveryStatus, DeliveryUpdate, Endpoint,
    EndpointPatch, WebhookStore,
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

pub(crate) fn delivery_id(endpoint_id: &str, message_id: &str) -> String {
    format!("{endpoint_id}/{message_id}")
}

fn opt_date(d: &Document, key: &str) -> Option<OffsetDateTime> {
    d.get_datetime(key).ok().map(|t| from_bdate(*t))
}

fn opt_str(d: &Document, key: &str) -> Option<String> {
    d.get_str(key).ok().map(str::to_owned)
}

fn to_delivery(d: &Document) -> Result<Delivery> {
    const WHAT: &str = "stored webhook delivery";
    let status = get_str(d, "status", WHAT)?;
    Ok(Delivery {
        endpoint_id: get_str(d, "endpoint_id", WHAT)?.to_owned(),
        message: decode(get_str(d, "message", WHAT)?, WHAT)?,
        seq: get_i64(d, "seq") as u64,
        status: DeliveryStatus::parse(status)
            .ok_or_else(|| StoreError::corrupt(format!("delivery status '{status}'")))?,
        attempts: get_i64(d, "attempts") as u32,
        next_attempt_at: opt_date(d, "next_attempt_at"),
        last_attempt_at: opt_date(d, "last_attempt_at"),
        last_status_code: match d.get("last_status_code") {
            Some(Bson::Int32(_) | Bson::Int64(_)) => Some(get_i64(d, "last_status_code") as u16),
            _ => None,
        },
        last_error: opt_str(d, "last_error"),
        created_at: opt_date(d, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
        updated_at: opt_date(d, "updated_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

fn to_attempt(d: &Document) -> Result<Attempt> {
    const WHAT: &str = "stored webhook attempt";
    let result = get_str(d, "result", WHAT)?;
    Ok(Attempt {
        id: get_i64(d, "_id") as u64,
        endpoint_id: get_str(d, "endpoint_id", WHAT)?.to_owned(),
        message_id: get_str(d, "message_id", WHAT)?.to_owned(),
        attempt: get_i64(d, "attempt") as u32,
        at: opt_date(d, "at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
        status_code: match d.get("status_code") {
            Some(Bson::Int32(_) | Bson::Int64(_)) => Some(get_i64(d, "status_code") as u16),
            _ => None,
        },
        latency_ms: get_i64(d, "latency_ms") as u64,
        response: opt_str(d, "response"),
        error: opt_str(d, "error"),
        result: AttemptResult::parse(result)
            .ok_or_else(|| StoreError::corrupt(format!("attempt result '{result}'")))?,
        next_attempt_at: opt_date(d, "next_attempt_at"),
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
/// [`WebhookStore::complete_deliveries`]).
fn delivery_update(u: &DeliveryUpdate, at: OffsetDateTime) -> Document {
    let mut set = doc! {
        "lease_token": Bson::Null,
        "lease_until": DateTime::from_millis(0),
    };
    let mut update = Document::new();
    let reason = match &u.next {
        DeliveryNext::Release => None,
        DeliveryNext::RetryAt(t) => {
            set.insert("status", "pending");
            set.insert("next_attempt_at", bdate(*t));
            None
        }
        DeliveryNext::Delivered => {
            set.insert("status", "delivered");
            set.insert("next_attempt_at", Bson::Null);
            None
        }
        DeliveryNext::Failed { reason } => {
            set.insert("status", "failed");
            set.insert("next_attempt_at", Bson::Null);
            Some(reason.clone())
        }
    };
    if !matches!(u.next, DeliveryNext::Release) {
        set.insert("updated_at", bdate(at));
        if let Some(a) = &u.attempt {
            set.insert("last_attempt_at", bdate(a.at));
            set.insert(
                "last_status_code",
                a.status_code
                    .map_or(Bson::Null, |c| Bson::Int32(i32::from(c))),
            );
            set.insert(
                "last_error",
                a.error.clone().or(reason).map_or(Bson::Null, Bson::String),
            );
            update.insert("$inc", doc! {"attempts": 1_i64});
        } else if let Some(reason) = reason {
            set.insert("last_error", reason);
        }
    }
    update.insert("$set", set);
    update
}

impl MongoStore {
    /// Compare-and-set one endpoint on its revision until it applies; `None` when absent.
    async fn modify_endpoint(
        &self,
        id: &str,
        change: impl Fn(&mut Endpoint),
    ) -> Result<Option<Endpoint>> {
        loop {
            let Some(d) = self
                .coll(ENDPOINTS)
                .find_one(doc! {"_id": id})
                .await
                .map_err(db_err("reading webhook endpoint"))?
            else {
                return Ok(None);
            };
            let rev = get_i64(&d, "rev");
            let mut e: Endpoint = doc_field(&d, "stored webhook endpoint")?;
            change(&mut e);
            let res = self
                .coll(ENDPOINTS)
                .update_one(
                    doc! {"_id": id, "rev": rev},
                    doc! {"$set": {"doc": encode(&e)?, "rev": rev + 1}},
                )
                .await
                .map_err(db_err("updating webhook endpoint"))?;
            if res.matched_count == 1 {
                return Ok(Some(e));
            }
        }
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
            .map_err(db_err("reading webhook endpoint"))?
            .map(|d| doc_field(&d, "stored webhook endpoint"))
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
            if let Some(url) = &patch.url {
                e.url = url.clone();
            }
            if let Some(description) = &patch.description {
                e.description = description.clone();
            }
            if let Some(types) = &patch.event_types {
                e.event_types = types.clone();
            }
            e.updated_at = at;
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
            e.disabled = reason.is_some();
            e.disabled_at = reason.is_some().then_some(at);
            e.disabled_reason = reason.map(str::to_owned);
            e.failing_since = None;
            e.updated_at = at;
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
            e.previous_secret = Some(std::mem::replace(&mut e.secret, secret.to_owned()));
            e.previous_secret_expires_at = Some(previous_expires_at);
            e.updated_at = at;
        })
        .await
    }

    async fn record_endpoint_health(
        &self,
        id: &str,
        succeeded: bool,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        let Some(current) = self.get_endpoint(id).await? else {
            return Ok(None);
        };
        let wanted = if succeeded {
            None
        } else {
            current.failing_since.or(Some(at))
        };
        if wanted == current.failing_since {
            return Ok(wanted);
        }
        Ok(self
            .modify_endpoint(id, |e| {
                e.failing_since = if succeeded {
                    None
                } else {
                    e.failing_since.or(Some(at))
                };
            })
            .await?
            .and_then(|e| e.failing_since))
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool> {
        let res = self
            .coll(ENDPOINTS)
            .delete_one(doc! {"_id": id})
            .await
            .map_err(db_err("deleting webhook endpoint"))?;
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
        .map(|d| doc_field(d, "stored webhook endpoint"))
        .collect::<Result<_>>()?;
        let mut wanted = Vec::new();
        let mut ids = Vec::new();
        for d in &pending {
            let json = get_str(d, "doc", "stored outbox message")?;
            let message: OutboxMessage = decode(json, "stored outbox message")?;
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
        .into_iter()
        .filter_map(|d| d.get("_id").cloned())
        .collect();
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
