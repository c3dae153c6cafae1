//! The dispatcher: delivers the store's outbox to webhook endpoints (IO: store, HTTP, DNS,
//! randomness). The rules it applies are the pure modules' ([`crate::signing`],
//! [`crate::retry`], [`crate::ssrf`]).
//!
//! One round, [`Dispatcher::run_once`]`(now)`:
//! 1. **Fan out**: outbox messages not yet fanned out become one pending delivery per
//!    subscribed endpoint ([`WebhookStore::fan_out_webhooks`]).
//! 2. **Claim**: up to `batch_size` deliveries due at `now`, oldest first, leased to this
//!    round's random token until `now + lease` ([`WebhookStore::claim_deliveries`]). Other
//!    dispatchers (threads, processes, replicas) skip leased deliveries.
//! 3. **Send**: endpoints in parallel; one endpoint's deliveries one after the other in
//!    creation order, so under normal operation an endpoint receives messages in the order
//!    they were created. After a timeout or a connection error the endpoint's remaining
//!    deliveries of this round are released unattempted (it looks down: do not hammer it),
//!    likewise when the round has used half its lease.
//! 4. **Record**: every attempt is logged and each delivery's next state written, per endpoint
//!    in one store call ([`WebhookStore::complete_deliveries`]); an endpoint answering 410 or
//!    failing without a success for `disable_after` is disabled.
//!
//! `now` is a parameter, so tests drive the schedule by passing later times instead of
//! sleeping. Only the `webhook-timestamp` header is the wall clock: it states when the
//! request was really sent, which is what receivers check it against.
//!
//! A dispatcher killed mid-round leaves its claims leased until they expire; then the
//! deliveries are claimed and sent again, with the same `webhook-id`. Delivery is at least
//! once; receivers deduplicate on `webhook-id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use verdict_config::WebhooksSettings;
use verdict_store::{
    Attempt, AttemptResult, Delivery, DeliveryNext, DeliveryUpdate, Endpoint, StoreError,
    WebhookStore,
};

use crate::retry::{AttemptOutcome, Decision, FailReason, RetrySchedule, parse_retry_after};
use crate::signing::{Secret, headers};
use crate::target::{GuardedResolver, check_literal, refusal_in};

/// Most bytes of a response body kept in the attempt log.
pub const RESPONSE_SNIPPET_BYTES: usize = 1024;

/// How the dispatcher behaves; see `[webhooks]` in the configuration.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub allow_private_targets: bool,
    pub request_timeout: Duration,
    pub schedule: RetrySchedule,
    pub disable_after: Duration,
    pub lease: Duration,
    pub batch_size: usize,
    pub idle_sleep: Duration,
}

impl DispatcherConfig {
    pub fn from_settings(s: &WebhooksSettings) -> Self {
        Self {
            allow_private_targets: s.allow_private_targets,
            request_timeout: s.request_timeout(),
            schedule: RetrySchedule::new(s.retry_schedule()),
            disable_after: s.disable_after(),
            lease: s.lease(),
            batch_size: s.batch_size,
            idle_sleep: s.idle_sleep(),
        }
    }
}

/// What one round did. Serializable, for job run records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DispatchReport {
    /// Deliveries created from new outbox messages.
    pub fanned_out: u64,
    /// Deliveries claimed.
    pub claimed: u64,
    /// Attempts made.
    pub attempted: u64,
    pub delivered: u64,
    /// Failed attempts scheduled for another try.
    pub retried: u64,
    /// Deliveries given up (rejected, exhausted, endpoint disabled or deleted).
    pub failed: u64,
    /// Endpoints disabled (410 Gone, or failing for `disable_after`).
    pub disabled: u64,
    /// Claimed deliveries given back unattempted (endpoint looked down, or lease half used).
    pub released: u64,
}

impl DispatchReport {
    pub fn add(&mut self, o: &DispatchReport) {
        self.fanned_out += o.fanned_out;
        self.claimed += o.claimed;
        self.attempted += o.attempted;
        self.delivered += o.delivered;
        self.retried += o.retried;
        self.failed += o.failed;
        self.disabled += o.disabled;
        self.released += o.released;
    }

    /// Whether the round found any work.
    pub fn is_idle(&self) -> bool {
        self.fanned_out == 0 && self.claimed == 0
    }
}

type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Delivers the outbox. Cheap to clone (shares its HTTP connection pool).
#[derive(Clone)]
pub struct Dispatcher {
    /// Only the webhook aggregate: the dispatcher touches nothing else.
    store: Arc<dyn WebhookStore>,
    client: reqwest::Client,
    config: DispatcherConfig,
    jitter: Jitter,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The result of one HTTP attempt.
struct Sent {
    outcome: AttemptOutcome,
    status_code: Option<u16>,
    response: Option<String>,
    error: Option<String>,
    latency: Duration,
}

impl Dispatcher {
    /// A dispatcher on `store`. Jitter is drawn uniformly (see [`Dispatcher::with_jitter`]).
    pub fn new(
        store: Arc<dyn WebhookStore>,
        config: DispatcherConfig,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Verdict-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private_targets,
            }))
            .build()?;
        Ok(Self {
            store,
            client,
            config,
            jitter: Arc::new(rand::random::<f64>),
        })
    }

    /// Replace the jitter draw (uniform in `[0, 1)`; 0.5 means none), e.g. to test exact
    /// schedules.
    pub fn with_jitter(mut self, jitter: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    /// One round at `now`: fan out, claim what is due, send, record. See the module docs.
    pub async fn run_once(&self, now: OffsetDateTime) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport {
            fanned_out: self
                .store
                .fan_out_webhooks(now, self.config.batch_size)
                .await?,
            ..DispatchReport::default()
        };
        let token = format!("claim_{}", uuid::Uuid::new_v4().simple());
        let lease = time::Duration::try_from(self.config.lease).unwrap_or(time::Duration::MINUTE);
        let claimed = self
            .store
            .claim_deliveries(&token, now, now + lease, self.config.batch_size)
            .await?;
        report.claimed = claimed.len() as u64;
        if claimed.is_empty() {
            return Ok(report);
        }
        // Group by endpoint, keeping creation order inside each group.
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<Delivery>> = HashMap::new();
        for d in claimed {
            if !groups.contains_key(&d.endpoint_id) {
                order.push(d.endpoint_id.clone());
            }
            groups.entry(d.endpoint_id.clone()).or_default().push(d);
        }
        let started = Instant::now();
        let rounds = order.into_iter().map(|endpoint_id| {
            let deliveries = groups.remove(&endpoint_id).unwrap_or_default();
            self.deliver_to(endpoint_id, deliveries, &token, now, started)
        });
        let mut first_error = None;
        for result in futures::future::join_all(rounds).await {
            match result {
                Ok(r) => report.add(&r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Send one endpoint's claimed deliveries in order, then record them.
    async fn deliver_to(
        &self,
        endpoint_id: String,
        deliveries: Vec<Delivery>,
        token: &str,
        now: OffsetDateTime,
        started: Instant,
    ) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        let endpoint = self.store.get_endpoint(&endpoint_id).await?;
        let mut updates = Vec::with_capacity(deliveries.len());
        let gone_reason = match &endpoint {
            None => Some("endpoint deleted"),
            Some(e) if e.disabled => Some("endpoint disabled"),
            Some(_) => None,
        };
        let (Some(endpoint), None) = (endpoint, gone_reason) else {
            for d in deliveries {
                report.failed += 1;
                updates.push(update(
                    &d,
                    None,
                    DeliveryNext::Failed {
                        reason: gone_reason.unwrap_or("endpoint disabled").to_owned(),
                    },
                ));
            }
            self.store.complete_deliveries(token, &updates, now).await?;
            return Ok(report);
        };
        let mut stop = false;
        let mut gone = false;
        let (mut successes, mut failures) = (0u32, 0u32);
        for d in deliveries {
            if stop || started.elapsed() > self.config.lease / 2 {
                report.released += 1;
                updates.push(update(&d, None, DeliveryNext::Release));
                continue;
            }
            let attempt_no = d.attempts + 1;
            let sent = self.send(&endpoint, &d, now).await;
            report.attempted += 1;
            let decision = self
                .config
                .schedule
                .classify(attempt_no, sent.outcome, (self.jitter)());
            let (result, next, next_at) = match decision {
                Decision::Delivered => {
                    report.delivered += 1;
                    (AttemptResult::Delivered, DeliveryNext::Delivered, None)
                }
                Decision::RetryAt(delay) => {
                    report.retried += 1;
                    let at = now + time::Duration::try_from(delay).unwrap_or(time::Duration::DAY);
                    (AttemptResult::Retry, DeliveryNext::RetryAt(at), Some(at))
                }
                Decision::Fail(reason) => {
                    report.failed += 1;
                    let reason = match reason {
                        FailReason::Rejected => "rejected by the endpoint (4xx); not retried",
                        FailReason::Exhausted => "every scheduled attempt failed",
                    };
                    (
                        AttemptResult::Failed,
                        DeliveryNext::Failed {
                            reason: reason.to_owned(),
                        },
                        None,
                    )
                }
                Decision::DisableEndpoint => {
                    report.failed += 1;
                    gone = true;
                    stop = true;
                    (
                        AttemptResult::EndpointDisabled,
                        DeliveryNext::Failed {
                            reason: "the endpoint answered 410 Gone; it was disabled".to_owned(),
                        },
                        None,
                    )
                }
            };
            if result == AttemptResult::Delivered {
                successes += 1;
            } else {
                failures += 1;
            }
            if matches!(
                sent.outcome,
                AttemptOutcome::Timeout | AttemptOutcome::ConnectError
            ) {
                stop = true;
            }
            let attempt = Attempt {
                id: 0,
                endpoint_id: endpoint.id.clone(),
                message_id: d.message.id.clone(),
                attempt: attempt_no,
                at: now,
                status_code: sent.status_code,
                latency_ms: sent.latency.as_millis() as u64,
                response: sent.response,
                error: sent.error,
                result,
                next_attempt_at: next_at,
            };
            updates.push(update(&d, Some(attempt), next));
        }
        self.store.complete_deliveries(token, &updates, now).await?;
        // The endpoint's health after the round, then whether it is to be disabled
        // (`verdict_domain::webhook::disable_reason`: 410 Gone, or failing too long).
        if !gone && successes == 0 && failures == 0 {
            return Ok(report);
        }
        let failing_since = if gone {
            endpoint.failing_since
        } else if successes > 0 && endpoint.failing_since.is_none() {
            None
        } else {
            self.store
                .record_endpoint_health(&endpoint.id, successes > 0, now)
                .await?
        };
        if let Some(reason) = verdict_domain::webhook::disable_reason(
            gone,
            failing_since.filter(|_| successes == 0),
            now,
            self.config.disable_after,
        ) {
            self.store
                .set_endpoint_disabled(&endpoint.id, Some(reason.as_str()), now)
                .await?;
            report.disabled += 1;
            tracing::warn!(endpoint = %endpoint.id, reason = reason.as_str(), ?failing_since, "webhook endpoint disabled");
        }
        Ok(report)
    }

    /// One signed POST of `d`'s message to `endpoint`.
    async fn send(&self, endpoint: &Endpoint, d: &Delivery, now: OffsetDateTime) -> Sent {
        let started = Instant::now();
        let failed = |error: String| Sent {
            outcome: AttemptOutcome::ConnectError,
            status_code: None,
            response: None,
            error: Some(error),
            latency: started.elapsed(),
        };
        let url = match reqwest::Url::parse(&endpoint.url) {
            Ok(u) => u,
            Err(e) => return failed(format!("invalid endpoint URL: {e}")),
        };
        if let Some(Err(refused)) = check_literal(&url, self.config.allow_private_targets) {
            return failed(format!("target refused: {refused}"));
        }
        let secrets: Vec<Secret> = match endpoint
            .live_secrets(now)
            .into_iter()
            .map(Secret::parse)
            .collect::<Result<_, _>>()
        {
            Ok(s) => s,
            Err(e) => return failed(format!("endpoint secret unusable: {e}")),
        };
        let secret_refs: Vec<&Secret> = secrets.iter().collect();
        let body = match serde_json::to_vec(&d.message.body()) {
            Ok(b) => b,
            Err(e) => return failed(format!("encoding the message: {e}")),
        };
        // The time the request is really sent: receivers compare it with their clock.
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers(&secret_refs, &d.message.id, timestamp, &body) {
            request = request.header(name, value);
        }
        match request.body(body).send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let mut snippet = Vec::new();
                let mut error = None;
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = RESPONSE_SNIPPET_BYTES - snippet.len();
                            snippet.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if snippet.len() >= RESPONSE_SNIPPET_BYTES {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("reading the response: {e}"));
                            break;
                        }
                    }
                }
                Sent {
                    outcome: AttemptOutcome::Status(status, retry_after),
                    status_code: Some(status),
                    response: (!snippet.is_empty())
                        .then(|| String::from_utf8_lossy(&snippet).into_owned()),
                    error,
                    latency: started.elapsed(),
                }
            }
            Err(e) => {
                let outcome = if e.is_timeout() {
                    AttemptOutcome::Timeout
                } else {
                    AttemptOutcome::ConnectError
                };
                let error = match refusal_in(&e) {
                    Some(refused) => format!("target refused: {refused}"),
                    None if e.is_timeout() => format!(
                        "timed out after {} s",
                        self.config.request_timeout.as_secs_f64()
                    ),
                    None => verdict_domain::error_chain(&e),
                };
                Sent {
                    outcome,
                    status_code: None,
                    response: None,
                    error: Some(error),
                    latency: started.elapsed(),
                }
            }
        }
    }

    /// Run rounds back to back while there is work, from now:
    /// - `for_at_most: None`: until a round finds nothing to do (drain once; `verdict run
    ///   webhooks`, an HTTP trigger);
    /// - `Some(d)`: for `d`, sleeping `idle_sleep` whenever a round finds nothing (one
    ///   tenure of the continuous `webhooks` job).
    ///
    /// Returns early, after finishing the round in progress, when `stop` is cancelled. A round
    /// that fails ends the run with its error (the job records it; the loop retries later).
    pub async fn run_for(
        &self,
        for_at_most: Option<Duration>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<DispatchReport, StoreError> {
        let started = Instant::now();
        let mut totals = DispatchReport::default();
        loop {
            if stop.is_cancelled() {
                return Ok(totals);
            }
            let report = self.run_once(OffsetDateTime::now_utc()).await?;
            totals.add(&report);
            let left = for_at_most.map(|limit| limit.saturating_sub(started.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(totals);
            }
            if !report.is_idle() {
                tracing::debug!(report = ?report, "webhook dispatch round");
                continue;
            }
            let Some(left) = left else {
                return Ok(totals);
            };
            tokio::select! {
                _ = tokio::time::sleep(self.config.idle_sleep.min(left)) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

fn update(d: &Delivery, attempt: Option<Attempt>, next: DeliveryNext) -> DeliveryUpdate {
    DeliveryUpdate {
        endpoint_id: d.endpoint_id.clone(),
        message_id: d.message.id.clone(),
        attempt,
        next,
    }
}
