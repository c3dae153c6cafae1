//! Which right each route requires, and the middleware that checks it before anything else
//! of the request is read.
//!
//! Each route declares its right once, in its OpenAPI annotation:
//! `security(("bearer" = ["experiments:write"]))`. [`RouteRights::of`] reads them back from
//! the generated document, so the document and the check cannot disagree; an operation with
//! no `security` is public (health, metrics, the document itself). [`authorize`] runs after
//! routing and before the handler's extractors: it authenticates the caller, refuses a
//! caller lacking the route's right (403 `forbidden`, naming the right), and hands the
//! [`Caller`] to the handler through the request's extensions. So a caller without the right
//! learns nothing from a request body it may not send.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use verdict_app::{Caller, ErrorCode};
use verdict_domain::Right;

use crate::error::ApiError;
use crate::extract::check_utf8_query;
use crate::state::AppState;

/// The security scheme every protected operation names.
pub const SCHEME: &str = "bearer";

/// What one route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub right: Right,
    /// The route also takes the credential as `?token=` (browsers cannot set headers on a
    /// WebSocket).
    pub query_token: bool,
}

/// The right of every protected route, by route template then method (looked up per
/// request without allocating).
#[derive(Debug, Clone, Default)]
pub struct RouteRights {
    routes: HashMap<String, Vec<(Method, Requirement)>>,
}

impl RouteRights {
    /// The rights the document's operations declare. Errors name every operation whose
    /// declaration is unusable (no right, several, or an unknown name).
    pub fn of(doc: &utoipa::openapi::OpenApi) -> Result<Self, Vec<String>> {
        let mut routes: HashMap<String, Vec<(Method, Requirement)>> = HashMap::new();
        let mut problems = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in operations(item) {
                let Some(security) = &op.security else {
                    continue;
                };
                let declared: Vec<String> = security
                    .iter()
                    .filter_map(|req| {
                        serde_json::to_value(req)
                            .ok()?
                            .get(SCHEME)?
                            .as_array()
                            .cloned()
                    })
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                let right = match declared.as_slice() {
                    [one] => Right::parse(one),
                    _ => None,
                };
                let Some(right) = right else {
                    problems.push(format!(
                        "{method} {path}: declare exactly one known right in \
                         security((\"{SCHEME}\" = [\"…\"])), found {declared:?}"
                    ));
                    continue;
                };
                let query_token = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name == "token" && p.parameter_in == ParameterIn::Query);
                let requirement = Requirement { right, query_token };
                routes
                    .entry(path.clone())
                    .or_default()
                    .push((method, requirement));
            }
        }
        if problems.is_empty() {
            Ok(Self { routes })
        } else {
            Err(problems)
        }
    }

    /// What `method` on the route template `path` requires; `None` for a public route.
    /// `HEAD` is answered by the `GET` route, so it requires what `GET` does.
    pub fn get(&self, method: &Method, path: &str) -> Option<Requirement> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.routes
            .get(path)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, r)| *r)
    }

    /// Every protected route: method, template, requirement.
    pub fn iter(&self) -> impl Iterator<Item = (&Method, &str, Requirement)> {
        self.routes
            .iter()
            .flat_map(|(p, methods)| methods.iter().map(move |(m, r)| (m, p.as_str(), *r)))
    }
}

/// Each operation of `item` with its method.
pub fn operations(item: &PathItem) -> impl Iterator<Item = (Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::OPTIONS, &item.options),
        (Method::HEAD, &item.head),
        (Method::PATCH, &item.patch),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
}

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
/// allows it, its `?token=`.
fn credential(req: &Request, required: Requirement) -> Result<String, ApiError> {
    let token = match req.headers().get(AUTHORIZATION) {
        Some(value) => Some(crate::extract::bearer_value(value).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the Authorization header must be 'Bearer <credential>'",
            )
        })?),
        None if required.query_token => query_token(req)?,
        None => None,
    };
    token.ok_or_else(|| {
        let how = if required.query_token {
            "send 'Authorization: Bearer <credential>' or ?token=<credential>"
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

/// `?token=` of the request's query, percent-decoded.
fn query_token(req: &Request) -> Result<Option<String>, ApiError> {
    let query = req.uri().query().unwrap_or("");
    check_utf8_query(query)?;
    Ok(form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protected_operation_declares_one_known_right() {
        let doc = crate::startup::document();
        let rights = RouteRights::of(&doc).unwrap_or_else(|p| panic!("{p:#?}"));
        assert!(rights.iter().count() >= 40);
        let ws = rights.get(&Method::GET, "/v1/ws").unwrap();
        assert_eq!(ws.right, Right::ResultsRead);
        assert!(ws.query_token);
        let create = rights.get(&Method::POST, "/v1/experiments").unwrap();
        assert_eq!(create.right, Right::ExperimentsWrite);
        assert!(!create.query_token);
        assert_eq!(
            rights
                .get(&Method::HEAD, "/v1/experiments/{key}")
                .unwrap()
                .right,
            Right::ExperimentsRead
        );
        assert!(rights.get(&Method::GET, "/healthz").is_none());
    }
}
