//! Which right each route requires.
//!
//! Each route declares its right once, in its OpenAPI annotation:
//! `security(("bearer" = ["experiments:write"]))`. [`RouteRights::of`] reads them back from
//! the generated document, so the document and the check cannot disagree; an operation with
//! no `security` is public (health, metrics, the document itself). The middleware
//! [`crate::authorize`] checks them.

use std::collections::HashMap;

use axum::http::Method;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use verdict_domain::Right;

/// The security scheme every protected operation names.
pub const SCHEME: &str = "bearer";

/// The header a route that declares it takes the credential in (besides `Authorization`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// What one route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub right: Right,
    /// The route also takes the credential as `?token=` (browsers cannot set headers on a
    /// WebSocket).
    pub query_token: bool,
    /// The route takes the credential as its `{client_key}` path segment, as GrowthBook
    /// SDKs send it.
    pub path_key: bool,
    /// The route also takes the credential in an `X-API-Key` header (OFREP's `ApiKeyAuth`).
    pub api_key_header: bool,
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
                // Where else than `Authorization` the operation takes its credential.
                let declares = |name: &str, location: ParameterIn| {
                    op.parameters
                        .iter()
                        .flatten()
                        .any(|p| p.name.eq_ignore_ascii_case(name) && p.parameter_in == location)
                };
                let requirement = Requirement {
                    right,
                    query_token: declares("token", ParameterIn::Query),
                    path_key: declares("client_key", ParameterIn::Path),
                    api_key_header: declares(API_KEY_HEADER, ParameterIn::Header),
                };
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
