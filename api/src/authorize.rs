//! The middleware that checks each route's right ([`crate::rights`]) before anything else of
//! the request is read: it runs after routing and before the handler's extractors,
//! authenticates the caller, refuses a caller lacking the route's right (403 `forbidden`,
//! naming the right), and hands the [`Caller`] to the handler through the request's
//! extensions. So a caller without the right learns nothing from a request body it may not
//! send.

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use verdict_app::{Caller, ErrorCode};
use verdict_domain::Right;

use crate::error::ApiError;
use crate::rights::Requirement;
use crate::state::AppState;

/// The middleware: authenticate, check the route's right, pass the [`Caller`] on.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>() else {
        return next.run(req).await;
    };
    let Some(required) = state.rights.get(req.method(), route.as_str()) else {
        return next.run(req).await;
    };
    // Read what is needed from the request before awaiting (a body is not `Sync`).
    let token = match credential(&req, required) {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    match authenticate(&state, &token, required.right).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The credential `req` presents: its `Authorization: Bearer` header or, where the route
/// allows it, its `?token=`, its `{client_key}` path segment or its `X-API-Key` header.
fn credential(req: &Request, required: Requirement) -> Result<String, ApiError> {
    let token = match req.headers().get(AUTHORIZATION) {
        Some(value) => Some(bearer_value(value).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the Authorization header must be 'Bearer <credential>'",
            )
        })?),
        None if required.query_token => query_token(req),
        None if required.path_key => path_key(req),
        None if required.api_key_header => req
            .headers()
            .get(crate::rights::API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned),
        None => None,
    };
    token.ok_or_else(|| {
        let how = if required.query_token {
            "send 'Authorization: Bearer <credential>' or ?token=<credential>"
        } else if required.api_key_header {
            "send 'Authorization: Bearer <credential>' or 'X-API-Key: <credential>'"
        } else {
            "send 'Authorization: Bearer <credential>' (an API key or a token)"
        };
        ApiError::new(ErrorCode::Unauthorized, how)
    })
}

/// The caller `token` authenticates, if it holds `right`.
async fn authenticate(state: &AppState, token: &str, right: Right) -> Result<Caller, ApiError> {
    let caller = state.authenticate(token).await?;
    caller.require(right)?;
    Ok(caller)
}

/// The credential of an `Authorization: Bearer <credential>` header value, if well-formed.
fn bearer_value(value: &HeaderValue) -> Option<String> {
    let header = value.to_str().ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The last segment of the request's path (a route's `{client_key}`), percent-decoded.
fn path_key(req: &Request) -> Option<String> {
    let segment = req.uri().path().rsplit('/').next()?;
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
        .filter(|s| !s.is_empty())
}

/// `?token=` of the request's query, percent-decoded. (A credential that is not UTF-8
/// matches no key or token; the handler's query extractor refuses such a query anyway.)
fn query_token(req: &Request) -> Option<String> {
    let query = req.uri().query().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}
