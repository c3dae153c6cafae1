//! Event ingestion: one event or a batch of up to `ingest.max_batch`, per-item results.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use verdict_domain::assignment::{self, MAX_SUBJECT_LEN, subject_key};
use verdict_domain::validation::is_valid_key;
use verdict_domain::{Assignment, Experiment, NewEvent, Scope, Status};
use verdict_store::AppendOutcome;

use crate::assignments::LiveExperiment;
use crate::auth::{Caller, ScopeParams};
use crate::error::{AppError, ErrorCode};
use crate::json::parse_json;
use crate::{App, Inner, now};

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
    /// The event's value (1 when absent); `|value|` at most `ingest.max_abs_value`
    /// (default 1e12), else the item is rejected with `value_out_of_range`.
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
    /// Why a `rejected` item was: `invalid` (shape, sizes, timestamp), `value_out_of_range`
    /// (`|value|` over `ingest.max_abs_value`), `unknown_experiment`, `not_in_experiment`
    /// or `variant_mismatch`.
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

/// Split a body into its items: `{"events": [...]}` or one event object. Items stay raw JSON
/// (borrowed from the body) so that each is parsed, and fails, on its own.
pub(crate) fn items(body: &[u8], max_batch: usize) -> Result<Vec<&RawValue>, AppError> {
    let not_an_event = || {
        AppError::new(
            ErrorCode::InvalidBody,
            "send one event object or {\"events\": [...]}",
        )
    };
    if body.trim_ascii_start().first() != Some(&b'{') {
        // Broken JSON is `invalid_json`; any other value is the wrong shape.
        parse_json::<IgnoredAny>(body)?;
        return Err(not_an_event());
    }
    let fields: Vec<(Cow<'_, str>, &RawValue)> = parse_json::<ObjectFields<'_>>(body)?.0;
    let Some((_, events)) = fields.iter().find(|(name, _)| name == "events") else {
        return Ok(vec![parse_json::<&RawValue>(body)?]);
    };
    if fields.len() != 1 {
        return Err(AppError::new(
            ErrorCode::InvalidBody,
            "a batch body has only the 'events' field",
        ));
    }
    let items: Vec<&RawValue> = serde_json::from_str(events.get()).map_err(|_| {
        AppError::new(ErrorCode::InvalidBody, "'events' must be an array").with_details(vec![
            json!({"field": "events", "message": "must be an array"}),
        ])
    })?;
    if items.len() > max_batch {
        return Err(AppError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "a batch holds at most {max_batch} events; got {}",
                items.len()
            ),
        ));
    }
    if items.is_empty() {
        return Err(AppError::new(ErrorCode::InvalidBody, "'events' is empty"));
    }
    Ok(items)
}

/// A JSON object's fields in order, each value left raw.
struct ObjectFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for ObjectFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ObjectFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((name, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((name, value));
                }
                Ok(ObjectFields(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// One item as typed input, or why it is not an event. The message leaves out serde_json's
/// position (a line and column inside the item would mislead; the item's index is given).
/// `Err(None)`: the item is not even JSON serde_json accepts (e.g. a number out of range),
/// which makes the whole body invalid JSON, as if it had been parsed in one piece.
fn parse_item(raw: &RawValue) -> Result<EventInput, Option<String>> {
    serde_json::from_str(raw.get()).map_err(|e: serde_json::Error| {
        if e.is_syntax() || e.is_eof() {
            return None;
        }
        let message = e.to_string();
        Some(match message.rsplit_once(" at line ") {
            Some((head, _)) if e.line() > 0 => head.to_owned(),
            _ => message,
        })
    })
}

/// Check one parsed event; `Err` is the rejection's code and message. `max_abs_value`
/// (`ingest.max_abs_value`) bounds the value so that stored totals, which only ever grow,
/// stay finite (a sum of squares overflows from values around 1.3e154).
fn check(
    e: &EventInput,
    now: OffsetDateTime,
    max_abs_value: f64,
) -> Result<(), (&'static str, String)> {
    if let Some(v) = e.value
        && (!v.is_finite() || v.abs() > max_abs_value)
    {
        // JSON cannot carry a non-finite number; refused here all the same.
        return Err((
            "value_out_of_range",
            format!(
                "value must be a finite number between -{max_abs_value:e} and {max_abs_value:e}"
            ),
        ));
    }
    check_fields(e, now).map_err(|message| ("invalid", message))
}

/// [`check`] of everything but the value; `Err` is the rejection message.
fn check_fields(e: &EventInput, now: OffsetDateTime) -> Result<(), String> {
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
/// The exposure of a subject that a GrowthBook SDK put in a running experiment (Verdict has
/// no assignment for it): the assignment is recorded at the exposure's time, with the variant
/// Verdict's hashing gives the subject (the SDK applied the targeting; the namespace and
/// hash are checked here), so that the subject's events count from then on. An exposure
/// naming another variant than the hash gives, for a subject without an assignment, is
/// refused (the error message); a subject the hash leaves outside stays unassigned (the
/// store refuses its events `not_in_experiment`).
///
/// A subject already assigned (by the assignment API, perhaps under other weights) keeps its
/// assignment, which the store checks the event against: it is looked up with a read, and
/// only a subject without one costs a write.
async fn adopt_sdk_assignment(
    state: &Inner,
    experiment: &Experiment,
    scope: &Scope,
    input: &EventInput,
    received_at: OffsetDateTime,
) -> Result<Result<(), String>, AppError> {
    if input.event != experiment.exposure_event_name()
        || experiment.status != Status::Running
        || experiment.winner.is_some()
    {
        return Ok(Ok(()));
    }
    let key = subject_key(scope.organization.as_deref(), &input.subject_id);
    if state.assignments.get(&experiment.id, &key).is_some() {
        return Ok(Ok(()));
    }
    let Some(index) = assignment::sdk_variant(experiment, &input.subject_id) else {
        return Ok(Ok(()));
    };
    if let Some(stored) = state
        .store
        .subject_state(&experiment.id, &key)
        .await?
        .assignment
    {
        state.assignments.put(&stored);
        return Ok(Ok(()));
    }
    let variant = &experiment.variants[index].key;
    if let Some(named) = input.variant.as_deref().filter(|v| v != variant) {
        return Ok(Err(format!(
            "the exposure names variant '{named}', and Verdict's hashing puts this subject in \
             '{variant}'"
        )));
    }
    let assigned_at = input
        .ts
        .map(verdict_store::model::truncate_to_millis)
        .unwrap_or(received_at);
    let (kept, _) = state
        .store
        .get_or_create_assignment(&Assignment {
            experiment_id: experiment.id.clone(),
            subject: key.into_owned(),
            variant: variant.clone(),
            assigned_at,
            context: None,
        })
        .await?;
    state.assignments.put(&kept);
    Ok(Ok(()))
}

async fn ingest(
    state: &Inner,
    scope: &Scope,
    path_experiment: Option<&str>,
    items: Vec<&RawValue>,
) -> Result<IngestReport, AppError> {
    let received_at = now();
    let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
    // The experiments a batch names: few, so a list beats hashing every item's key.
    let mut experiments: Vec<(String, Option<Arc<LiveExperiment>>)> = Vec::new();
    let mut pending: Vec<(usize, Option<String>, NewEvent)> = Vec::with_capacity(items.len());
    for (index, raw) in items.into_iter().enumerate() {
        let input = match parse_item(raw) {
            Ok(i) => i,
            Err(Some(message)) => {
                results[index] = Some(rejected(index, None, "invalid", message));
                continue;
            }
            Err(None) => {
                return Err(AppError::new(
                    ErrorCode::InvalidJson,
                    format!("the body is not valid JSON: event {index} is not"),
                ));
            }
        };
        if let Err((code, msg)) = check(&input, received_at, state.settings.ingest.max_abs_value) {
            results[index] = Some(rejected(index, input.event_id, code, msg));
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
            (Some(p), _) => p,
            (None, Some(k)) => k,
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
        let known = match experiments.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let found = match state.experiments.get(state, scope, key).await {
                    Ok(e) => Some(e),
                    Err(e) if e.code == ErrorCode::ExperimentNotFound => None,
                    Err(e) => return Err(e),
                };
                experiments.push((key.to_owned(), found));
                experiments.len() - 1
            }
        };
        let Some(experiment) = experiments[known].1.as_ref().map(|e| &e.experiment) else {
            let message = format!("no experiment '{key}' in this scope");
            results[index] = Some(rejected(
                index,
                input.event_id,
                "unknown_experiment",
                message,
            ));
            continue;
        };
        match adopt_sdk_assignment(state, experiment, scope, &input, received_at).await? {
            Ok(()) => {}
            Err(message) => {
                results[index] = Some(rejected(index, input.event_id, "variant_mismatch", message));
                continue;
            }
        }
        let client_id = input.event_id.clone();
        pending.push((
            index,
            client_id,
            NewEvent {
                experiment_id: experiment.id.clone(),
                event_id: input
                    .event_id
                    .unwrap_or_else(|| format!("srv_{}", uuid::Uuid::now_v7())),
                subject: subject_key(scope.organization.as_deref(), &input.subject_id).into_owned(),
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

impl App {
    /// Ingest one event or a batch (`{"events": [...]}`, at most `ingest.max_batch`): the
    /// caller's token bucket is charged one token per event; items are checked, attributed
    /// and stored one by one (a bad item is rejected alone); only a store error fails the
    /// whole batch, and then nothing was stored.
    pub async fn ingest(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        path_experiment: Option<&str>,
        body: &[u8],
    ) -> Result<IngestReport, AppError> {
        let scope = caller.scope(scope)?;
        let state = &self.0;
        let items = items(body, state.settings.ingest.max_batch)?;
        if let Some(max) = state.rate.max_cost()
            && items.len() > max
        {
            // Waiting would never help: say so instead of a 429 the client retries forever.
            return Err(AppError::new(
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
            .try_take(caller.actor(), items.len())
            .map_err(|wait| {
                AppError::new(
                    ErrorCode::RateLimited,
                    "event rate limit exceeded for this API key",
                )
                .retry_after(wait)
            })?;
        let report = ingest(state, &scope, path_experiment, items).await?;
        let metrics = &state.metrics;
        metrics.events_ingested(report.accepted as u64);
        metrics.events_rejected("duplicate", report.duplicates as u64);
        for r in &report.results {
            if let Some(code) = r.code {
                metrics.events_rejected(code, 1);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(body: &str) -> Result<Vec<String>, ErrorCode> {
        items(body.as_bytes(), 3)
            .map(|items| items.iter().map(|i| i.get().to_owned()).collect())
            .map_err(|e| e.code)
    }

    #[test]
    fn a_value_beyond_the_bound_is_out_of_range_and_the_bound_itself_is_not() {
        let now = OffsetDateTime::now_utc();
        let event = |value: f64| {
            let mut e =
                parse_item(serde_json::from_str(r#"{"subject_id": "u", "event": "x"}"#).unwrap())
                    .unwrap();
            e.value = Some(value);
            e
        };
        for ok in [0.0, 1e12, -1e12, 5e-324] {
            assert_eq!(check(&event(ok), now, 1e12), Ok(()), "{ok}");
        }
        for bad in [
            1.000_001e12,
            -2e12,
            1.3e154,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            let (code, message) = check(&event(bad), now, 1e12).unwrap_err();
            assert_eq!(code, "value_out_of_range", "{bad}");
            assert!(message.contains("1e12"), "{message}");
        }
        let mut unnamed = event(1.0);
        unnamed.event = String::new();
        assert_eq!(check(&unnamed, now, 1e12).unwrap_err().0, "invalid");
    }

    #[test]
    fn a_body_splits_into_raw_items() {
        assert_eq!(
            codes(r#" {"events": [{"a": 1}, {"b": [2]}]} "#),
            Ok(vec![r#"{"a": 1}"#.to_owned(), r#"{"b": [2]}"#.to_owned()])
        );
        // One event object is a batch of one, whatever its fields.
        assert_eq!(
            codes(r#"{"subject_id": "u"}"#),
            Ok(vec![r#"{"subject_id": "u"}"#.to_owned()])
        );
        // An escaped field name is still the batch field.
        assert_eq!(codes(r#"{"ev\u0065nts": [{}]}"#), Ok(vec!["{}".to_owned()]));
    }

    #[test]
    fn a_bad_body_fails_as_a_whole_with_its_code() {
        assert_eq!(codes(r#"{"events": [{}],}"#), Err(ErrorCode::InvalidJson));
        assert_eq!(codes(r#"[1, 2]"#), Err(ErrorCode::InvalidBody));
        assert_eq!(codes("[1, 2"), Err(ErrorCode::InvalidJson));
        assert_eq!(codes("42"), Err(ErrorCode::InvalidBody));
        assert_eq!(codes(r#"{"events": "many"}"#), Err(ErrorCode::InvalidBody));
        assert_eq!(codes(r#"{"events": []}"#), Err(ErrorCode::InvalidBody));
        assert_eq!(
            codes(r#"{"events": [{}], "x": 1}"#),
            Err(ErrorCode::InvalidBody)
        );
        assert_eq!(
            codes(r#"{"events": [{}, {}, {}, {}]}"#),
            Err(ErrorCode::BatchTooLarge)
        );
    }

    #[test]
    fn an_item_error_names_the_problem_without_a_position() {
        let raw: &RawValue = serde_json::from_str(r#"{"subject_id": 42, "event": "x"}"#).unwrap();
        let message = parse_item(raw).unwrap_err().unwrap();
        assert!(
            message.starts_with("invalid type: integer `42`"),
            "{message}"
        );
        assert!(!message.contains("line"), "{message}");
        let raw: &RawValue = serde_json::from_str(r#"{"event": "x"}"#).unwrap();
        assert_eq!(
            parse_item(raw).unwrap_err().as_deref(),
            Some("missing field `subject_id`")
        );
        let raw: &RawValue =
            serde_json::from_str(r#"{"subject_id": "u", "event": "x", "colour": 1}"#).unwrap();
        assert!(
            parse_item(raw)
                .unwrap_err()
                .unwrap()
                .starts_with("unknown field `colour`")
        );
        let raw: &RawValue =
            serde_json::from_str(r#"{"subject_id": "u", "value": 1e400}"#).unwrap();
        assert_eq!(parse_item(raw).unwrap_err(), None, "out of range: not JSON");
        let raw: &RawValue = serde_json::from_str(r#"{"subject_id": "u", "event": "x"}"#).unwrap();
        let input = parse_item(raw).unwrap();
        assert_eq!(
            (input.subject_id.as_str(), input.event.as_str()),
            ("u", "x")
        );
    }
}
