//! Rights and roles over HTTP: every route × every built-in role, generated from the route
//! table the server checks; the right is checked before the body is read; a key grants only
//! rights its creator holds; and tenancy: an organization's callers are served its own and
//! the environment's global experiments.

mod common;

use common::{ab_experiment, error_code, spawn_app, variant_row};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use verdict_api::rights::RouteRights;
use verdict_domain::{RoleBook, rights::BUILTIN_ROLES};

/// Routes that take no credential: health, metrics and the API document.
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
];

/// A concrete path for a route template: every parameter gets a value naming nothing that
/// exists (a job name must exist to be checked further, so `{job}` is `aggregate`).
fn concrete(template: &str) -> String {
    template
        .replace("{job}", "aggregate")
        .replace("{env}", "production")
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "no-such-thing"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_allows_exactly_the_roles_holding_its_right() {
    let app = spawn_app().await;
    let doc = verdict_api::startup::document();
    let table = RouteRights::of(&doc).expect("every route declares a right");

    // Every documented operation is either public or in the table: a new route without a
    // declared right fails here.
    for (path, item) in &doc.paths.paths {
        for (method, _) in verdict_api::rights::operations(item) {
            let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
            let declared = table.get(&method, path).is_some();
            assert!(
                public ^ declared,
                "{method} {path}: public {public}, declares a right {declared}"
            );
        }
    }

    let book = RoleBook::default();
    let mut keys = Vec::new();
    for (role, _) in BUILTIN_ROLES {
        keys.push((*role, app.create_key(&[role]).await));
    }
    let mut routes: Vec<_> = table.iter().collect();
    routes.sort_by_key(|(m, p, _)| (p.to_string(), m.to_string()));
    let mut checked = 0;
    for (method, template, requirement) in routes {
        let path = concrete(template);
        for (role, key) in &keys {
            let allowed = book.rights_of(role).unwrap().contains(requirement.right);
            // An invalid body: a denied caller must not learn that it is invalid.
            let mut req = app
                .client
                .request(
                    Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                    app.url(&path),
                )
                .bearer_auth(key);
            if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
                req = req
                    .header("content-type", "application/json")
                    .body("{\"not\": \"valid\"");
            }
            let response = req.send().await.expect("request reaches the server");
            // A push route the caller may use answers with a stream that stays open: its
            // status is the answer, its body is never read.
            let streams = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let (status, body) = if streams {
                (response.status(), Value::Null)
            } else {
                common::parts(response).await
            };
            if allowed {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} holds {} for {method} {template}, got {status}: {body}",
                    requirement.right
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} lacks {} for {method} {template}: {body}",
                    requirement.right
                );
                assert_eq!(error_code(&body), "forbidden");
                assert_eq!(
                    body["error"]["details"][0]["missing_right"],
                    requirement.right.as_str(),
                    "{body}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, table.iter().count() * BUILTIN_ROLES.len());
}

#[tokio::test]
async fn the_document_names_each_operations_right() {
    let doc = verdict_api::startup::document();
    let create = doc.paths.paths["/v1/experiments"].post.as_ref().unwrap();
    let description = create.description.as_deref().unwrap();
    assert!(
        description.starts_with(
            "Requires the right `experiments:write` (built-in roles: admin, experimenter)."
        ),
        "{description}"
    );
    let security = serde_json::to_value(&create.security).unwrap();
    assert_eq!(security, json!([{"bearer": ["experiments:write"]}]));

    // The table the server checks, read back from the same document.
    let rights = RouteRights::of(&doc).unwrap_or_else(|p| panic!("{p:#?}"));
    let ws = rights.get(&Method::GET, "/v1/ws").unwrap();
    assert_eq!(ws.right.as_str(), "results:read");
    assert!(
        ws.query_token,
        "a WebSocket may send its credential as ?token="
    );
    let create = rights.get(&Method::POST, "/v1/experiments").unwrap();
    assert_eq!(create.right.as_str(), "experiments:write");
    assert!(!create.query_token);
    let head = rights.get(&Method::HEAD, "/v1/experiments/{key}").unwrap();
    assert_eq!(
        head.right.as_str(),
        "experiments:read",
        "HEAD needs what GET needs"
    );
    assert!(rights.get(&Method::GET, "/healthz").is_none());
}

#[tokio::test]
async fn keys_carry_roles_and_grant_only_what_their_creator_holds() {
    let app = spawn_app().await;
    // Keys made with `scopes` (the original field) get the roles of the same names.
    let (status, created) = app
        .post_json(
            "/v1/api-keys",
            &app.admin_key,
            &json!({"name": "legacy", "scopes": ["client"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["roles"], json!(["client"]));

    let (status, body) = app
        .post_json(
            "/v1/api-keys",
            &app.admin_key,
            &json!({"name": "typo", "roles": ["viewr", "client"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "roles[0]");

    // A caller with keys:manage but not every right cannot mint an admin key.
    let app = common::spawn_app_with(&[(
        "VERDICT_AUTH__ROLES__KEYMANAGER",
        "keys:manage,results:read",
    )])
    .await;
    let manager = app.create_key(&["keymanager"]).await;
    let (status, body) = app
        .post_json(
            "/v1/api-keys",
            &manager,
            &json!({"name": "escalate", "roles": ["admin"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["details"][0]["missing_right"].is_string());
    let (status, body) = app
        .post_json(
            "/v1/api-keys",
            &manager,
            &json!({"name": "reader", "roles": ["keymanager"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A key of organization `org` with `roles`.
async fn org_key(app: &common::TestApp, org: &str, roles: &[&str]) -> String {
    let (status, body) = app
        .post_json(
            "/v1/api-keys",
            &app.admin_key,
            &json!({"name": format!("{org} key"), "roles": roles, "organization": org}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// Create `body` as an experiment of `organization` (none: global) and start it.
async fn running(app: &common::TestApp, organization: Option<&str>, body: Value) -> Value {
    let query = organization
        .map(|o| format!("?organization={o}"))
        .unwrap_or_default();
    let (status, created) = app
        .post_json(&format!("/v1/experiments{query}"), &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, started) = app
        .post_json(
            &format!("/v1/experiments/{id}/status{query}"),
            &app.admin_key,
            &json!({"status": "running"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    created
}

#[tokio::test]
async fn an_organization_is_served_its_own_and_the_global_experiments() {
    let app = spawn_app().await;
    let global_only = running(&app, None, ab_experiment("global-banner")).await;
    let global_clash = running(&app, None, ab_experiment("checkout")).await;
    let own_clash = running(&app, Some("acme"), ab_experiment("checkout")).await;
    running(&app, Some("globex"), ab_experiment("globex-only")).await;
    let acme = org_key(&app, "acme", &["client"]).await;

    // Single assignment: the global experiment, and the organization's own on a key clash
    // (the global one stays reachable by its id).
    let (status, a) = app.assignment("global-banner", &acme, "u1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["experiment"], "global-banner");
    assert!(a["in_experiment"].as_bool().unwrap());
    let (status, _) = app.assignment("globex-only", &acme, "u1", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organization's");
    let stored_for = |id: &Value| {
        let store = app.store.clone();
        let id = id.as_str().unwrap().to_owned();
        async move {
            store
                .subject_state(&id, "acme:u1")
                .await
                .unwrap()
                .assignment
        }
    };
    app.assignment("checkout", &acme, "u1", &[]).await;
    assert!(
        stored_for(&own_clash["id"]).await.is_some(),
        "own wins the clash"
    );
    assert!(stored_for(&global_clash["id"]).await.is_none());
    let global_id = global_clash["id"].as_str().unwrap();
    let (status, by_id) = app.assignment(global_id, &acme, "u1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    assert!(stored_for(&global_clash["id"]).await.is_some());

    // Hashing is on the bare subject id (GrowthBook parity): the organization's subject
    // gets the variant a global caller's subject of the same id gets.
    let global_client = app.create_key(&["client"]).await;
    let (_, bare) = app
        .assignment("global-banner", &global_client, "u1", &[])
        .await;
    assert_eq!(bare["variant"], a["variant"]);
    // ... but they are two subjects.
    assert!(stored_for(&global_only["id"]).await.is_some());
    let global_subject = app
        .store
        .subject_state(global_only["id"].as_str().unwrap(), "u1")
        .await
        .unwrap();
    assert!(global_subject.assignment.is_some());

    // Bulk assignment: own and global, the clash resolved to its own.
    let (status, all) = app
        .post_json("/v1/assignments", &acme, &json!({"subject_id": "u2"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mut served: Vec<&str> = all["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["experiment"].as_str().unwrap())
        .collect();
    served.sort_unstable();
    assert_eq!(served, ["checkout", "global-banner"]);

    // Events and results of a global experiment sent by the organization's app.
    let variant = a["variant"].as_str().unwrap();
    let (status, ingested) = app
        .post_events(
            &acme,
            vec![json!({"experiment": "global-banner", "subject_id": "u1", "event": "purchase"})],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ingested}");
    assert_eq!(ingested["accepted"], 1, "{ingested}");
    app.aggregate().await;
    let (status, results) = app
        .get("/v1/experiments/global-banner/results", &acme)
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(
        variant_row(&results, variant)["conversions"],
        1,
        "{results}"
    );
    let (status, winner) = app.get("/v1/experiments/global-banner/winner", &acme).await;
    assert_eq!(status, StatusCode::OK, "{winner}");

    // An organization reads global experiments but changes only its own.
    let experimenter = org_key(&app, "acme", &["experimenter"]).await;
    let (status, listed) = app.get("/v1/experiments", &experimenter).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["pagination"]["total"], 3,
        "own checkout, global banner and checkout"
    );
    let (status, body) = app
        .post_json(
            &format!("/v1/experiments/{global_id}/status"),
            &experimenter,
            &json!({"status": "paused"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post_json(
            "/v1/experiments/checkout/status",
            &experimenter,
            &json!({"status": "paused"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["experiment"]["id"], own_clash["id"], "{body}");
}

#[tokio::test]
async fn only_scope_any_names_another_organization() {
    let app = spawn_app().await;
    running(&app, Some("acme"), ab_experiment("acme-only")).await;
    let global_client = app.create_key(&["client"]).await;
    let (status, body) = app
        .assignment(
            "acme-only",
            &global_client,
            "u1",
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["details"][0]["missing_right"], "scope:any");
    let (status, body) = app
        .assignment(
            "acme-only",
            &app.admin_key,
            "u1",
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
