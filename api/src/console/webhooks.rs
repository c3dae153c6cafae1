//! Webhook endpoints (right `webhooks:manage`):
//!
//! - `GET /admin/webhooks[?environment=]`: an environment's endpoints, and the new-endpoint
//!   form;
//! - `POST /admin/webhooks`: create one; the answer shows its signing secret, once;
//! - `GET|POST /admin/webhooks/{id}`: an endpoint, its recent messages, and its edit form;
//! - `POST /admin/webhooks/{id}/enabled`, `…/rotate`, `…/delete`: enable or disable it,
//!   replace its secret (the new one shown once; the previous one keeps signing for the
//!   configured overlap), delete it.
//!
//! The forms post to the use-cases the webhooks API calls; a refused form comes back with
//! each problem next to its field (422), nothing written.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form as Posted, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use verdict_app::webhooks::{
    EndpointListQuery, EndpointUpdate, EndpointView, MessageListQuery, MessageView, NewEndpoint,
};
use verdict_app::{AppError, Paginated};
use verdict_domain::Right;

use super::definition::submit;
use super::form::{self, Form, Input, Kind};
use super::pages::{flat_form, layout, problem_box, when};
use super::{
    Change, NoFields, Refused, ScopeQuery, SignedIn, change, html as page, page_request, redirect,
};
use crate::state::AppState;

/// Endpoints the list shows (an environment has a few).
const ENDPOINTS_SHOWN: u32 = 100;
/// Messages an endpoint's page shows, newest first.
const MESSAGES_SHOWN: u32 = 20;

const TYPES_HINT: &str =
    "experiment.winner_changed, experiment.status_changed (comma-separated); blank: every type";

pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/admin/webhooks", get(list).post(create))
        .route("/admin/webhooks/{id}", get(show).post(update))
        .route("/admin/webhooks/{id}/enabled", post(set_enabled))
        .route("/admin/webhooks/{id}/rotate", post(rotate))
        .route("/admin/webhooks/{id}/delete", post(delete))
}

/// The list of `env`'s endpoints.
fn list_url(env: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::from("/admin/webhooks?"));
    q.append_pair("environment", env);
    q.finish()
}

fn endpoint_url(id: &str) -> String {
    format!(
        "/admin/webhooks/{}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    )
}

fn new_form() -> Form {
    Form::new(vec![
        Input::new("url", "URL", Kind::Text).hint("an absolute http(s) URL"),
        Input::new("event_types", "Event types", Kind::List).hint(TYPES_HINT),
        Input::new("description", "Description", Kind::Area),
    ])
}

fn edit_form(e: &EndpointView) -> Form {
    let doc = serde_json::to_value(e).unwrap_or_default();
    Form::new(
        [
            Input::new("url", "URL", Kind::Text),
            Input::new("event_types", "Event types", Kind::List)
                .hint(TYPES_HINT)
                .blank_empty(),
            Input::new("description", "Description", Kind::Area).blank_empty(),
        ]
        .into_iter()
        .map(|i| i.from(&doc))
        .collect(),
    )
}

/// A page's caller (holding `webhooks:manage`) and the environment it names, if any.
async fn viewing(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<(SignedIn, Option<String>), Refused> {
    let (who, scope) = page_request(state, headers, scope, Right::WebhooksManage).await?;
    Ok((who, super::non_empty(&scope.environment)))
}

/// A posted form's caller (its CSRF token matching, holding `webhooks:manage`), the
/// environment it names, and the form's fields.
async fn changing<T>(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<T>>, FormRejection>,
) -> Result<(SignedIn, Option<String>, T), Refused> {
    let (who, scope, fields) = change(state, headers, scope, posted, Right::WebhooksManage).await?;
    Ok((who, super::non_empty(&scope.environment), fields))
}

// --- the list ---------------------------------------------------------------------------

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let (who, env) = match viewing(&state, &headers, scope).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    list_response(&state, &who, env, None).await
}

/// The list page; `form` is a new-endpoint form that came back with problems.
async fn list_response(
    state: &AppState,
    who: &SignedIn,
    env: Option<String>,
    form: Option<Form>,
) -> Response {
    let env = env.unwrap_or_else(|| who.caller.environment().to_owned());
    let query = EndpointListQuery {
        page: Some(1),
        page_size: Some(ENDPOINTS_SHOWN),
        environment: Some(env.clone()),
    };
    let listed = match state.list_endpoints(&who.caller, query).await {
        Ok(listed) => listed,
        Err(e) => return super::error_page(Some(who), &e),
    };
    let status = super::page_status(form.is_some(), None);
    let form = form.unwrap_or_else(new_form);
    page(status, list_page(who, &env, &listed, &form))
}

fn list_page(who: &SignedIn, env: &str, listed: &Paginated<EndpointView>, form: &Form) -> Markup {
    layout(
        "Webhooks",
        Some(who),
        html! {
            h1 { "Webhook endpoints" }
            (super::pages::environment_picker("/admin/webhooks", env))
            @if listed.data.is_empty() {
                p.empty { "No endpoint in " (env) " yet." }
            } @else {
                table.endpoints {
                    thead { tr { th { "URL" } th { "Event types" } th { "State" } th { "Failing since" } } }
                    tbody {
                        @for e in &listed.data {
                            tr data-endpoint=(e.id) {
                                td { a href=(endpoint_url(&e.id)) { code { (e.url) } } }
                                td { (event_types(e)) }
                                td { (state(e)) }
                                td { (when(e.failing_since)) }
                            }
                        }
                    }
                }
                @if listed.pagination.total > listed.data.len() as u64 {
                    p.hint { "The first " (listed.data.len()) " of " (listed.pagination.total) " endpoints." }
                }
            }
            h2 { "New endpoint" }
            p.hint { "Deliveries are signed as Standard Webhooks describes (HMAC-SHA256); the secret to verify them is shown once, when the endpoint is created." }
            (flat_form(who, "new-endpoint", &list_url(env), Some(html! { "Endpoint in " (env) }), form, "Create the endpoint"))
        },
    )
}

fn event_types(e: &EndpointView) -> String {
    if e.event_types.is_empty() {
        "every type".to_owned()
    } else {
        let types: Vec<&str> = e.event_types.iter().map(|t| t.as_str()).collect();
        types.join(", ")
    }
}

fn state(e: &EndpointView) -> Markup {
    html! {
        @if e.disabled {
            span.state-bad { "disabled" }
            @if let Some(reason) = &e.disabled_reason { " (" (reason) ")" }
        } @else {
            span.state-ok { "enabled" }
        }
    }
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, env, posted) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let mut form = new_form();
    let create = |mut body: NewEndpoint| {
        body.environment.clone_from(&env);
        state.create_endpoint(&who.caller, body)
    };
    match submit(&mut form, &posted, create).await {
        Some(created) => page(
            StatusCode::CREATED,
            secret_page(&who, "Endpoint created", &created.endpoint, &created.secret),
        ),
        None => list_response(&state, &who, env, Some(form)).await,
    }
}

/// An endpoint's new secret, shown this once.
fn secret_page(who: &SignedIn, title: &str, e: &EndpointView, secret: &str) -> Markup {
    let what = html! {
        "Deliveries to " code { (e.url) } " are signed with this secret."
        @if let Some(until) = e.previous_secret_expires_at {
            " The previous secret signs too until " (when(Some(until))) "."
        }
    };
    super::pages::shown_once(
        who,
        title,
        what,
        secret,
        (&endpoint_url(&e.id), "To the endpoint"),
    )
}

// --- one endpoint -----------------------------------------------------------------------

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let (who, _) = match viewing(&state, &headers, scope).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    endpoint_response(&state, &who, &id, None, None).await
}

/// An endpoint's page; `form` is its edit form come back with problems, `problem` a
/// refused change.
async fn endpoint_response(
    state: &AppState,
    who: &SignedIn,
    id: &str,
    form: Option<Form>,
    problem: Option<&AppError>,
) -> Response {
    let e = match state.endpoint(&who.caller, id).await {
        Ok(e) => e,
        Err(e) => return super::error_page(Some(who), &e),
    };
    let recent = MessageListQuery {
        page: Some(1),
        page_size: Some(MESSAGES_SHOWN),
        status: None,
    };
    let messages = state.list_messages(&who.caller, id, recent).await;
    let status = super::page_status(form.is_some(), problem);
    let form = form.unwrap_or_else(|| edit_form(&e));
    page(status, endpoint_page(who, &e, &messages, &form, problem))
}

fn endpoint_page(
    who: &SignedIn,
    e: &EndpointView,
    messages: &Result<Paginated<MessageView>, AppError>,
    form: &Form,
    problem: Option<&AppError>,
) -> Markup {
    let here = endpoint_url(&e.id);
    let list = list_url(&e.environment);
    layout(
        "Webhook endpoint",
        Some(who),
        html! {
            p.crumbs { a href=(list) { "Webhooks" } " / " (e.environment) }
            h1 { code { (e.url) } }
            @if let Some(p) = problem { (problem_box(p)) }
            dl.facts {
                dt { "Id" } dd { code { (e.id) } }
                dt { "Event types" } dd #event-types { (event_types(e)) }
                dt { "State" } dd #state { (state(e)) @if e.disabled { " since " (when(e.disabled_at)) } }
                dt { "Failing since" } dd { (when(e.failing_since)) }
                @if e.previous_secret_expires_at.is_some() {
                    dt { "Previous secret signs until" } dd { (when(e.previous_secret_expires_at)) }
                }
                dt { "Created" } dd { (when(Some(e.created_at))) }
            }
            div.actions {
                form.inline #enabled method="post" action=(super::pages::action(&here, "enabled")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    @if e.disabled {
                        input type="hidden" name="enabled" value="true";
                        button type="submit" { "Enable" }
                    } @else {
                        input type="hidden" name="enabled" value="false";
                        button.secondary type="submit" { "Disable" }
                    }
                }
                form.inline #rotate method="post" action=(super::pages::action(&here, "rotate")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.secondary type="submit" { "Rotate the secret" }
                }
                form.inline #delete-endpoint method="post" action=(super::pages::action(&here, "delete")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.danger type="submit" { "Delete the endpoint" }
                }
            }
            h2 { "Settings" }
            (flat_form(who, "endpoint-form", &here, None, form, "Save the endpoint"))
            h2 { "Recent messages" }
            @match messages {
                Ok(p) if p.data.is_empty() => p.empty { "No message yet." },
                Ok(p) => table.messages {
                    thead { tr {
                        th { "Message" } th { "Event" } th { "Status" } th.num { "Attempts" }
                        th { "Last attempt" } th { "Last answer" }
                    } }
                    tbody {
                        @for m in &p.data {
                            tr data-message=(m.message_id) {
                                td { code { (m.message_id) } }
                                td { (m.event_type.as_str()) }
                                td.status { (m.status.as_str()) }
                                td.num { (m.attempts) }
                                td { (when(m.last_attempt_at)) }
                                td {
                                    @if let Some(code) = m.last_status_code { "HTTP " (code) }
                                    @if let Some(error) = &m.last_error { " " small { (error) } }
                                }
                            }
                        }
                    }
                },
                Err(problem) => (problem_box(problem)),
            }
        },
    )
}

async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, _, posted) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let current = match state.endpoint(&who.caller, &id).await {
        Ok(e) => e,
        Err(e) => return super::error_page(Some(&who), &e),
    };
    let mut form = edit_form(&current);
    // A blank list is every type again, a blank description empty (`blank_empty`).
    let update = |body: EndpointUpdate| state.update_endpoint(&who.caller, &id, body);
    if submit(&mut form, &posted, update).await.is_some() {
        return redirect(&endpoint_url(&id));
    }
    endpoint_response(&state, &who, &id, Some(form), None).await
}

/// `enabled`: `true` or `false` (a flattened form field is read as text).
#[derive(Debug, Deserialize)]
struct EnabledForm {
    enabled: String,
}

async fn set_enabled(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<EnabledForm>>, FormRejection>,
) -> Response {
    let (who, _, f) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let enabled = f.enabled == "true";
    match state.set_endpoint_enabled(&who.caller, &id, enabled).await {
        Ok(_) => redirect(&endpoint_url(&id)),
        Err(e) => endpoint_response(&state, &who, &id, None, Some(&e)).await,
    }
}

async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<NoFields>>, FormRejection>,
) -> Response {
    let (who, _, _) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    match state.rotate_endpoint_secret(&who.caller, &id).await {
        Ok(rotated) => page(
            StatusCode::OK,
            secret_page(&who, "Secret rotated", &rotated.endpoint, &rotated.secret),
        ),
        Err(e) => endpoint_response(&state, &who, &id, None, Some(&e)).await,
    }
}

async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<NoFields>>, FormRejection>,
) -> Response {
    let (who, _, _) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let env = match state.endpoint(&who.caller, &id).await {
        Ok(e) => e.environment,
        Err(e) => return super::error_page(Some(&who), &e),
    };
    match state.delete_endpoint(&who.caller, &id).await {
        Ok(()) => redirect(&list_url(&env)),
        Err(e) => endpoint_response(&state, &who, &id, None, Some(&e)).await,
    }
}
