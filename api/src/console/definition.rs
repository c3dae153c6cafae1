//! The definition forms: a new experiment, an experiment's definition and its variants,
//! and its forced variants (QA overrides).
//!
//! - `GET|POST /admin/new-experiment`: the form with the defaults filled in; creates a draft.
//! - `GET|POST /admin/experiments/{key}/edit`: the definition (a patch of what changed).
//! - `POST /admin/experiments/{key}/variants`: variants, weights and configs.
//! - `POST /admin/experiments/{key}/forced`, `…/forced/remove`: add or remove an override.
//!
//! Each form posts to the use-case the JSON API calls, with the request built from the form
//! ([`super::form`]); a refused request comes back as the form with every problem next to
//! its field (422), nothing written.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form as Posted, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use verdict_app::experiments::{ExperimentPatch, ForcedVariant, VariantsUpdate};
use verdict_app::{AppError, ErrorCode};
use verdict_domain::experiment::MAX_VARIANTS;
use verdict_domain::{Experiment, ExperimentInput, Right, Status, Targeting, WinnerPolicy};

use super::form::{self, Form, Input, Kind};
use super::{
    Change, Refused, ScopeQuery, SignedIn, change, changed, experiment_url, html as page,
    page_request, redirect,
};
use crate::state::AppState;

/// Empty variant rows a form offers beyond the filled ones.
const SPARE_ROWS: usize = 2;

const KINDS: &[&str] = &["binomial", "count", "sum", "mean"];
const OBJECTIVES: &[&str] = &["maximize", "minimize"];
const DECISION_OBJECTIVES: &[&str] = &["", "maximize", "minimize"];
const MODES: &[&str] = &["automatic", "manual"];
const METHODS: &[&str] = &["bayesian_beta", "simple_rate"];

// --- the inputs ------------------------------------------------------------------------

/// The inputs of `rows` variant rows.
fn variant_inputs(rows: usize) -> Vec<Input> {
    (0..rows)
        .flat_map(|i| {
            [
                Input::new(format!("variants[{i}].key"), "Key", Kind::Text),
                Input::new(format!("variants[{i}].weight"), "Weight", Kind::Number)
                    .hint("0 to 1; the weights sum to 1"),
                Input::new(format!("variants[{i}].config"), "Config (JSON)", Kind::Json),
                Input::new(format!("variants[{i}].control"), "Control", Kind::Check),
            ]
        })
        .collect()
}

/// The definition's inputs a new experiment and an edit share.
fn definition_inputs(draft: bool) -> Vec<Input> {
    let mut inputs = vec![
        Input::new("name", "Name", Kind::Text),
        Input::new("description", "Description", Kind::Area).blank_empty(),
        Input::new("coverage", "Coverage", Kind::Number)
            .hint("share of eligible subjects in the experiment, 0 to 1"),
        Input::new("audience", "Audience", Kind::Text)
            .hint("a saved audience's key; blank: everyone"),
        Input::new("targeting", "Targeting (JSON)", Kind::Json),
        Input::new("primary_metric.event", "Primary metric event", Kind::Text),
        Input::new("primary_metric.kind", "Kind", Kind::Choice(KINDS)),
        Input::new(
            "primary_metric.objective",
            "Objective",
            Kind::Choice(OBJECTIVES),
        ),
        Input::new("secondary_metrics", "Secondary metrics (JSON)", Kind::Json),
        Input::new("guardrail_metrics", "Guardrail metrics (JSON)", Kind::Json),
        Input::new("exposure_event", "Exposure event", Kind::Text)
            .hint("analyse only subjects who sent it; blank: every assigned subject"),
        Input::new("thresholds", "Thresholds (JSON)", Kind::Json),
        Input::new("policy.mode", "Decisions", Kind::Choice(MODES)),
        Input::new("policy.stat_method", "Method", Kind::Choice(METHODS)),
        Input::new(
            "policy.objective",
            "Decision objective",
            Kind::Choice(DECISION_OBJECTIVES),
        )
        .hint("default: the primary metric's"),
        Input::new(
            "policy.min_assignments",
            "Minimum subjects per variant",
            Kind::Whole,
        ),
        Input::new(
            "policy.min_conversions",
            "Minimum converted subjects per variant",
            Kind::Whole,
        ),
        Input::new("policy.min_delta", "Minimum difference", Kind::Number)
            .hint("in the primary metric's units"),
        Input::new(
            "policy.probability_threshold",
            "P(best) needed",
            Kind::Number,
        ),
        Input::new(
            "policy.max_expected_loss",
            "Largest expected loss",
            Kind::Number,
        ),
        Input::new(
            "policy.pick_after_seconds",
            "No decision before (seconds)",
            Kind::Whole,
        ),
        Input::new(
            "policy.peeking_guard",
            "Peeking guard (always-valid test)",
            Kind::Check,
        ),
        Input::new("policy.alpha", "Peeking guard α", Kind::Number),
        Input::new(
            "policy.guardrail_probability",
            "Guardrail probability",
            Kind::Number,
        ),
        Input::new("ends_at", "Ends at (RFC 3339)", Kind::Text),
        Input::new(
            "evaluation_period_days",
            "Or completes after (days)",
            Kind::Whole,
        ),
        Input::new("namespace", "Namespace (JSON)", Kind::Json),
        Input::new("retention", "Retention (JSON)", Kind::Json),
    ];
    if draft {
        inputs.push(Input::new("start_at", "Starts at (RFC 3339)", Kind::Text));
        inputs.push(Input::new("breakdown", "Breakdown (JSON)", Kind::Json));
    }
    inputs
}

/// The new-experiment form, filled from `doc`.
fn new_experiment_form(doc: &Value) -> Form {
    let rows = rows_in(doc).max(2) + SPARE_ROWS;
    let mut inputs = vec![Input::new("key", "Key", Kind::Text).hint("letters, digits, - and _")];
    inputs.extend(variant_inputs(rows.min(MAX_VARIANTS)));
    inputs.extend(definition_inputs(true));
    Form::new(inputs.into_iter().map(|i| i.from(doc)).collect())
}

/// What the new-experiment form starts with: the API's defaults.
fn defaults() -> Value {
    json!({
        "variants": [
            {"key": "control", "weight": 0.5, "config": {}, "control": true},
            {"key": "treatment", "weight": 0.5, "config": {}},
        ],
        "coverage": 1.0,
        "targeting": Targeting::default(),
        "primary_metric": {"kind": "binomial", "objective": "maximize"},
        "secondary_metrics": [],
        "guardrail_metrics": [],
        "thresholds": [],
        "policy": WinnerPolicy::default(),
    })
}

fn definition_form(e: &Experiment) -> Form {
    let doc = serde_json::to_value(e).unwrap_or_default();
    Form::new(
        definition_inputs(e.status == Status::Draft)
            .into_iter()
            .map(|i| i.from(&doc))
            .collect(),
    )
}

fn variants_form(e: &Experiment) -> Form {
    let doc = serde_json::to_value(e).unwrap_or_default();
    let rows = (e.variants.len() + SPARE_ROWS).min(MAX_VARIANTS);
    Form::new(
        variant_inputs(rows)
            .into_iter()
            .map(|i| i.from(&doc))
            .collect(),
    )
}

fn rows_in(doc: &Value) -> usize {
    doc.get("variants")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Drop the blank variant rows of `doc` (no key, weight or config) and give a filled row
/// without config `{}`; returns the form row of each variant left, for placing problems.
fn compact_variants(doc: &mut Value) -> Vec<usize> {
    let Some(rows) = doc.get_mut("variants").and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut from = Vec::new();
    for (i, row) in std::mem::take(rows).into_iter().enumerate() {
        let Value::Object(mut row) = row else {
            continue;
        };
        let blank = ["key", "weight", "config"]
            .iter()
            .all(|k| row.get(*k).is_none_or(Value::is_null));
        if blank {
            continue;
        }
        row.entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        kept.push(Value::Object(row));
        from.push(i);
    }
    *rows = kept;
    from
}

/// `field` with a variant index of the compacted request put back to its form row.
fn to_form_row(field: &str, rows: &[usize]) -> String {
    let renumbered = field
        .strip_prefix("variants[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(n, rest)| {
            let row = rows.get(n.parse::<usize>().ok()?)?;
            Some(format!("variants[{row}]{rest}"))
        });
    renumbered.unwrap_or_else(|| field.to_owned())
}

/// Read `doc` as the request type `T`, or place why not in `form`.
fn request<T: DeserializeOwned>(form: &mut Form, doc: Value, rows: &[usize]) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(doc) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = to_form_row(&e.path().to_string(), rows);
            form.place_unreadable(&path, &e.into_inner().to_string());
            None
        }
    }
}

/// Place a refused request's problems in `form`: each detail next to its field, else the
/// error's message (a taken key next to the key).
fn refused(form: &mut Form, e: &AppError, rows: &[usize]) {
    if e.details.is_empty() {
        let field = match e.code {
            ErrorCode::ExperimentExists
            | ErrorCode::AudienceExists
            | ErrorCode::EnvironmentExists => "key",
            _ => "",
        };
        form.place(field, &format!("{} ({})", e.message, e.code.as_str()));
    } else {
        let details: Vec<Value> = e
            .details
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(f) = d.get("field").and_then(Value::as_str) {
                    d["field"] = Value::String(to_form_row(f, rows));
                }
                d
            })
            .collect();
        form.place_details(&details);
    }
}

/// Read a posted form of flat fields (no rows) into `form`, build its request `T` and hand
/// it to `apply` (a use-case): what `apply` answered, or `None` with every problem placed
/// in `form` (nothing written).
pub(super) async fn submit<T, R, Fut>(
    form: &mut Form,
    posted: &form::Posted,
    apply: impl FnOnce(T) -> Fut,
) -> Option<R>
where
    T: DeserializeOwned,
    Fut: std::future::Future<Output = Result<R, AppError>>,
{
    let doc = form.read(posted, None);
    if form.has_problems() {
        return None;
    }
    match apply(request::<T>(form, doc, &[])?).await {
        Ok(answer) => Some(answer),
        Err(e) => {
            refused(form, &e, &[]);
            None
        }
    }
}

// --- new experiment --------------------------------------------------------------------

pub(super) async fn new_experiment_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let (who, scope) = match page_request(&state, &headers, scope, Right::ExperimentsWrite).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let form = new_experiment_form(&defaults());
    page(StatusCode::OK, new_experiment(&who, &scope, &form))
}

pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, scope, posted) =
        match change(&state, &headers, scope, posted, Right::ExperimentsWrite).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    let rows_posted = posted
        .keys()
        .filter_map(|k| {
            k.strip_prefix("variants[")?
                .split_once(']')?
                .0
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |i| i + 1);
    let mut form = new_experiment_form(&json!({"variants": vec![Value::Null; rows_posted]}));
    let mut doc = form.read(&posted, None);
    let rows = compact_variants(&mut doc);
    if !form.has_problems()
        && let Some(input) = request::<ExperimentInput>(&mut form, doc, &rows)
    {
        match state
            .create_experiment(&who.caller, &scope.params(), input)
            .await
        {
            Ok(created) => return redirect(&experiment_url(&created.value.key, &scope)),
            Err(e) => refused(&mut form, &e, &rows),
        }
    }
    page(
        StatusCode::UNPROCESSABLE_ENTITY,
        new_experiment(&who, &scope, &form),
    )
}

fn new_experiment(who: &SignedIn, scope: &ScopeQuery, form: &Form) -> Markup {
    let action = format!("/admin/new-experiment{}", scope.suffix());
    super::pages::layout(
        "New experiment",
        Some(who),
        html! {
            p.crumbs { a href="/admin" { "Experiments" } " / new" }
            h1 { "New experiment" }
            (form.summary())
            form.definition method="post" action=(action) novalidate {
                input type="hidden" name="csrf" value=(who.csrf);
                fieldset {
                    legend { "Experiment" }
                    (form.field("key"))
                }
                (variants_fieldset(form))
                (definition_fieldsets(form))
                button type="submit" { "Create the draft" }
            }
        },
    )
}

fn variants_fieldset(form: &Form) -> Markup {
    let rows = form
        .inputs
        .iter()
        .filter(|i| i.path.ends_with(".key") && i.path.starts_with("variants["))
        .count();
    html! {
        fieldset.variants-form {
            legend { "Variants" }
            p.hint { "Leave a row blank to leave it out. Up to " (MAX_VARIANTS) " variants; the first is the control unless one is marked." }
            @for i in 0..rows {
                div.variant-row { (form.inputs_under(&format!("variants[{i}]."))) }
            }
        }
    }
}

fn definition_fieldsets(form: &Form) -> Markup {
    html! {
        fieldset {
            legend { "Description" }
            (form.field("name")) (form.field("description"))
        }
        fieldset {
            legend { "Who is in it" }
            (form.field("coverage")) (form.field("audience")) (form.field("targeting"))
            (form.field("exposure_event"))
        }
        fieldset {
            legend { "Metrics" }
            (form.inputs_under("primary_metric."))
            (form.field("secondary_metrics")) (form.field("guardrail_metrics"))
            (form.field("thresholds")) (form.field("breakdown"))
        }
        fieldset {
            legend { "Winner policy" }
            (form.inputs_under("policy."))
        }
        fieldset {
            legend { "Schedule and data" }
            (form.field("start_at")) (form.field("ends_at")) (form.field("evaluation_period_days"))
            (form.field("namespace")) (form.field("retention"))
        }
    }
}

// --- edit ------------------------------------------------------------------------------

/// What a change form posts beside its fields: the version it was read at.
fn version_of(posted: &form::Posted) -> u64 {
    posted
        .get("version")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) async fn edit_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let (who, scope) = match page_request(&state, &headers, scope, Right::ExperimentsWrite).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    edit_response(&state, &who, &key, &scope, None, None).await
}

/// The edit page (its caller holds `experiments:write`); `definition` or `variants` is a
/// form that came back with problems.
async fn edit_response(
    state: &AppState,
    who: &SignedIn,
    key: &str,
    scope: &ScopeQuery,
    definition: Option<Form>,
    variants: Option<Form>,
) -> Response {
    let e = match state.experiment(&who.caller, &scope.params(), key).await {
        Ok(e) => e,
        Err(e) => return super::error_page(Some(who), &e),
    };
    let status = super::page_status(definition.is_some() || variants.is_some(), None);
    let definition = definition.unwrap_or_else(|| definition_form(&e));
    let variants = variants.unwrap_or_else(|| variants_form(&e));
    page(
        status,
        edit(who, &e, &experiment_url(key, scope), &definition, &variants),
    )
}

/// A posted edit form's parts, once every check passed, and the experiment as it is now.
async fn editing(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Result<(SignedIn, ScopeQuery, form::Posted, Experiment), Refused> {
    let (who, scope, posted) =
        change(state, headers, scope, posted, Right::ExperimentsWrite).await?;
    match state.experiment(&who.caller, &scope.params(), key).await {
        Ok(e) => Ok((who, scope, posted, e)),
        Err(e) => Err(Box::new(super::error_page(Some(&who), &e))),
    }
}

pub(super) async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, scope, posted, current) = match editing(&state, &headers, &key, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let base = serde_json::to_value(&current).unwrap_or_default();
    let mut form = definition_form(&current);
    let doc = form.read(&posted, Some(&base));
    if !form.has_problems() {
        // Only what changed goes in the patch: an unchanged field is not validated again.
        let mut patch = Map::new();
        patch.insert("version".into(), json!(version_of(&posted)));
        let fields: std::collections::BTreeSet<&str> = form
            .inputs
            .iter()
            .map(|i| i.path.split(['.', '[']).next().unwrap_or(""))
            .collect();
        for field in fields {
            if doc.get(field) != base.get(field) {
                patch.insert(
                    field.to_owned(),
                    doc.get(field).cloned().unwrap_or_default(),
                );
            }
        }
        if let Some(patch) = request::<ExperimentPatch>(&mut form, Value::Object(patch), &[]) {
            let outcome = state
                .update_experiment(&who.caller, &scope.params(), &key, patch)
                .await;
            match outcome {
                Ok(_) => return redirect(&experiment_url(&key, &scope)),
                Err(e) => refused(&mut form, &e, &[]),
            }
        }
    }
    edit_response(&state, &who, &key, &scope, Some(form), None).await
}

pub(super) async fn put_variants(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, scope, posted, current) = match editing(&state, &headers, &key, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let mut form = variants_form(&current);
    let mut doc = form.read(&posted, None);
    let rows = compact_variants(&mut doc);
    doc["version"] = json!(version_of(&posted));
    if !form.has_problems()
        && let Some(body) = request::<VariantsUpdate>(&mut form, doc, &rows)
    {
        match state
            .put_variants(&who.caller, &scope.params(), &key, body)
            .await
        {
            Ok(_) => return redirect(&experiment_url(&key, &scope)),
            Err(e) => refused(&mut form, &e, &rows),
        }
    }
    edit_response(&state, &who, &key, &scope, None, Some(form)).await
}

fn edit(who: &SignedIn, e: &Experiment, url: &str, definition: &Form, variants: &Form) -> Markup {
    let ranged = e.variants.iter().any(|v| v.range.is_some());
    super::pages::layout(
        &format!("Edit {}", e.key),
        Some(who),
        html! {
            p.crumbs { a href="/admin" { "Experiments" } " / " a href=(url) { (e.key) } " / edit" }
            h1 { "Edit " (e.name) " " (super::pages::status_badge(e.status)) }
            section #edit-variants {
                h2 { "Variants" }
                @if ranged {
                    p { "This experiment's variants have explicit bucket ranges; change them through "
                        code { "PUT /v1/experiments/{key}/variants" } "." }
                } @else {
                    (variants.summary())
                    form.definition method="post" action=(super::pages::action(url, "variants")) novalidate {
                        input type="hidden" name="csrf" value=(who.csrf);
                        input type="hidden" name="version" value=(e.version);
                        @if e.status != Status::Draft {
                            p.hint { "Subjects keep the variant they were assigned; once started, no variant can be removed." }
                        }
                        (variants_fieldset(variants))
                        button type="submit" { "Save the variants" }
                    }
                }
            }
            section #edit-definition {
                h2 { "Definition" }
                (definition.summary())
                form.definition method="post" action=(super::pages::action(url, "edit")) novalidate {
                    input type="hidden" name="csrf" value=(who.csrf);
                    input type="hidden" name="version" value=(e.version);
                    (definition_fieldsets(definition))
                    button type="submit" { "Save the definition" }
                }
            }
        },
    )
}

// --- forced variants -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct ForcedForm {
    subject: String,
    #[serde(default)]
    variant: String,
}

pub(super) async fn force(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<ForcedForm>>, FormRejection>,
) -> Response {
    let (who, scope, f) =
        match change(&state, &headers, scope, posted, Right::ExperimentsWrite).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    let body = ForcedVariant { variant: f.variant };
    let outcome = state
        .force_variant(&who.caller, &scope.params(), &key, f.subject.trim(), body)
        .await;
    changed(&state, &who, &key, &scope, outcome).await
}

pub(super) async fn unforce(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<ForcedForm>>, FormRejection>,
) -> Response {
    let (who, scope, f) =
        match change(&state, &headers, scope, posted, Right::ExperimentsWrite).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    let outcome = state
        .unforce_variant(&who.caller, &scope.params(), &key, f.subject.trim())
        .await;
    changed(&state, &who, &key, &scope, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_rows_are_left_out_and_problems_go_back_to_their_row() {
        let mut doc = json!({"variants": [
            {"key": "a", "weight": 0.5, "control": true},
            {"control": false},
            {"key": "b", "weight": 1.5, "config": {"x": 1}, "control": false},
        ]});
        let rows = compact_variants(&mut doc);
        assert_eq!(rows, [0, 2]);
        assert_eq!(
            doc["variants"],
            json!([
                {"key": "a", "weight": 0.5, "control": true, "config": {}},
                {"key": "b", "weight": 1.5, "config": {"x": 1}, "control": false},
            ])
        );
        assert_eq!(
            to_form_row("variants[1].weight", &rows),
            "variants[2].weight"
        );
        assert_eq!(to_form_row("variants", &rows), "variants");
        assert_eq!(to_form_row("policy.alpha", &rows), "policy.alpha");
    }

    #[test]
    fn the_new_experiment_form_reads_back_as_the_defaults() {
        let mut form = new_experiment_form(&defaults());
        let posted: form::Posted = form
            .inputs
            .iter()
            .filter(|i| !(i.kind == Kind::Check && i.text.is_empty()))
            .map(|i| (i.path.clone(), i.text.clone()))
            .chain([("key".to_owned(), "checkout".to_owned())])
            .chain([("primary_metric.event".to_owned(), "purchase".to_owned())])
            .collect();
        let mut doc = form.read(&posted, None);
        let rows = compact_variants(&mut doc);
        assert!(!form.has_problems(), "{:?}", form.listed);
        let input: ExperimentInput = request(&mut form, doc, &rows).expect("readable");
        assert_eq!(input.variants.len(), 2);
        assert_eq!(input.policy, WinnerPolicy::default());
        assert_eq!(input.coverage, Some(1.0));
    }
}
