//! Environments, and an environment's audiences (reusable targeting rules that experiments
//! name):
//!
//! - `GET /admin/environments[?page=]`: the environments, and the new-environment form;
//! - `POST /admin/environments`: create one;
//! - `GET /admin/audiences[?environment=&page=]`: the list, and the new-audience form;
//! - `POST /admin/audiences`: create one;
//! - `GET|POST /admin/audiences/{key}`: an audience, its rules' edit form;
//! - `POST /admin/audiences/{key}/delete`: delete it (refused, with the experiments, while
//!   running experiments use it).
//!
//! Reading needs `environments:read`, changing `environments:write`; the forms post to the
//! use-cases the JSON API calls, and a refused request comes back with each problem next to
//! its field (422), nothing written.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form as Posted, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::json;
use verdict_app::environments::{AudienceInput, AudienceUpdate, NewEnvironment};
use verdict_app::{AppError, Paginated};
use verdict_domain::{Audience, Environment, Right};

use super::definition::submit;
use super::form::{self, Form, Input, Kind};
use super::pages::{flat_form, layout, problem_box};
use super::{
    Change, NoFields, PageQuery, Refused, ScopeQuery, SignedIn, change, html as page, list_request,
    page_request, redirect,
};
use crate::state::AppState;

/// Environments or audiences a page lists.
const PAGE_SIZE: u32 = 50;

/// What the rules input holds, in words.
const RULES_HINT: &str = r#"A subject matches when all the conditions of any one rule hold (no rules: everyone), e.g. [{"conditions": [{"attribute": "country", "operator": "in", "value": ["DE", "FR"]}]}]"#;

pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/admin/environments",
            get(environments).post(create_environment),
        )
        .route("/admin/audiences", get(list).post(create))
        .route("/admin/audiences/{key}", get(show).post(update))
        .route("/admin/audiences/{key}/delete", post(delete))
}

/// The environment a page acts in: the one named, else the caller's own.
fn environment(who: &SignedIn, scope: &ScopeQuery) -> String {
    super::non_empty(&scope.environment).unwrap_or_else(|| who.caller.environment().to_owned())
}

/// A page's caller (holding `environments:read`) and environment.
async fn viewing(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<(SignedIn, String), Refused> {
    let (who, scope) = page_request(state, headers, scope, Right::EnvironmentsRead).await?;
    let env = environment(&who, &scope);
    Ok((who, env))
}

/// A posted form's caller (its CSRF token matching, holding `environments:write`), the
/// environment, and the form's fields.
async fn changing<T>(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<T>>, FormRejection>,
) -> Result<(SignedIn, String, T), Refused> {
    let (who, scope, fields) =
        change(state, headers, scope, posted, Right::EnvironmentsWrite).await?;
    let env = environment(&who, &scope);
    Ok((who, env, fields))
}

/// `path` with the page's environment as its query.
fn url(path: &str, env: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(format!("{path}?"));
    q.append_pair("environment", env);
    q.finish()
}

// --- environments ----------------------------------------------------------------------

fn new_environment_form() -> Form {
    Form::new(vec![
        Input::new("key", "Key", Kind::Text).hint("letters, digits, - and _; cannot change"),
        Input::new("name", "Name", Kind::Text).hint("defaults to the key"),
        Input::new("description", "Description", Kind::Area),
    ])
}

async fn environments(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    paging: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let (who, _, page_number) =
        match list_request(&state, &headers, scope, paging, Right::EnvironmentsRead).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    environments_response(&state, &who, page_number, None).await
}

/// The environments page; `form` is a new-environment form that came back with problems.
async fn environments_response(
    state: &AppState,
    who: &SignedIn,
    page_number: Option<u32>,
    form: Option<Form>,
) -> Response {
    let read = |paging| state.list_environments(paging);
    let draw = |listed: &Paginated<Environment>, form: &Form| environments_page(who, listed, form);
    super::list_with_form(
        who,
        page_number,
        PAGE_SIZE,
        read,
        form,
        new_environment_form,
        draw,
    )
    .await
}

fn environments_page(who: &SignedIn, listed: &Paginated<Environment>, form: &Form) -> Markup {
    layout(
        "Environments",
        Some(who),
        html! {
            h1 { "Environments" }
            table.environments {
                thead { tr { th { "Key" } th { "Name" } th { "Description" } th { "Created" } th {} } }
                tbody {
                    @for e in &listed.data {
                        tr data-environment=(e.key) {
                            td { (e.key) } td { (e.name) } td { (e.description) }
                            td { (super::pages::when(Some(e.created_at))) }
                            td {
                                // Only where this caller may act.
                                @if who.caller.require_environment(&e.key).is_ok() {
                                    a href=(url("/admin", &e.key)) { "Experiments" } " · "
                                    a.audiences href=(url("/admin/audiences", &e.key)) { "Audiences" }
                                }
                            }
                        }
                    }
                }
            }
            (super::pages::pager(listed.pagination, "/admin/environments", "environments"))
            @if who.may(Right::EnvironmentsWrite) {
                h2 { "New environment" }
                (flat_form(who, "new-environment", "/admin/environments", None, form, "Create the environment"))
            }
        },
    )
}

async fn create_environment(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, _, posted) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let mut form = new_environment_form();
    let create = |body: NewEnvironment| state.create_environment(&who.caller, body);
    if submit(&mut form, &posted, create).await.is_some() {
        return redirect("/admin/environments");
    }
    environments_response(&state, &who, None, Some(form)).await
}

// --- audiences -------------------------------------------------------------------------

fn audience_url(key: &str, env: &str) -> String {
    url(
        &format!(
            "/admin/audiences/{}",
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
        ),
        env,
    )
}

fn new_form() -> Form {
    let doc = json!({"rules": []});
    Form::new(
        [
            Input::new("key", "Key", Kind::Text).hint("letters, digits, - and _; cannot change"),
            Input::new("name", "Name", Kind::Text).hint("defaults to the key"),
            Input::new("rules", "Rules (JSON)", Kind::Json).hint(RULES_HINT),
        ]
        .into_iter()
        .map(|i| i.from(&doc))
        .collect(),
    )
}

fn edit_form(a: &Audience) -> Form {
    let doc = json!({"name": a.name, "rules": a.rules});
    Form::new(
        [
            Input::new("name", "Name", Kind::Text),
            Input::new("rules", "Rules (JSON)", Kind::Json).hint(RULES_HINT),
        ]
        .into_iter()
        .map(|i| i.from(&doc))
        .collect(),
    )
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    paging: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let (who, scope, page_number) =
        match list_request(&state, &headers, scope, paging, Right::EnvironmentsRead).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    let env = environment(&who, &scope);
    list_response(&state, &who, &env, page_number, None).await
}

/// The list page; `form` is a new-audience form that came back with problems.
async fn list_response(
    state: &AppState,
    who: &SignedIn,
    env: &str,
    page_number: Option<u32>,
    form: Option<Form>,
) -> Response {
    let read = |paging| state.list_audiences(&who.caller, env, paging);
    let draw = |listed: &Paginated<Audience>, form: &Form| list_page(who, env, listed, form);
    super::list_with_form(who, page_number, PAGE_SIZE, read, form, new_form, draw).await
}

fn list_page(who: &SignedIn, env: &str, listed: &Paginated<Audience>, form: &Form) -> Markup {
    layout(
        "Audiences",
        Some(who),
        html! {
            h1 { "Audiences" }
            (super::pages::environment_picker("/admin/audiences", env))
            @if listed.data.is_empty() {
                p.empty { "No audience in " (env) " yet." }
            } @else {
                table.audiences {
                    thead { tr { th { "Key" } th { "Name" } th { "Rules" } th { "Updated" } } }
                    tbody {
                        @for a in &listed.data {
                            tr data-audience=(a.key) {
                                td { a href=(audience_url(&a.key, env)) { (a.key) } }
                                td { (a.name) }
                                td { code.json { (serde_json::to_string(&a.rules).unwrap_or_default()) } }
                                td { (super::pages::when(Some(a.updated_at))) }
                            }
                        }
                    }
                }
                (super::pages::pager(listed.pagination, &url("/admin/audiences", env), "audiences"))
            }
            @if who.may(Right::EnvironmentsWrite) {
                h2 { "New audience" }
                (flat_form(who, "new-audience", &url("/admin/audiences", env),
                    Some(html! { "Audience in " (env) }), form, "Create the audience"))
            }
        },
    )
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
    let create = |body: AudienceInput| state.create_audience(&who.caller, &env, body);
    if let Some(created) = submit(&mut form, &posted, create).await {
        return redirect(&audience_url(&created.key, &env));
    }
    list_response(&state, &who, &env, None, Some(form)).await
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let (who, env) = match viewing(&state, &headers, scope).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    audience_response(&state, &who, &env, &key, None, None).await
}

/// An audience's page; `form` is its edit form come back with problems, `problem` a refused
/// deletion.
async fn audience_response(
    state: &AppState,
    who: &SignedIn,
    env: &str,
    key: &str,
    form: Option<Form>,
    problem: Option<&AppError>,
) -> Response {
    let a = match state.audience(&who.caller, env, key).await {
        Ok(a) => a,
        Err(e) => return super::error_page(Some(who), &e),
    };
    let status = super::page_status(form.is_some(), problem);
    let form = form.unwrap_or_else(|| edit_form(&a));
    page(status, audience_page(who, &a, &form, problem))
}

fn audience_page(who: &SignedIn, a: &Audience, form: &Form, problem: Option<&AppError>) -> Markup {
    let here = audience_url(&a.key, &a.environment);
    layout(
        &format!("Audience {}", a.key),
        Some(who),
        html! {
            p.crumbs { a href=(url("/admin/audiences", &a.environment)) { "Audiences" } " / " (a.environment) }
            h1 { (a.name) " " small { code { (a.key) } } }
            @if let Some(e) = problem { (problem_box(e)) }
            dl.facts {
                dt { "Environment" } dd { (a.environment) }
                dt { "Created" } dd { (super::pages::when(Some(a.created_at))) }
                dt { "Updated" } dd { (super::pages::when(Some(a.updated_at))) }
            }
            @if who.may(Right::EnvironmentsWrite) {
                h2 { "Rules" }
                p.hint { "Experiments that name this audience take only the subjects its rules match; a change applies to new subjects (those assigned keep their variant)." }
                (flat_form(who, "audience-form", &here, None, form, "Save the audience"))
                form.inline #delete-audience method="post" action=(super::pages::action(&here, "delete")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.danger type="submit" { "Delete the audience" }
                }
            } @else {
                h2 { "Rules" }
                pre.rules #rules { (serde_json::to_string_pretty(&a.rules).unwrap_or_default()) }
            }
        },
    )
}

async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, env, posted) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let current = match state.audience(&who.caller, &env, &key).await {
        Ok(a) => a,
        Err(e) => return super::error_page(Some(&who), &e),
    };
    let mut form = edit_form(&current);
    let update = |body: AudienceUpdate| state.update_audience(&who.caller, &env, &key, body);
    if submit(&mut form, &posted, update).await.is_some() {
        return redirect(&audience_url(&key, &env));
    }
    audience_response(&state, &who, &env, &key, Some(form), None).await
}

async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<NoFields>>, FormRejection>,
) -> Response {
    let (who, env, _) = match changing(&state, &headers, scope, posted).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    match state.delete_audience(&who.caller, &env, &key).await {
        Ok(()) => redirect(&url("/admin/audiences", &env)),
        Err(e) => audience_response(&state, &who, &env, &key, None, Some(&e)).await,
    }
}
