//! [`WebhookStore`] for [`SqliteStore`]: tables `webhook_endpoints`, `webhook_deliveries`,
//! `webhook_attempts` and the fan-out cursor `webhook_fanout` (migrations 0006 and 0016).
//!
//! Every write is one `BEGIN IMMEDIATE` transaction on the writer connection, which
//! serializes writers across threads *and* processes: a claim reads the due deliveries and
//! leases them in one statement of one transaction, so two claimers never get the same
//! delivery. Fan-out inserts a message's deliveries and advances the cursor past it in one
//! transaction (`INSERT OR IGNORE` on `UNIQUE (endpoint_id, message_id)` on top).
//! Polls that find nothing (no new outbox row, nothing due) run on a reader and never take
//! the write lock. What each change does to an endpoint or a delivery is decided by
//! [`verdict_domain::webhook`]; this module makes it atomic.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use verdict_domain::OutboxMessage;

use verdict_domain::webhook::Completion;

use super::{SqliteStore, begin, commit, decode, encode, internal, is_unique_violation};
use crate::Result;
use crate::error::StoreError;
use crate::model::{Page, PageRequest, from_millis, to_millis};
use crate::webhooks::{
    Attempt, AttemptResult, Delivery, DeliveryStatus, DeliveryUpdate, Endpoint, EndpointPatch,
    WebhookStore, experiment_message_range,
};

const DELIVERY_COLUMNS: &str = "seq, endpoint_id, message, status, attempts, next_attempt_at, \
     last_attempt_at, last_status_code, last_error, created_at, updated_at";

const ATTEMPT_COLUMNS: &str = "id, endpoint_id, message_id, attempt, at, status_code, \
     latency_ms, response, error, result, next_attempt_at";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<(Delivery0, String)> {
    Ok((
        Delivery0 {
            seq: r.get::<_, i64>(0)?,
            endpoint_id: r.get(1)?,
            status: r.get(3)?,
            attempts: r.get::<_, i64>(4)?,
            next_attempt_at: r.get(5)?,
            last_attempt_at: r.get(6)?,
            last_status_code: r.get(7)?,
            last_error: r.get(8)?,
            created_at: r.get(9)?,
            updated_at: r.get(10)?,
        },
        r.get(2)?,
    ))
}

/// A delivery row before its message JSON is decoded.
struct Delivery0 {
    seq: i64,
    endpoint_id: String,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

fn to_delivery((d, message): (Delivery0, String)) -> Result<Delivery> {
    Ok(Delivery {
        endpoint_id: d.endpoint_id,
        message: decode(&message, "reading a webhook delivery's message")?,
        seq: d.seq as u64,
        status: DeliveryStatus::parse(&d.status).ok_or_else(|| {
            StoreError::corrupt(format!(
                "reading a webhook delivery: unknown status '{}'",
                d.status
            ))
        })?,
        attempts: d.attempts as u32,
        next_attempt_at: d.next_attempt_at.map(from_millis),
        last_attempt_at: d.last_attempt_at.map(from_millis),
        last_status_code: d.last_status_code.map(|c| c as u16),
        last_error: d.last_error,
        created_at: from_millis(d.created_at),
        updated_at: from_millis(d.updated_at),
    })
}

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<(Attempt, String)> {
    Ok((
        Attempt {
            id: r.get::<_, i64>(0)? as u64,
            endpoint_id: r.get(1)?,
            message_id: r.get(2)?,
            attempt: r.get::<_, i64>(3)? as u32,
            at: from_millis(r.get(4)?),
            status_code: r.get::<_, Option<i64>>(5)?.map(|c| c as u16),
            latency_ms: r.get::<_, i64>(6)? as u64,
            response: r.get(7)?,
            error: r.get(8)?,
            result: AttemptResult::Failed,
            next_attempt_at: r.get::<_, Option<i64>>(10)?.map(from_millis),
        },
        r.get(9)?,
    ))
}

fn to_attempt((mut a, result): (Attempt, String)) -> Result<Attempt> {
    a.result = AttemptResult::parse(&result).ok_or_else(|| {
        StoreError::corrupt(format!(
            "reading a webhook attempt: unknown result '{result}'"
        ))
    })?;
    Ok(a)
}

fn load_endpoint(c: &Connection, id: &str) -> Result<Option<Endpoint>> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM webhook_endpoints WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal("reading a webhook endpoint"))?;
    doc.map(|d| decode(&d, "reading a webhook endpoint"))
        .transpose()
}

/// Read-modify-write one endpoint in one transaction; `None` when it does not exist.
async fn modify_endpoint(
    store: &SqliteStore,
    id: &str,
    change: impl FnOnce(&mut Endpoint) + Send + 'static,
) -> Result<Option<Endpoint>> {
    let id = id.to_owned();
    store
        .write(move |c| {
            let tx = begin(c)?;
            let Some(mut e) = load_endpoint(&tx, &id)? else {
                return Ok(None);
            };
            change(&mut e);
            tx.execute(
                "UPDATE webhook_endpoints SET doc = ?2 WHERE id = ?1",
                params![id, encode(&e)?],
            )
            .map_err(internal("updating a webhook endpoint"))?;
            commit(tx)?;
            Ok(Some(e))
        })
        .await
}

/// An endpoint's deliveries, optionally of one status: the count, then a page newest first.
const ENDPOINT_DELIVERIES_COUNT: &str = "SELECT COUNT(*) FROM webhook_deliveries
     WHERE endpoint_id = ?1 AND (?2 IS NULL OR status = ?2)";

fn endpoint_deliveries_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE endpoint_id = ?1 AND (?2 IS NULL OR status = ?2)
         ORDER BY seq DESC LIMIT ?3 OFFSET ?4"
    )
}

/// A page of the deliveries whose message id is in `[?1, ?2)`, newest first; the count
/// first. Both read `webhook_deliveries_by_message`.
pub(super) const EXPERIMENT_DELIVERIES_COUNT: &str =
    "SELECT COUNT(*) FROM webhook_deliveries WHERE message_id >= ?1 AND message_id < ?2";

pub(super) fn experiment_deliveries_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries INDEXED BY webhook_deliveries_by_message
         WHERE message_id >= ?1 AND message_id < ?2
         ORDER BY seq DESC LIMIT ?3 OFFSET ?4"
    )
}

/// A page of deliveries: `count` counts those its two parameters `args` select, `list` reads
/// a page of them (its `?3` and `?4` are the limit and the offset).
fn delivery_page(
    c: &Connection,
    count: &str,
    list: &str,
    args: [&dyn rusqlite::ToSql; 2],
    page: PageRequest,
) -> Result<Page<Delivery>> {
    let total: i64 = c
        .query_row(count, params![args[0], args[1]], |r| r.get(0))
        .map_err(internal("counting webhook deliveries"))?;
    let items = c
        .prepare_cached(list)
        .and_then(|mut st| {
            st.query_map(
                params![args[0], args[1], page.limit() as i64, page.offset() as i64],
                delivery_row,
            )?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(internal("listing webhook deliveries"))?
        .into_iter()
        .map(to_delivery)
        .collect::<Result<_>>()?;
    Ok(Page {
        items,
        total: total as u64,
    })
}

fn select_delivery(
    c: &Connection,
    endpoint_id: &str,
    message_id: &str,
) -> Result<Option<Delivery>> {
    c.query_row(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE endpoint_id = ?1 AND message_id = ?2"
        ),
        params![endpoint_id, message_id],
        delivery_row,
    )
    .optional()
    .map_err(internal("reading webhook delivery"))?
    .map(to_delivery)
    .transpose()
}

/// Back to pending, due at `now`, a new round of attempts, lease dropped.
const REDELIVER_SET: &str = "status = 'pending', attempts = 0, next_attempt_at = ?1, \
     lease_token = NULL, lease_until = 0, updated_at = ?1";

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let e = endpoint.clone();
        self.write(move |c| {
            let res = c.execute(
                "INSERT INTO webhook_endpoints (id, environment, created_seq, doc)
                 VALUES (?1, ?2, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM webhook_endpoints), ?3)",
                params![e.id, e.environment, encode(&e)?],
            );
            match res {
                Ok(_) => Ok(()),
                Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!(
                    "webhook endpoint '{}' already exists",
                    e.id
                ))),
                Err(err) => Err(internal("inserting webhook endpoint")(err)),
            }
        })
        .await
    }

    async fn get_endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        let id = id.to_owned();
        self.read_point(move |c| load_endpoint(c, &id)).await
    }

    async fn list_endpoints(
        &self,
        environment: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Endpoint>> {
        let env = environment.map(str::to_owned);
        self.read(move |c| {
            let total: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM webhook_endpoints WHERE (?1 IS NULL OR environment = ?1)",
                    params![env],
                    |r| r.get(0),
                )
                .map_err(internal("counting webhook endpoints"))?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT doc FROM webhook_endpoints WHERE (?1 IS NULL OR environment = ?1)
                     ORDER BY created_seq LIMIT ?2 OFFSET ?3",
                )
                .map_err(internal("listing webhook endpoints"))?;
            let items = stmt
                .query_map(
                    params![env, page.limit() as i64, page.offset() as i64],
                    |r| r.get::<_, String>(0),
                )
                .map_err(internal("listing webhook endpoints"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("listing webhook endpoints"))?
                .iter()
                .map(|d| decode(d, "listing webhook endpoints"))
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>> {
        let patch = patch.clone();
        modify_endpoint(self, id, move |e| e.apply(&patch, at)).await
    }

    async fn set_endpoint_disabled(
        &self,
        id: &str,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>> {
        let reason = reason.map(str::to_owned);
        modify_endpoint(self, id, move |e| e.set_disabled(reason.as_deref(), at)).await
    }

    async fn rotate_endpoint_secret(
        &self,
        id: &str,
        secret: &str,
        previous_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>> {
        let secret = secret.to_owned();
        modify_endpoint(self, id, move |e| {
            e.rotate_secret(secret, previous_expires_at, at)
        })
        .await
    }

    async fn record_endpoint_health(
        &self,
        id: &str,
        succeeded: bool,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        let id = id.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let Some(mut e) = load_endpoint(&tx, &id)? else {
                return Ok(None);
            };
            if e.record_health(succeeded, at) {
                tx.execute(
                    "UPDATE webhook_endpoints SET doc = ?2 WHERE id = ?1",
                    params![id, encode(&e)?],
                )
                .map_err(internal("recording a webhook endpoint's health"))?;
                commit(tx)?;
            }
            Ok(e.failing_since)
        })
        .await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let n = tx
                .execute("DELETE FROM webhook_endpoints WHERE id = ?1", [&id])
                .map_err(internal("deleting a webhook endpoint"))?;
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
                [&id],
            )
            .map_err(internal("deleting webhook deliveries"))?;
            tx.execute("DELETE FROM webhook_attempts WHERE endpoint_id = ?1", [&id])
                .map_err(internal("deleting webhook attempts"))?;
            commit(tx)?;
            Ok(n > 0)
        })
        .await
    }

    async fn fan_out_webhooks(&self, now: OffsetDateTime, limit: usize) -> Result<u64> {
        const CURSOR: &str =
            "SELECT COALESCE((SELECT seq FROM webhook_fanout WHERE name = 'outbox'), 0)";
        // Idle polls stay on a reader.
        let waiting: bool = self
            .read(|c| {
                c.query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM outbox WHERE seq > ({CURSOR}))"),
                    [],
                    |r| r.get(0),
                )
                .map_err(internal("checking the webhook fan-out cursor"))
            })
            .await?;
        if !waiting {
            return Ok(0);
        }
        self.write(move |c| {
            let tx = begin(c)?;
            let rows: Vec<(i64, String)> = tx
                .prepare_cached(&format!(
                    "SELECT seq, doc FROM outbox WHERE seq > ({CURSOR}) ORDER BY seq LIMIT ?1"
                ))
                .and_then(|mut st| {
                    st.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(internal("reading the outbox"))?;
            let Some(&(last, _)) = rows.last() else {
                return Ok(0);
            };
            let endpoints: Vec<Endpoint> = tx
                .prepare_cached("SELECT doc FROM webhook_endpoints ORDER BY created_seq")
                .and_then(|mut st| {
                    st.query_map([], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(internal("reading webhook endpoints"))?
                .iter()
                .map(|d| decode(d, "fanning out webhooks (reading endpoints)"))
                .collect::<Result<_>>()?;
            let mut created = 0;
            let ms = to_millis(now);
            for (_, doc) in &rows {
                let message: OutboxMessage =
                    decode(doc, "fanning out webhooks (reading the outbox)")?;
                for e in endpoints.iter().filter(|e| e.wants(&message)) {
                    created += tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO webhook_deliveries
                             (endpoint_id, message_id, message, status, attempts, next_attempt_at,
                              created_at, updated_at)
                             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
                        )
                        .and_then(|mut st| st.execute(params![e.id, message.id, doc, ms]))
                        .map_err(internal("creating webhook deliveries"))?
                        as u64;
                }
            }
            tx.execute(
                "INSERT INTO webhook_fanout (name, seq) VALUES ('outbox', ?1)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                [last],
            )
            .map_err(internal("advancing the webhook fan-out cursor"))?;
            commit(tx)?;
            Ok(created)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        token: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        const DUE: &str = "status = 'pending' AND next_attempt_at <= ?1 AND lease_until <= ?1";
        let (now, until) = (to_millis(now), to_millis(lease_until));
        let due: bool = self
            .read(move |c| {
                c.query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE {DUE})"),
                    [now],
                    |r| r.get(0),
                )
                .map_err(internal("checking for due webhook deliveries"))
            })
            .await?;
        if !due {
            return Ok(Vec::new());
        }
        let token = token.to_owned();
        let mut claimed = self
            .write(move |c| {
                let tx = begin(c)?;
                let rows = tx
                    .prepare_cached(&format!(
                        "UPDATE webhook_deliveries SET lease_token = ?2, lease_until = ?3
                         WHERE seq IN (SELECT seq FROM webhook_deliveries WHERE {DUE}
                                       ORDER BY seq LIMIT ?4)
                         RETURNING {DELIVERY_COLUMNS}"
                    ))
                    .and_then(|mut st| {
                        st.query_map(params![now, token, until, limit as i64], delivery_row)?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(internal("claiming webhook deliveries"))?;
                commit(tx)?;
                rows.into_iter()
                    .map(to_delivery)
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        claimed.sort_by_key(|d| d.seq);
        Ok(claimed)
    }

    async fn complete_deliveries(
        &self,
        token: &str,
        updates: &[DeliveryUpdate],
        at: OffsetDateTime,
    ) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let token = token.to_owned();
        let updates = updates.to_vec();
        self.write(move |c| {
            let tx = begin(c)?;
            let at = to_millis(at);
            for u in &updates {
                if let Some(a) = &u.attempt {
                    tx.prepare_cached(
                        "INSERT INTO webhook_attempts (endpoint_id, message_id, attempt, at,
                         status_code, latency_ms, response, error, result, next_attempt_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            u.endpoint_id,
                            u.message_id,
                            a.attempt,
                            to_millis(a.at),
                            a.status_code,
                            a.latency_ms as i64,
                            a.response,
                            a.error,
                            a.result.as_str(),
                            a.next_attempt_at.map(to_millis),
                        ])
                    })
                    .map_err(internal("logging a webhook attempt"))?;
                }
                let change = match u.next.completion(u.attempt.as_ref().map(Attempt::facts)) {
                    Completion::Release => {
                        tx.prepare_cached(
                            "UPDATE webhook_deliveries SET lease_token = NULL, lease_until = 0
                             WHERE endpoint_id = ?1 AND message_id = ?2 AND lease_token = ?3",
                        )
                        .and_then(|mut st| st.execute(params![u.endpoint_id, u.message_id, token]))
                        .map_err(internal("releasing a webhook delivery"))?;
                        continue;
                    }
                    Completion::Update(change) => change,
                };
                let (last_attempt_at, last_status_code) = change
                    .last_attempt
                    .map_or((None, None), |(at, code)| (Some(to_millis(at)), code));
                tx.prepare_cached(
                    "UPDATE webhook_deliveries SET status = ?4, next_attempt_at = ?5,
                       attempts = attempts + ?6,
                       last_attempt_at = COALESCE(?7, last_attempt_at),
                       last_status_code = CASE WHEN ?7 IS NOT NULL THEN ?8 ELSE last_status_code END,
                       last_error = CASE WHEN ?9 THEN ?10 ELSE last_error END,
                       lease_token = NULL, lease_until = 0, updated_at = ?11
                     WHERE endpoint_id = ?1 AND message_id = ?2 AND lease_token = ?3",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        u.endpoint_id,
                        u.message_id,
                        token,
                        change.status.as_str(),
                        change.next_attempt_at.map(to_millis),
                        change.attempts_added,
                        last_attempt_at,
                        last_status_code,
                        change.last_error.is_some(),
                        change.last_error.flatten(),
                        at,
                    ])
                })
                .map_err(internal("updating a webhook delivery"))?;
            }
            commit(tx)
        })
        .await
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<Delivery>> {
        let id = endpoint_id.to_owned();
        let status = status.map(DeliveryStatus::as_str);
        self.read(move |c| {
            let list = endpoint_deliveries_sql();
            delivery_page(c, ENDPOINT_DELIVERIES_COUNT, &list, [&id, &status], page)
        })
        .await
    }

    async fn list_experiment_deliveries(
        &self,
        experiment_id: &str,
        page: PageRequest,
    ) -> Result<Page<Delivery>> {
        let (low, high) = experiment_message_range(experiment_id);
        self.read(move |c| {
            let list = experiment_deliveries_sql();
            delivery_page(c, EXPERIMENT_DELIVERIES_COUNT, &list, [&low, &high], page)
        })
        .await
    }

    async fn get_delivery(&self, endpoint_id: &str, message_id: &str) -> Result<Option<Delivery>> {
        let (e, m) = (endpoint_id.to_owned(), message_id.to_owned());
        self.read_point(move |c| select_delivery(c, &e, &m)).await
    }

    async fn list_attempts(
        &self,
        endpoint_id: &str,
        message_id: &str,
        page: PageRequest,
    ) -> Result<Page<Attempt>> {
        let (e, m) = (endpoint_id.to_owned(), message_id.to_owned());
        self.read(move |c| {
            let total: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM webhook_attempts WHERE endpoint_id = ?1 AND message_id = ?2",
                    params![e, m],
                    |r| r.get(0),
                )
                .map_err(internal("counting webhook attempts"))?;
            let items = c
                .prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts
                     WHERE endpoint_id = ?1 AND message_id = ?2
                     ORDER BY id DESC LIMIT ?3 OFFSET ?4"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![e, m, page.limit() as i64, page.offset() as i64],
                        attempt_row,
                    )?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(internal("listing webhook attempts"))?
                .into_iter()
                .map(to_attempt)
                .collect::<Result<_>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn redeliver(
        &self,
        endpoint_id: &str,
        message_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Delivery>> {
        let (e, m) = (endpoint_id.to_owned(), message_id.to_owned());
        self.write(move |c| {
            let tx = begin(c)?;
            let n = tx
                .execute(
                    &format!(
                        "UPDATE webhook_deliveries SET {REDELIVER_SET}
                         WHERE endpoint_id = ?2 AND message_id = ?3"
                    ),
                    params![to_millis(now), e, m],
                )
                .map_err(internal("redelivering a webhook message"))?;
            if n == 0 {
                return Ok(None);
            }
            let d = select_delivery(&tx, &e, &m)?;
            commit(tx)?;
            Ok(d)
        })
        .await
    }

    async fn recover_failed(
        &self,
        endpoint_id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64> {
        let e = endpoint_id.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let n = tx
                .execute(
                    &format!(
                        "UPDATE webhook_deliveries SET {REDELIVER_SET}
                         WHERE endpoint_id = ?2 AND status = 'failed' AND created_at >= ?3"
                    ),
                    params![to_millis(now), e, to_millis(since)],
                )
                .map_err(internal("recovering failed webhook messages"))?;
            commit(tx)?;
            Ok(n as u64)
        })
        .await
    }
}
