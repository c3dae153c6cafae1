//! `/openapi.json` is a valid OpenAPI 3 document listing exactly the routes the server has,
//! and `/docs` renders it.
//!
//! How "exactly" is shown: the router and the document are split from one `OpenApiRouter`
//! built only with `routes!` (see `api/src/startup.rs`), so a route cannot be served without
//! its operation being documented. The tests below check the consequences against the
//! running server: every documented (method, path) is routed, every other method on a
//! documented path is answered 405, the API surface is the one listed here, and no source
//! file of the crate registers a route any other way.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::{error_code, parts, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Every operation the API offers. Adding a route means adding it here too.
const SURFACE: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/api/features/{client_key}"),
    ("GET", "/sub/{client_key}"),
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("POST", "/v1/api-keys"),
    ("GET", "/v1/api-keys"),
    ("GET", "/v1/audit"),
    ("DELETE", "/v1/api-keys/{id}"),
    ("POST", "/v1/environments"),
    ("GET", "/v1/environments"),
    ("GET", "/v1/environments/{env}"),
    ("POST", "/v1/environments/{env}/audiences"),
    ("GET", "/v1/environments/{env}/audiences"),
    ("GET", "/v1/environments/{env}/audiences/{key}"),
    ("PUT", "/v1/environments/{env}/audiences/{key}"),
    ("DELETE", "/v1/environments/{env}/audiences/{key}"),
    ("POST", "/v1/environments/{env}/publish"),
    ("GET", "/v1/environments/{env}/snapshots"),
    ("GET", "/v1/environments/{env}/snapshots/latest"),
    ("GET", "/v1/environments/{env}/snapshots/{version}"),
    ("GET", "/v1/environments/{env}/snapshots/stream"),
    ("POST", "/v1/experiments"),
    ("GET", "/v1/experiments"),
    ("GET", "/v1/experiments/{key}"),
    ("PATCH", "/v1/experiments/{key}"),
    ("DELETE", "/v1/experiments/{key}"),
    ("PUT", "/v1/experiments/{key}/variants"),
    ("POST", "/v1/experiments/{key}/status"),
    ("POST", "/v1/experiments/{key}/activate"),
    ("GET", "/v1/experiments/{key}/winner"),
    ("POST", "/v1/experiments/{key}/winner"),
    ("GET", "/v1/experiments/{key}/forced"),
    ("PUT", "/v1/experiments/{key}/forced/{subject}"),
    ("DELETE", "/v1/experiments/{key}/forced/{subject}"),
    ("GET", "/v1/experiments/{key}/audit"),
    ("GET", "/v1/experiments/{key}/assignment"),
    ("POST", "/v1/experiments/{key}/assignment"),
    ("POST", "/v1/assignments"),
    ("POST", "/v1/events"),
    ("POST", "/v1/experiments/{key}/events"),
    ("GET", "/v1/experiments/{key}/results"),
    ("GET", "/v1/experiments/{key}/timeseries"),
    ("GET", "/v1/experiments/{key}/results/history"),
    ("GET", "/v1/experiments/{key}/webhook-messages"),
    ("GET", "/v1/experiments/{key}/stream"),
    ("GET", "/v1/ws"),
    ("GET", "/metrics"),
    ("POST", "/v1/internal/jobs/{job}/run"),
    ("POST", "/v1/internal/experiments/aggregate/run"),
    ("POST", "/v1/internal/experiments/retention/run"),
    ("GET", "/v1/internal/jobs"),
    ("GET", "/v1/internal/jobs/{job}/runs"),
    ("GET", "/v1/internal/jobs/{job}/runs/{id}"),
    ("POST", "/v1/webhooks/endpoints"),
    ("GET", "/v1/webhooks/endpoints"),
    ("GET", "/v1/webhooks/endpoints/{id}"),
    ("PATCH", "/v1/webhooks/endpoints/{id}"),
    ("DELETE", "/v1/webhooks/endpoints/{id}"),
    ("POST", "/v1/webhooks/endpoints/{id}/enable"),
    ("POST", "/v1/webhooks/endpoints/{id}/disable"),
    ("POST", "/v1/webhooks/endpoints/{id}/rotate-secret"),
    ("GET", "/v1/webhooks/endpoints/{id}/messages"),
    (
        "GET",
        "/v1/webhooks/endpoints/{id}/messages/{msg_id}/attempts",
    ),
    (
        "POST",
        "/v1/webhooks/endpoints/{id}/messages/{msg_id}/redeliver",
    ),
    ("POST", "/v1/webhooks/endpoints/{id}/recover"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// Routes that need no API key.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

async fn fetch_document(app: &common::TestApp) -> (String, Value) {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let text = response.text().await.expect("body");
    let value: Value = serde_json::from_str(&text).expect("/openapi.json is JSON");
    (text, value)
}

/// (METHOD, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths object") {
        for (method, _) in item.as_object().expect("path item object") {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// A concrete URL path for a template: `{name}` → `probe-name`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!("probe-{name}"),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `"$ref"` string anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_json_is_a_valid_openapi_3_document() {
    let app = spawn_app().await;
    let (text, doc) = fetch_document(&app).await;

    // An independent parser (oas3) accepts the document's structure…
    let spec =
        oas3::from_json(&text).expect("oas3 parses /openapi.json as an OpenAPI 3.1 document");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!(version.major, 3);
    assert!(spec.openapi.starts_with("3."), "openapi = {}", spec.openapi);
    assert_eq!(spec.info.title, "Verdict");
    assert_eq!(spec.operations().count(), SURFACE.len());

    // …every reference resolves…
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    assert!(!all_refs.is_empty());
    for r in &all_refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }

    // …and the bearer scheme and the shared error body are there.
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let codes = doc["components"]["schemas"]["ErrorObject"]["properties"]["code"]["enum"]
        .as_array()
        .expect("the error code enum");
    for code in ["route_not_found", "validation_failed", "store_unavailable"] {
        assert!(codes.iter().any(|c| c == code), "{code} missing");
    }
}

#[tokio::test]
async fn every_operation_is_fully_described() {
    let app = spawn_app().await;
    let (_, doc) = fetch_document(&app).await;
    let mut operation_ids = HashSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let name = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: operationId '{id}' twice"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: no summary"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2') || s == "101"),
            "{name}: no success response"
        );
        for (status, response) in responses {
            if status.starts_with('2') && status != "204" {
                assert!(
                    response["content"].is_object(),
                    "{name}: {status} has no schema"
                );
            }
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                // OFREP's own evaluation errors have the protocol's shape; its 401, 403
                // and the rest are the API's.
                let ofrep_error =
                    path.starts_with("/ofrep/") && ["400", "404"].contains(&status.as_str());
                let expected = if ofrep_error {
                    "OfrepError"
                } else {
                    "ErrorBody"
                };
                assert_eq!(
                    schema,
                    &format!("#/components/schemas/{expected}"),
                    "{name}: {status} is not an {expected}"
                );
            }
        }
        // Path parameters are declared.
        let declared: HashSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_template: HashSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_template, "{name}: path parameters");
        // Authenticated routes: the bearer scheme with one right, the right at the head of
        // the description, 401 and 403.
        if PUBLIC.contains(&path.as_str()) {
            assert!(op.get("security").is_none(), "{name} asks for a key");
            continue;
        }
        let right = op["security"][0]["bearer"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no bearer security with a right"));
        assert!(
            verdict_domain::Right::parse(right).is_some(),
            "{name}: {right}"
        );
        let description = op["description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with(&format!("Requires the right `{right}` (built-in roles: ")),
            "{name}: the description does not start with its right: {description}"
        );
        for status in ["401", "403", "500", "503"] {
            assert!(responses.contains_key(status), "{name}: no {status}");
        }
    }
}

#[tokio::test]
async fn the_document_lists_every_route_of_the_api() {
    let app = spawn_app().await;
    let (_, doc) = fetch_document(&app).await;
    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> = SURFACE
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes not in SURFACE: {extra:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_on_its_path() {
    let app = spawn_app().await;
    let (_, doc) = fetch_document(&app).await;
    let documented = operations(&doc);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let url = app.url(&concrete(path));
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            // No API key: a routed operation answers (401 but for the public routes), the router never
            // 404s.
            let response = app
                .client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .expect("request reaches the server");
            let (status, body) = parts(response).await;
            let name = format!("{method} {path}");
            if documented.contains(&(method.to_owned(), path.clone())) {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} is documented but not routed"
                );
                if status == StatusCode::NOT_FOUND {
                    assert_ne!(
                        error_code(&body),
                        "route_not_found",
                        "{name} is documented but not routed"
                    );
                }
                // The SDK routes take their client key in the path: a
                // made-up one is refused.
                if ["/v1/", "/api/", "/ofrep/", "/sub/"]
                    .iter()
                    .any(|p| path.starts_with(p))
                {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
                } else {
                    assert_eq!(status, StatusCode::OK, "{name}");
                }
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} is routed but not documented: {body}"
                );
                assert_eq!(error_code(&body), "method_not_allowed");
            }
        }
    }
}

/// Routes enter the router only through `routes!`, which documents them: no source file of
/// the crate may call axum's undocumented registration methods, except where pages rather
/// than API operations are served: the console's pages (`console/`, merged in by
/// `startup.rs`) and the files of the `/docs` page.
#[test]
fn routes_are_registered_only_through_the_documenting_macro() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            checked += 1;
            let text = std::fs::read_to_string(&path).expect("read source");
            let relative = path.to_string_lossy().replace('\\', "/");
            // The console's pages are not API: its modules route them directly.
            let allowed: &[&str] = if relative.contains("src/console/") {
                &[".route(", ".merge("]
            } else if relative.ends_with("src/routes/docs.rs") {
                &[".route(\"/docs/{file}\""]
            } else if relative.ends_with("src/startup.rs") {
                &[".merge(crate::console::routes())"]
            } else {
                &[]
            };
            let text = allowed
                .iter()
                .fold(text, |text, call| text.replace(call, "<allowed>"));
            for call in [".route(", ".route_service(", ".nest_service(", ".merge("] {
                assert!(
                    !text.contains(call),
                    "{} calls `{call}`: register routes with `.routes(routes!(…))` so they \
                     are documented",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 5, "found only {checked} source files");
}

#[tokio::test]
async fn docs_page_renders_the_document() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/docs"))
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.expect("body");
    assert!(html.contains("<html"), "{html}");
    assert!(html.contains("<base href=\"/docs/\">"), "{html}");
    // Every script and stylesheet the page names is one of its own files, served here.
    let mut files = 0;
    for reference in html
        .split(['"', '\''])
        .filter(|s| s.ends_with(".js") || s.ends_with(".css"))
    {
        assert!(
            !reference.contains("//"),
            "the page loads {reference} from another host"
        );
        let file = reference.trim_start_matches("./");
        let (status, _) = fetch(&app, &format!("/docs/{file}")).await;
        assert_eq!(status, StatusCode::OK, "/docs/{file}");
        files += 1;
    }
    assert!(
        files >= 3,
        "the page names only {files} scripts and stylesheets: {html}"
    );
    // The renderer is set to the document served here, with no outside validator.
    let (_, initializer) = fetch(&app, "/docs/swagger-initializer.js").await;
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    assert!(
        initializer.contains("\"validatorUrl\": \"none\""),
        "{initializer}"
    );
    let (status, _) = fetch(&app, "/docs/no-such-file.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Status and text of `GET path`.
async fn fetch(app: &common::TestApp, path: &str) -> (StatusCode, String) {
    let response = app
        .client
        .get(app.url(path))
        .send()
        .await
        .expect("request reaches the server");
    let status = response.status();
    (status, response.text().await.expect("body"))
}
