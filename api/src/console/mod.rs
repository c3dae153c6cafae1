//! The admin console under `/admin`: server-rendered pages for experimenters, served by
//! `verdict serve` itself with every asset embedded (no CDN, no build step, no script).
//!
//! Pages call the same application use-cases as the JSON API with the signed-in caller, so
//! the caller's rights decide what the console shows and allows: buttons for changes the
//! caller may not make are absent, and a POST it may not make is refused. Sign-in is by API
//! key, kept in a signed cookie ([`crate::session`]); every form carries a CSRF token.
//!
//! - `GET /admin`: the experiments list (environment, organization, status, paging).
//! - `GET /admin/experiments/{key}`: definition, lifecycle, results, manual winner, audit.
//! - `POST /admin/experiments/{key}/status`, `…/winner`: the changes, then back to the page.
//! - `GET|POST /admin/new-experiment`, `GET|POST /admin/experiments/{key}/edit`,
//!   `POST …/variants`, `…/forced`, `…/forced/remove`: the definition forms
//!   (`definition.rs`), each problem shown next to its field (`form.rs`).
//! - `GET /admin/operations`: jobs, throughput, rejections, webhooks, readiness (`ops.rs`).
//! - `GET|POST /admin/environments`, `GET|POST /admin/audiences`, `GET|POST
//!   /admin/audiences/{key}`, `POST …/delete`: environments and their audiences
//!   (`environments.rs`).
//! - `GET|POST /admin/webhooks`, `GET|POST /admin/webhooks/{id}`, `POST …/enabled`,
//!   `…/rotate`, `…/delete`: webhook endpoints (`webhooks.rs`).
//! - `GET|POST /admin/api-keys`, `POST /admin/api-keys/{id}/revoke`: API keys (`keys.rs`).
//! - `GET|POST /admin/sign-in`, `POST /admin/sign-out`.
//! - `GET /admin/assets/console.css`.
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'` (no inline script or
//! style, nothing from another host), `X-Frame-Options: DENY` and `Cache-Control: no-store`.

mod chart;
mod definition;
mod environments;
mod form;
mod keys;
mod ops;
mod pages;
mod webhooks;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use verdict_app::auth::Credential;
use verdict_app::experiments::{ListParams, ScopedPageParams, WinnerOverride};
use verdict_app::results::ResultsParams;
use verdict_app::{AppError, Caller, ErrorCode, PageParams, ScopeParams};
use verdict_domain::Right;

use crate::session::{COOKIE as SESSION_COOKIE, MAX_TOKEN_LEN, Session, Signer};
use crate::state::AppState;

/// The stylesheet, embedded.
const CSS: &str = include_str!("assets/console.css");

/// The console's routes (outside the OpenAPI document: pages, not API).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(experiments))
        .route("/admin/", get(|| async { redirect("/admin") }))
        .route("/admin/sign-in", get(sign_in_page).post(sign_in))
        .route("/admin/sign-out", post(sign_out))
        .route(
            "/admin/new-experiment",
            get(definition::new_experiment_page).post(definition::create),
        )
        .route("/admin/experiments/{key}", get(experiment))
        .route(
            "/admin/experiments/{key}/edit",
            get(definition::edit_page).post(definition::update),
        )
        .route(
            "/admin/experiments/{key}/variants",
            post(definition::put_variants),
        )
        .route("/admin/experiments/{key}/forced", post(definition::force))
        .route(
            "/admin/experiments/{key}/forced/remove",
            post(definition::unforce),
        )
        .route("/admin/experiments/{key}/status", post(set_status))
        .route("/admin/experiments/{key}/winner", post(set_winner))
        .route("/admin/assets/console.css", get(stylesheet))
        .merge(ops::routes())
        .merge(environments::routes())
        .merge(webhooks::routes())
        .merge(keys::routes())
}

/// The headers every console answer carries.
fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (
            HeaderName::from_static("content-security-policy"),
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (HeaderName::from_static("x-frame-options"), "DENY"),
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("referrer-policy"), "same-origin"),
        (CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    page_headers(
        (
            status,
            [(CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response(),
    )
}

/// [`redirect`] that also sets the cookie `set_cookie` (a `Set-Cookie` value).
fn redirect_setting(to: &str, set_cookie: &str) -> Response {
    let mut response = redirect(to);
    if let Ok(v) = HeaderValue::from_str(set_cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// 303 See Other to `to` (after a form, so a reload does not post again).
fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    page_headers(response)
}

async fn stylesheet() -> Response {
    let mut response = ([(CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether the request reached Verdict over TLS (through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Who is signed in: the session and its caller.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    caller: Caller,
    session: Session,
    csrf: String,
}

impl SignedIn {
    fn may(&self, right: Right) -> bool {
        self.caller.holds(right)
    }
}

/// The answer a handler gives instead when a check fails (boxed: a `Response` is large).
type Refused = Box<Response>;

/// The signed-in caller, or the answer to give instead: to the sign-in page for a page,
/// 401 for a form.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<SignedIn, Refused> {
    let sessions = &state.sessions;
    let now = OffsetDateTime::now_utc();
    let Some(session) = session_cookie(headers).and_then(|v| sessions.check(&v, now)) else {
        return Err(Box::new(redirect("/admin/sign-in")));
    };
    let caller = match &session.signer {
        Signer::Key(digest) => state.authenticate_digest(*digest).await,
        Signer::Token(token) => state.authenticate(token).await,
    };
    match caller {
        Ok(caller) => Ok(SignedIn {
            csrf: sessions.csrf(&session),
            caller,
            session,
        }),
        // The key was revoked, or the token expired: the sign-in ends with it.
        Err(e) if e.code == ErrorCode::Unauthorized => Err(Box::new(redirect_setting(
            "/admin/sign-in",
            &sessions.removal(over_tls(headers)),
        ))),
        Err(e) => Err(Box::new(error_page(None, &e))),
    }
}

/// A page for `e`, with its status.
fn error_page(who: Option<&SignedIn>, e: &AppError) -> Response {
    if e.code == ErrorCode::Internal {
        tracing::error!(error = %e, cause = ?e.cause, "a console page failed");
    }
    html(crate::error::status(e.code), pages::error(who, e))
}

/// A form's fields, or the page that says why they could not be read (422).
fn fields<T>(form: Result<Form<T>, FormRejection>) -> Result<T, Refused> {
    form.map(|Form(v)| v)
        .map_err(|e| unreadable(ErrorCode::InvalidBody, "form", &e.body_text()))
}

/// A page's query, or the page that says why it could not be read (400).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Refused> {
    q.map(|Query(v)| v)
        .map_err(|e| unreadable(ErrorCode::InvalidQuery, "query", &e.body_text()))
}

fn unreadable(code: ErrorCode, what: &str, why: &str) -> Refused {
    let e = AppError::new(code, format!("the {what} could not be read: {why}"));
    Box::new(error_page(None, &e))
}

// --- sign-in --------------------------------------------------------------------------

async fn sign_in_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).await.is_ok() {
        return redirect("/admin");
    }
    html(StatusCode::OK, pages::sign_in(None))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    key: String,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let form = match fields(form) {
        Ok(form) => form,
        Err(answer) => return *answer,
    };
    let key = form.key.trim();
    let refused = |message: &str| html(StatusCode::UNAUTHORIZED, pages::sign_in(Some(message)));
    if key.is_empty() {
        return refused("Enter an API key or a token.");
    }
    let caller = match state.authenticate(key).await {
        Ok(caller) => caller,
        Err(e) if e.code == ErrorCode::Unauthorized => {
            return match verdict_jwt::looks_like_jwt(key) {
                true => refused(&format!("That token is refused: {}", e.message)),
                false => refused("That key is unknown or revoked."),
            };
        }
        Err(e) => return error_page(None, &e),
    };
    if !caller.holds(Right::ExperimentsRead) {
        return refused("That key may not read experiments (right experiments:read).");
    }
    let (signer, not_after) = match caller.principal().credential {
        Credential::Token { .. } if key.len() > MAX_TOKEN_LEN => {
            return refused(&format!(
                "That token is longer than the {MAX_TOKEN_LEN} bytes a sign-in cookie can carry."
            ));
        }
        Credential::Token { expires_at } => (Signer::Token(key.to_owned()), Some(expires_at)),
        _ => (Signer::Key(Sha256::digest(key.as_bytes()).into()), None),
    };
    let now = OffsetDateTime::now_utc();
    let session = state.sessions.issue_ending(signer, now, not_after);
    redirect_setting(
        "/admin",
        &state.sessions.cookie(&session, over_tls(&headers), now),
    )
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Change<NoFields>>, FormRejection>,
) -> Response {
    if let Err(answer) = checked_form(&state, &headers, form).await {
        return *answer;
    }
    redirect_setting(
        "/admin/sign-in",
        &state.sessions.removal(over_tls(&headers)),
    )
}

fn check_csrf(state: &AppState, who: &SignedIn, token: &str) -> Result<(), Refused> {
    if state.sessions.csrf_matches(&who.session, token) {
        Ok(())
    } else {
        Err(Box::new(error_page(
            Some(who),
            &AppError::new(
                ErrorCode::Forbidden,
                "the form's CSRF token does not match this sign-in; reload the page and retry",
            ),
        )))
    }
}

fn require(who: &SignedIn, right: Right) -> Result<(), Refused> {
    who.caller
        .require(right)
        .map_err(|e| Box::new(error_page(Some(who), &e)))
}

// --- experiments ----------------------------------------------------------------------

/// The list's query: what the filter form sends.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    environment: String,
    #[serde(default)]
    organization: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    search: String,
    page: Option<u32>,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn experiments(
    State(state): State<AppState>,
    headers: HeaderMap,
    list: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query(list) {
        Ok(q) => q,
        Err(answer) => return *answer,
    };
    let who = match signed_in(&state, &headers).await {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    if let Err(answer) = require(&who, Right::ExperimentsRead) {
        return *answer;
    }
    let params = ListParams {
        environment: non_empty(&query.environment),
        organization: non_empty(&query.organization),
        status: non_empty(&query.status),
        search: non_empty(&query.search),
        page: Some(query.page.unwrap_or(1).max(1)),
        page_size: Some(pages::PAGE_SIZE),
    };
    match state.list_experiments(&who.caller, params).await {
        Ok(list) => {
            // Each row's leader, from its latest stored evaluation (read together).
            let latest =
                futures::future::join_all(list.data.iter().map(|e| state.latest_evaluation(e)))
                    .await;
            let leaders: Vec<_> = latest
                .into_iter()
                .map(|p| p.ok().flatten().and_then(|p| p.leader().cloned()))
                .collect();
            html(
                StatusCode::OK,
                pages::experiments(&who, &query, &list, &leaders),
            )
        }
        Err(e) => error_page(Some(&who), &e),
    }
}

/// The scope of an experiment page (`scope:any` callers may name another).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ScopeQuery {
    #[serde(default)]
    environment: String,
    #[serde(default)]
    organization: String,
}

impl ScopeQuery {
    fn params(&self) -> ScopeParams {
        ScopeParams {
            environment: non_empty(&self.environment),
            organization: non_empty(&self.organization),
        }
    }

    /// The query string that keeps this scope on links and forms.
    fn suffix(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("environment", self.environment.trim()),
            ("organization", self.organization.trim()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        if pairs.is_empty() {
            String::new()
        } else {
            let mut q = form_urlencoded::Serializer::new(String::from("?"));
            q.extend_pairs(pairs);
            q.finish()
        }
    }
}

/// A list page's query: which page.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    page: Option<u32>,
}

/// A list page's request, once every check passed: the caller (holding `right`), the
/// page's scope, and the page asked for.
async fn list_request(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    paging: Result<Query<PageQuery>, QueryRejection>,
    right: Right,
) -> Result<(SignedIn, ScopeQuery, Option<u32>), Refused> {
    let (who, scope) = page_request(state, headers, scope, right).await?;
    let paging = query(paging)?;
    Ok((who, scope, paging.page))
}

/// A list page with its new-item form: page `page_number` (of `page_size` items) of what
/// `read` lists, drawn by `draw` with `form` (a new-item form come back with its problems,
/// answered 422) or a `fresh` one.
async fn list_with_form<T, Fut>(
    who: &SignedIn,
    page_number: Option<u32>,
    page_size: u32,
    read: impl FnOnce(PageParams) -> Fut,
    form: Option<form::Form>,
    fresh: fn() -> form::Form,
    draw: impl FnOnce(&verdict_app::Paginated<T>, &form::Form) -> maud::Markup,
) -> Response
where
    Fut: std::future::Future<Output = Result<verdict_app::Paginated<T>, AppError>>,
{
    let paging = PageParams {
        page: Some(page_number.unwrap_or(1)),
        page_size: Some(page_size),
    };
    let listed = match read(paging).await {
        Ok(listed) => listed,
        Err(e) => return error_page(Some(who), &e),
    };
    let status = page_status(form.is_some(), None);
    let form = form.unwrap_or_else(fresh);
    html(status, draw(&listed, &form))
}

/// A page's status: a refused change's, else 422 when a form came back with its problems,
/// else 200.
fn page_status(form_came_back: bool, problem: Option<&AppError>) -> StatusCode {
    match problem {
        Some(e) => crate::error::status(e.code),
        None if form_came_back => StatusCode::UNPROCESSABLE_ENTITY,
        None => StatusCode::OK,
    }
}

/// The experiment's URL (scope kept).
fn experiment_url(key: &str, scope: &ScopeQuery) -> String {
    format!(
        "/admin/experiments/{}{}",
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC),
        scope.suffix()
    )
}

async fn experiment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let (who, scope) = match page_request(&state, &headers, scope, Right::ExperimentsRead).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    experiment_page(&state, &who, &key, &scope, StatusCode::OK, None).await
}

/// The experiment page, with `problem` (a refused change) shown at the top.
async fn experiment_page(
    state: &AppState,
    who: &SignedIn,
    key: &str,
    scope: &ScopeQuery,
    status: StatusCode,
    problem: Option<&AppError>,
) -> Response {
    if let Err(answer) = require(who, Right::ExperimentsRead) {
        return *answer;
    }
    let e = match state.experiment(&who.caller, &scope.params(), key).await {
        Ok(e) => e,
        Err(e) => return error_page(Some(who), &e),
    };
    // The experiment's other parts are independent reads: made at once.
    let results = async {
        if !who.may(Right::ResultsRead) {
            return None;
        }
        let params = ResultsParams {
            environment: non_empty(&scope.environment),
            organization: non_empty(&scope.organization),
            ..ResultsParams::default()
        };
        Some(state.results(&who.caller, key, params).await)
    };
    let audit = async {
        if !who.may(Right::AuditRead) {
            return None;
        }
        let params = ScopedPageParams {
            environment: non_empty(&scope.environment),
            organization: non_empty(&scope.organization),
            page: Some(1),
            page_size: Some(pages::PAGE_SIZE),
        };
        Some(state.audit(&who.caller, key, params).await)
    };
    let params = scope.params();
    let forced = state.forced_variants(&who.caller, &params, key);
    let history = async {
        if !who.may(Right::ResultsRead) {
            return None;
        }
        Some(
            state
                .evaluation_history(&who.caller, scope.params(), key)
                .await,
        )
    };
    let deliveries = async {
        if !who.may(Right::WebhooksManage) {
            return None;
        }
        let page = PageParams {
            page: Some(1),
            page_size: Some(pages::PAGE_SIZE),
        };
        Some(
            state
                .experiment_deliveries(&who.caller, scope.params(), key, page)
                .await,
        )
    };
    let (results, audit, forced, history, deliveries) =
        tokio::join!(results, audit, forced, history, deliveries);
    let url = experiment_url(key, scope);
    let view = pages::ExperimentView {
        experiment: &e,
        results: results.as_ref(),
        audit: audit.as_ref(),
        forced: &forced,
        history: history.as_ref(),
        deliveries: deliveries.as_ref(),
        problem,
        url: &url,
    };
    html(status, pages::experiment(who, &view))
}

/// A change form: its CSRF token and its own fields.
#[derive(Debug, Deserialize)]
struct Change<T> {
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

/// A form without fields of its own (sign-out).
#[derive(Debug, Deserialize)]
struct NoFields {}

/// The caller who posted a form and the form's own fields, once the form is read and its
/// CSRF token is this sign-in's.
async fn checked_form<T>(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<Change<T>>, FormRejection>,
) -> Result<(SignedIn, T), Refused> {
    let form = fields(form)?;
    let who = signed_in(state, headers).await?;
    check_csrf(state, &who, &form.csrf)?;
    Ok((who, form.fields))
}

/// The parts of a page's request, once every check passed: the caller (holding `right`)
/// and the page's scope.
async fn page_request(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    right: Right,
) -> Result<(SignedIn, ScopeQuery), Refused> {
    let scope = query(scope)?;
    let who = signed_in(state, headers).await?;
    require(&who, right)?;
    Ok((who, scope))
}

/// The parts of a change form's request, once every check passed: the caller (its CSRF
/// token matching, holding `right`), the page's scope, the form's own fields.
async fn change<T>(
    state: &AppState,
    headers: &HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    form: Result<Form<Change<T>>, FormRejection>,
    right: Right,
) -> Result<(SignedIn, ScopeQuery, T), Refused> {
    let scope = query(scope)?;
    let (who, fields) = checked_form(state, headers, form).await?;
    require(&who, right)?;
    Ok((who, scope, fields))
}

/// After a change: back to the experiment's page, or the page with why it was refused.
async fn changed<T>(
    state: &AppState,
    who: &SignedIn,
    key: &str,
    scope: &ScopeQuery,
    outcome: Result<T, AppError>,
) -> Response {
    match outcome {
        Ok(_) => redirect(&experiment_url(key, scope)),
        Err(e) => {
            let status = crate::error::status(e.code);
            experiment_page(state, who, key, scope, status, Some(&e)).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusForm {
    status: String,
}

async fn set_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    form: Result<Form<Change<StatusForm>>, FormRejection>,
) -> Response {
    let (who, scope, form) =
        match change(&state, &headers, scope, form, Right::ExperimentsWrite).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    let outcome = state
        .set_status(&who.caller, &scope.params(), &key, &form.status)
        .await;
    changed(&state, &who, &key, &scope, outcome).await
}

#[derive(Debug, Deserialize)]
struct WinnerForm {
    variant: String,
    #[serde(default)]
    reason: String,
}

async fn set_winner(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    form: Result<Form<Change<WinnerForm>>, FormRejection>,
) -> Response {
    let (who, scope, form) =
        match change(&state, &headers, scope, form, Right::ExperimentsDecide).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    let body = WinnerOverride {
        variant: form.variant,
        complete: true,
        reason: non_empty(&form.reason),
    };
    let outcome = state
        .override_winner(&who.caller, &scope.params(), &key, body)
        .await;
    changed(&state, &who, &key, &scope, outcome).await
}
