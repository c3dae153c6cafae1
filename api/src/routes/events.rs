//! Event ingestion: one event or a batch of up to `ingest.max_batch`, per-item results.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use verdict_domain::assignment::{MAX_SUBJECT_LEN, subject_key};
use verdict_domain::validation::is_valid_key;
use verdict_domain::{KeyScope, NewEvent, Scope};
use verdict_store::AppendOutcome;

use super::now;
use crate::auth::{Caller, ScopeParams};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::{ErrorBody, EventsRequest};
use crate::routes::assignments::LiveExperiment;
use crate::startup::AppState;

/// Longest client event id.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Largest `meta` object, serialized.
pub const MAX_META_BYTES: usize = 4096;

/// One event as a client sends it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// Idempotency key; without it the event cannot be deduplicated.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Experiment key or id (optional on `/v1/experiments/{key}/events`).
    #[serde(default)]
    pub experiment: Option<String>,
    pub subject_id: String,
    pub event: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ts: Option<OffsetDateTime>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub meta: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Accepted,
    Duplicate,
    Rejected,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub results: Vec<ItemResult>,
}

fn rejected(
    index: usize,
    event_id: Option<String>,
    code: &'static str,
    message: impl Into<String>,
) -> ItemResult {
    ItemResult {
        index,
        event_id,
        status: ItemStatus::Rejected,
        code: Some(code),
        message: Some(message.into()),
    }
}

/// Split a body into items: `{"events": [...]}` or one event object.
fn items(body: Value, max_batch: usize) -> Result<Vec<Value>, ApiError> {
    match body {
        Value::Object(mut map) if map.contains_key("events") => {
            if map.len() != 1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    "a batch body has only the 'events' field",
                ));
            }
            match map.remove("events") {
                Some(Value::Array(items)) => {
                    if items.len() > max_batch {
                        return Err(ApiError::new(
                            ErrorCode::BatchTooLarge,
                            format!(
                                "a batch holds at most {max_batch} events; got {}",
                                items.len()
                            ),
                        ));
                    }
                    if items.is_empty() {
                        return Err(ApiError::new(ErrorCode::InvalidBody, "'events' is empty"));
                    }
                    Ok(items)
                }
                _ => Err(
                    ApiError::new(ErrorCode::InvalidBody, "'events' must be an array")
                        .with_details(vec![
                            json!({"field": "events", "message": "must be an array"}),
                        ]),
                ),
            }
        }
        Value::Object(map) => Ok(vec![Value::Object(map)]),
        _ => Err(ApiError::new(
            ErrorCode::InvalidBody,
            "send one event object or {\"events\": [...]}",
        )),
    }
}

/// Check one parsed event; `Err` is the rejection message.
fn check(e: &EventInput, now: OffsetDateTime) -> Result<(), String> {
    if e.subject_id.is_empty() || e.subject_id.len() > MAX_SUBJECT_LEN {
        return Err("subject_id must be 1 to 256 bytes".into());
    }
    if !is_valid_key(&e.event) {
        return Err("event must be a key: letters, digits, '_', '-', '.'".into());
    }
    if let Some(id) = &e.event_id
        && (id.is_empty() || id.len() > MAX_EVENT_ID_LEN)
    {
        return Err("event_id must be 1 to 128 bytes".into());
    }
    if e.value.is_some_and(|v| !v.is_finite()) {
        return Err("value must be a finite number".into());
    }
    if let Some(ts) = e.ts
        && (ts > now + time::Duration::days(1) || ts.year() < 2000)
    {
        return Err("ts must be after 2000 and not more than a day in the future".into());
    }
    if let Some(meta) = &e.meta {
        if !meta.is_object() {
            return Err("meta must be an object".into());
        }
        if meta.to_string().len() > MAX_META_BYTES {
            return Err("meta must be at most 4096 bytes as JSON".into());
        }
    }
    Ok(())
}

/// Validate, attribute and store a batch. Items fail one by one; nothing fails the batch
/// except a store error, in which case nothing was stored.
pub async fn ingest(
    state: &AppState,
    scope: &Scope,
    path_experiment: Option<&str>,
    items: Vec<Value>,
) -> Result<IngestReport, ApiError> {
    let received_at = now();
    let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
    let mut experiments: HashMap<String, Option<Arc<LiveExperiment>>> = HashMap::new();
    let mut pending: Vec<(usize, Option<String>, NewEvent)> = Vec::with_capacity(items.len());
    for (index, raw) in items.into_iter().enumerate() {
        let input: EventInput = match serde_json::from_value(raw) {
            Ok(i) => i,
            Err(e) => {
                results[index] = Some(rejected(index, None, "invalid", e.to_string()));
                continue;
            }
        };
        if let Err(msg) = check(&input, received_at) {
            results[index] = Some(rejected(index, input.event_id, "invalid", msg));
            continue;
        }
        let key = match (path_experiment, input.experiment.as_deref()) {
            (Some(p), Some(k)) if p != k => {
                results[index] = Some(rejected(
                    index,
                    input.event_id,
                    "invalid",
                    "experiment differs from the one in the path",
                ));
                continue;
            }
            (Some(p), _) => p.to_owned(),
            (None, Some(k)) => k.to_owned(),
            (None, None) => {
                results[index] = Some(rejected(
                    index,
                    input.event_id,
                    "invalid",
                    "experiment is required",
                ));
                continue;
            }
        };
        if !experiments.contains_key(&key) {
            let found = match state.experiments.get(state, scope, &key).await {
                Ok(e) => Some(e),
                Err(e) if e.code == ErrorCode::ExperimentNotFound => None,
                Err(e) => return Err(e),
            };
            experiments.insert(key.clone(), found);
        }
        let Some(experiment) = experiments[&key].as_ref().map(|e| &e.experiment) else {
            results[index] = Some(rejected(
                index,
                input.event_id,
                "unknown_experiment",
                format!("no experiment '{key}' in this scope"),
            ));
            continue;
        };
        let client_id = input.event_id.clone();
        pending.push((
            index,
            client_id,
            NewEvent {
                experiment_id: experiment.id.clone(),
                event_id: input
                    .event_id
                    .unwrap_or_else(|| format!("srv_{}", uuid::Uuid::now_v7())),
                subject: subject_key(experiment, &input.subject_id),
                variant: input.variant,
                event: input.event,
                value: input.value.unwrap_or(1.0),
                ts: input
                    .ts
                    .map(verdict_store::model::truncate_to_millis)
                    .unwrap_or(received_at),
                received_at,
                meta: input.meta,
            },
        ));
    }
    let (slots, events): (Vec<_>, Vec<NewEvent>) =
        pending.into_iter().map(|(i, id, e)| ((i, id), e)).unzip();
    let outcomes = state.store.append_events(events).await?;
    for ((index, client_id), outcome) in slots.into_iter().zip(outcomes) {
        results[index] = Some(match outcome {
            AppendOutcome::Accepted => ItemResult {
                index,
                event_id: client_id,
                status: ItemStatus::Accepted,
                code: None,
                message: None,
            },
            AppendOutcome::Duplicate => ItemResult {
                index,
                event_id: client_id,
                status: ItemStatus::Duplicate,
                code: None,
                message: None,
            },
            AppendOutcome::NotInExperiment => rejected(
                index,
                client_id,
                "not_in_experiment",
                "the subject has no assignment in this experiment",
            ),
            AppendOutcome::VariantMismatch => rejected(
                index,
                client_id,
                "variant_mismatch",
                "the variant differs from the subject's assignment",
            ),
        });
    }
    let results: Vec<ItemResult> = results.into_iter().flatten().collect();
    let count = |s| results.iter().filter(|r| r.status == s).count();
    Ok(IngestReport {
        accepted: count(ItemStatus::Accepted),
        duplicates: count(ItemStatus::Duplicate),
        rejected: count(ItemStatus::Rejected),
        results,
    })
}

async fn handle(
    state: AppState,
    caller: Caller,
    params: ScopeParams,
    path_experiment: Option<String>,
    body: Value,
) -> Result<Json<IngestReport>, ApiError> {
    caller.require(KeyScope::Client)?;
    let scope = caller.scope(&params)?;
    let items = items(body, state.settings.ingest.max_batch)?;
    if let Some(max) = state.rate.max_cost()
        && items.len() > max
    {
        // Waiting would never help: say so instead of a 429 the client retries forever.
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "a batch of {} events exceeds this server's per-key burst of {max} \
                 (ingest.rate_limit_burst); send smaller batches",
                items.len()
            ),
        ));
    }
    state
        .rate
        .try_take(&caller.key.id, items.len())
        .map_err(|wait| ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                ErrorCode::RateLimited,
                "event rate limit exceeded for this API key",
            )
        })?;
    let report = ingest(&state, &scope, path_experiment.as_deref(), items).await?;
    let metrics = state.jobs.metrics();
    metrics.events_ingested(report.accepted as u64);
    metrics.events_rejected("duplicate", report.duplicates as u64);
    for r in &report.results {
        if let Some(code) = r.code {
            metrics.events_rejected(code, 1);
        }
    }
    Ok(Json(report))
}

/// `POST /v1/events`
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    summary = "Ingest events",
    description = "Requires the `client` scope (an admin key also passes). One event or a batch; each event names its `experiment` (key or id). Items \
        succeed or fail one by one; only a store error fails the whole batch (then nothing \
        was stored). Idempotent per `event_id`.",
    security(("bearer" = [])),
    params(ScopeParams),
    request_body = EventsRequest,
    responses(
        (status = 200, description = "Per-item results: each event is `accepted`, `duplicate` \
            (same `event_id` seen before) or `rejected` (with a `code`).", body = IngestReport),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`, or `batch_too_large` (more than \
            `ingest.max_batch` events, or more than the per-key burst).", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither an event object nor \
            `{\"events\": [...]}`, or an empty batch.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the key's event rate is exceeded.",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn post_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<IngestReport>, ApiError> {
    handle(state, caller, params, None, body).await
}

/// `POST /v1/experiments/{key}/events`
#[utoipa::path(
    post,
    path = "/experiments/{key}/events",
    tag = "events",
    summary = "Ingest events of one experiment",
    description = "Requires the `client` scope (an admin key also passes). As `POST /v1/events`, with the experiment taken from the path (an event's \
        `experiment`, if given, must match it).",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = EventsRequest,
    responses(
        (status = 200, description = "Per-item results: each event is `accepted`, `duplicate` \
            (same `event_id` seen before) or `rejected` (with a `code`).", body = IngestReport),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`, or `batch_too_large` (more than \
            `ingest.max_batch` events, or more than the per-key burst).", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither an event object nor \
            `{\"events\": [...]}`, or an empty batch.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the key's event rate is exceeded.",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn post_experiment_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<IngestReport>, ApiError> {
    handle(state, caller, params, Some(key), body).await
}
