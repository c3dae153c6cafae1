//! API keys (right `keys:manage`):
//!
//! - `GET /admin/api-keys[?page=]`: every key (revoked ones included, never a plaintext),
//!   and the new-key form;
//! - `POST /admin/api-keys`: create one; the answer shows its plaintext, once;
//! - `POST /admin/api-keys/{id}/revoke`: revoke one (refused from then on; a console
//!   sign-in with it ends).
//!
//! The forms post to the use-cases the API keys API calls: a key may only be given rights
//! its creator holds, and a refused form comes back with each problem next to its field.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form as Posted, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use verdict_app::Paginated;
use verdict_app::keys::NewApiKey;
use verdict_domain::{ApiKey, Right};

use super::definition::submit;
use super::form::{self, Form, Input, Kind};
use super::pages::{flat_form, layout, when};
use super::{
    Change, NoFields, PageQuery, ScopeQuery, SignedIn, change, html as page, list_request, redirect,
};
use crate::state::AppState;

const PAGE: &str = "/admin/api-keys";
/// Keys a page lists.
const PAGE_SIZE: u32 = 50;

pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(PAGE, get(list).post(create))
        .route("/admin/api-keys/{id}/revoke", post(revoke))
}

fn new_form() -> Form {
    Form::new(vec![
        Input::new("name", "Name", Kind::Text).hint("what the key is for, e.g. checkout-service"),
        Input::new("roles", "Roles", Kind::List).hint(
            "comma-separated: viewer, experimenter, operator, admin, client, internal, or a configured role",
        ),
        Input::new("environment", "Environment", Kind::Text).hint("defaults to yours"),
        Input::new("organization", "Organization", Kind::Text)
            .hint("blank: every organization of the environment"),
    ])
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    paging: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let (who, _, page_number) =
        match list_request(&state, &headers, scope, paging, Right::KeysManage).await {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
    list_response(&state, &who, page_number, None).await
}

/// The keys page; `form` is a new-key form that came back with problems.
async fn list_response(
    state: &AppState,
    who: &SignedIn,
    page_number: Option<u32>,
    form: Option<Form>,
) -> Response {
    let read = |paging| state.list_api_keys(paging);
    let draw = |listed: &Paginated<ApiKey>, form: &Form| list_page(who, listed, form);
    super::list_with_form(who, page_number, PAGE_SIZE, read, form, new_form, draw).await
}

fn list_page(who: &SignedIn, listed: &Paginated<ApiKey>, form: &Form) -> Markup {
    layout(
        "API keys",
        Some(who),
        html! {
            h1 { "API keys" }
            table.keys {
                thead { tr {
                    th { "Name" } th { "Prefix" } th { "Roles" } th { "Environment" }
                    th { "Organization" } th { "Created" } th { "Revoked" } th {}
                } }
                tbody {
                    @for k in &listed.data {
                        tr data-key=(k.id) {
                            td { (k.name) } td { code { (k.prefix) "…" } } td { (k.roles.join(", ")) }
                            td { (k.environment) } td { (k.organization.as_deref().unwrap_or("—")) }
                            td { (when(Some(k.created_at))) } td.revoked { (when(k.revoked_at)) }
                            td {
                                @if k.revoked_at.is_none() {
                                    form method="post" action=(format!("/admin/api-keys/{}/revoke", percent_encoding::utf8_percent_encode(&k.id, percent_encoding::NON_ALPHANUMERIC))) {
                                        input type="hidden" name="csrf" value=(who.csrf);
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (super::pages::pager(listed.pagination, PAGE, "keys"))
            h2 { "New API key" }
            p.hint { "A key may only be given rights you hold. Its plaintext is shown once, when it is created; only its hash is kept." }
            (flat_form(who, "new-key", PAGE, None, form, "Create the key"))
        },
    )
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<form::Posted>>, FormRejection>,
) -> Response {
    let (who, _, posted) = match change(&state, &headers, scope, posted, Right::KeysManage).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let mut form = new_form();
    let create = |body: NewApiKey| state.create_api_key(&who.caller, body);
    match submit(&mut form, &posted, create).await {
        Some(created) => page(
            StatusCode::CREATED,
            super::pages::shown_once(
                &who,
                "API key created",
                html! {
                    "The key " strong { (created.api_key.name) } " (" (created.api_key.roles.join(", "))
                    ") in " (created.api_key.environment) "."
                },
                &created.key,
                (PAGE, "To the API keys"),
            ),
        ),
        None => list_response(&state, &who, None, Some(form)).await,
    }
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<Query<ScopeQuery>, QueryRejection>,
    posted: Result<Posted<Change<NoFields>>, FormRejection>,
) -> Response {
    let (who, _, _) = match change(&state, &headers, scope, posted, Right::KeysManage).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    match state.revoke_api_key(&who.caller, &id).await {
        Ok(()) => redirect(PAGE),
        Err(e) => super::error_page(Some(&who), &e),
    }
}
