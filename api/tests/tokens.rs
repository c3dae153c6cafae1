//! JWT bearer tokens over HTTP, minted by an independent implementation (`jwt-simple`):
//! their roles give rights, their claims the scope; a bad token is 401 with its reason, a
//! token whose key cannot be fetched 503; keys rotate without a restart; the audit log
//! names the token's subject.

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::get;
use common::{ab_experiment, error_code, spawn_app_with};
use jwt_simple::prelude::{
    Claims, Duration, ECDSAP256KeyPairLike, ES256KeyPair, HS256Key, MACLike,
};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

/// A token for `subject` with custom claims, valid for `valid_secs` (negative: expired).
fn claims(
    subject: &str,
    custom: Value,
    valid_secs: i64,
) -> jwt_simple::claims::JWTClaims<Map<String, Value>> {
    let custom: Map<String, Value> = serde_json::from_value(custom).unwrap();
    let mut c = Claims::with_custom_claims(custom, Duration::from_secs(600)).with_subject(subject);
    if valid_secs < 0 {
        let past = jwt_simple::prelude::Clock::now_since_epoch()
            - Duration::from_secs(valid_secs.unsigned_abs());
        c.expires_at = Some(past);
    }
    c
}

fn hs256(subject: &str, custom: Value) -> String {
    HS256Key::from_bytes(SECRET.as_bytes())
        .authenticate(claims(subject, custom, 600))
        .unwrap()
}

#[tokio::test]
async fn a_tokens_roles_give_its_rights_and_its_claims_its_scope() {
    let app = spawn_app_with(&[("VERDICT_AUTH__JWT__HS256_SECRET", SECRET)]).await;
    app.create_experiment(&ab_experiment("checkout")).await;

    let viewer = hs256("vera", json!({"roles": ["viewer"]}));
    let (status, body) = app.get("/v1/experiments/checkout", &viewer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post_json("/v1/experiments", &viewer, &ab_experiment("other"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"]["details"][0]["missing_right"],
        "experiments:write"
    );

    // The audit log names the token's subject.
    let experimenter = hs256("erin", json!({"roles": "experimenter"}));
    let (status, body) = app
        .post_json(
            "/v1/experiments/checkout/status",
            &experimenter,
            &json!({"status": "running"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, audit) = app.get("/v1/experiments/checkout/audit", &viewer).await;
    let actors: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&"jwt:erin"), "{audit}");

    // Changes other than experiments' are audited too, with the token's subject.
    let admin = hs256("ada", json!({"roles": ["admin"]}));
    let (status, created) = app
        .post_json(
            "/v1/api-keys",
            &admin,
            &json!({"name": "app", "roles": ["client"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key_id = created["id"].as_str().unwrap();
    let (status, body) = app
        .delete(&format!("/v1/api-keys/{key_id}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, log) = app
        .get(&format!("/v1/audit?subject=api_key:{key_id}"), &admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let entries: Vec<(&str, &str)> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [
            ("key:bootstrap", "api_key.revoked"),
            ("jwt:ada", "api_key.created")
        ]
    );
    // The viewer reads experiments' audit logs, not the deployment's.
    let (status, body) = app
        .get(&format!("/v1/audit?subject=api_key:{key_id}"), &viewer)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["details"][0]["missing_right"], "scope:any");

    // The environment and organization come from the claims.
    let staging = hs256("sam", json!({"roles": ["viewer"], "env": "staging"}));
    let (status, body) = app.get("/v1/experiments/checkout", &staging).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another environment: {body}");
    let acme_app = hs256("app", json!({"roles": ["client"], "org": "acme"}));
    let (status, body) = app.assignment("checkout", &acme_app, "u1", &[]).await;
    assert_eq!(status, StatusCode::OK, "the global experiment: {body}");
    let (_, experiment) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    let stored = app
        .store
        .subject_state(experiment["id"].as_str().unwrap(), "acme:u1")
        .await
        .unwrap();
    assert!(stored.assignment.is_some());
}

#[tokio::test]
async fn bad_tokens_are_401_with_their_reason() {
    let app = spawn_app_with(&[
        ("VERDICT_AUTH__JWT__HS256_SECRET", SECRET),
        ("VERDICT_AUTH__JWT__AUDIENCE", "verdict"),
        ("VERDICT_AUTH__JWT__ISSUER", "https://id.example"),
    ])
    .await;
    let key = HS256Key::from_bytes(SECRET.as_bytes());
    let good = |c: jwt_simple::claims::JWTClaims<Map<String, Value>>| {
        c.with_audience("verdict").with_issuer("https://id.example")
    };
    let ok = key
        .authenticate(good(claims("u", json!({"roles": ["viewer"]}), 600)))
        .unwrap();
    let (status, body) = app.get("/v1/experiments", &ok).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let expired = key
        .authenticate(good(claims("u", json!({"roles": ["viewer"]}), -3600)))
        .unwrap();
    let wrong_audience = key
        .authenticate(
            claims("u", json!({}), 600)
                .with_audience("another-service")
                .with_issuer("https://id.example"),
        )
        .unwrap();
    let wrong_issuer = key
        .authenticate(
            claims("u", json!({}), 600)
                .with_audience("verdict")
                .with_issuer("https://evil.example"),
        )
        .unwrap();
    let other_secret = HS256Key::from_bytes(b"another-secret-of-at-least-32-bytes!!")
        .authenticate(good(claims("u", json!({}), 600)))
        .unwrap();
    // `alg: none`: the same claims, unsigned.
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = ok.split('.').nth(1).unwrap();
    let unsigned = format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "JWT"})));
    for (token, reason) in [
        (expired, "token_expired"),
        (wrong_audience, "token_wrong_audience"),
        (wrong_issuer, "token_wrong_issuer"),
        (other_secret, "token_bad_signature"),
        (unsigned, "token_algorithm_not_allowed"),
    ] {
        let (status, body) = app.get("/v1/experiments", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}: {body}");
        assert_eq!(error_code(&body), "unauthorized");
        assert_eq!(body["error"]["details"][0]["reason"], reason, "{body}");
    }
}

/// A JWKS endpoint whose key set the test swaps, or turns off.
#[derive(Clone, Default)]
struct Jwks(Arc<Mutex<Option<Value>>>);

impl Jwks {
    async fn serve(&self) -> String {
        let shared = self.clone();
        let router = axum::Router::new().route(
            "/jwks.json",
            get(move || {
                let shared = shared.clone();
                async move {
                    match shared.0.lock().unwrap().clone() {
                        Some(set) => (axum::http::StatusCode::OK, set.to_string()),
                        None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    fn set(&self, keys: &[&ES256KeyPair]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| {
                let kid = k.key_id().clone().unwrap();
                serde_json::from_str(&k.public_key().with_key_id(&kid).to_jwk()).unwrap()
            })
            .collect();
        *self.0.lock().unwrap() = Some(json!({ "keys": keys }));
    }
}

#[tokio::test]
async fn keys_rotate_without_a_restart_and_an_unreachable_key_set_is_503() {
    let jwks = Jwks::default();
    let first = ES256KeyPair::generate().with_key_id("k1");
    jwks.set(&[&first]);
    let url = jwks.serve().await;
    let app = spawn_app_with(&[
        ("VERDICT_AUTH__JWT__JWKS_URL", url.as_str()),
        ("VERDICT_AUTH__JWT__JWKS_MIN_REFRESH_SECONDS", "1"),
    ])
    .await;
    let token = |k: &ES256KeyPair| {
        k.sign(claims("ops", json!({"roles": ["operator"]}), 600))
            .unwrap()
    };
    let (status, body) = app.get("/v1/internal/jobs", &token(&first)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The provider rotates to a new key: tokens naming it are accepted once fetched (the
    // key set is fetched again for an unknown kid at most once per second here).
    let second = ES256KeyPair::generate().with_key_id("k2");
    jwks.set(&[&second]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = app.get("/v1/internal/jobs", &token(&second)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The provider is down: a token whose key is not cached cannot be verified: 503,
    // never an accept.
    *jwks.0.lock().unwrap() = None;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let third = ES256KeyPair::generate().with_key_id("k3");
    let (status, body) = app.get("/v1/internal/jobs", &token(&third)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "auth_unavailable");
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "token_keys_unavailable"
    );

    // An HS256 token keyed with anything is refused when only a key set is configured.
    let forged = HS256Key::from_bytes(b"whatever-secret-an-attacker-picks-32b")
        .with_key_id("k2")
        .authenticate(claims("ops", json!({"roles": ["admin"]}), 600))
        .unwrap();
    let (status, body) = app.get("/v1/internal/jobs", &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
