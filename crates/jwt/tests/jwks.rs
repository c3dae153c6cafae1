//! The key set over HTTP: caching, rotation, the refetch rate limit, an unreachable
//! identity provider.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{JwksServer, Signer, dead_url, jwks, with_url};
use verdict_jwt::{JwtErrorCode, JwtVerifier};

async fn verifier(settings: &verdict_config::JwtSettings) -> JwtVerifier {
    JwtVerifier::new(settings)
        .await
        .expect("usable settings")
        .expect("JWT is on")
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_cost_one_fetch_per_interval() {
    let old = Signer::rs256("key-1");
    let server = JwksServer::start(jwks(&[&old])).await;
    let mut s = with_url(&server.url);
    s.jwks_min_refresh_seconds = 1;
    let v = verifier(&s).await;
    assert_eq!(server.hits(), 1, "fetched at start");
    v.verify(&old.token()).await.expect("old key");

    // The identity provider rotates to a new key with a new kid.
    let new = Signer::ed25519("key-2");
    server.serve(jwks(&[&new]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens: Vec<String> = (0..20).map(|_| new.token()).collect();
    let results = futures_join(&v, &tokens).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.hits(), 2, "one fetch for the whole burst");

    // The old key left the set: its tokens are refused now.
    let err = v.verify(&old.token()).await.expect_err("old key gone");
    assert_eq!(err.code, JwtErrorCode::UnknownKey, "{err}");

    // A burst of made-up kids within the interval: refused without fetching again.
    let hits = server.hits();
    for i in 0..20 {
        let err = v
            .verify(&Signer::ed25519(&format!("made-up-{i}")).token())
            .await
            .expect_err("unknown kid");
        assert_eq!(err.code, JwtErrorCode::UnknownKey, "{err}");
    }
    assert!(
        server.hits() <= hits + 1,
        "{} fetches",
        server.hits() - hits
    );

    // After the interval, an unknown kid may cause one more fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = server.hits();
    let err = v
        .verify(&Signer::ed25519("made-up-late").token())
        .await
        .expect_err("unknown kid");
    assert_eq!(err.code, JwtErrorCode::UnknownKey);
    assert_eq!(server.hits(), before + 1);
    v.verify(&new.token()).await.expect("known key, no fetch");
    assert_eq!(server.hits(), before + 1);
}

async fn futures_join(
    v: &JwtVerifier,
    tokens: &[String],
) -> Vec<Result<verdict_jwt::TokenClaims, verdict_jwt::JwtError>> {
    let mut tasks = Vec::new();
    for token in tokens {
        let v = v.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

#[tokio::test]
async fn a_key_set_older_than_its_maximum_age_is_fetched_again() {
    let key = Signer::es256("ec-1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let mut s = with_url(&server.url);
    s.jwks_min_refresh_seconds = 1;
    s.jwks_max_age_seconds = 1;
    let v = verifier(&s).await;
    v.verify(&key.token()).await.expect("accepted");
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&key.token()).await.expect("accepted");
    assert_eq!(server.hits(), 2, "the stale set was fetched again");

    // A failed refresh of a stale set keeps the cached keys.
    server.fail_with(StatusCode::INTERNAL_SERVER_ERROR);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&key.token()).await.expect("cached key still used");
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn an_unreachable_jwks_without_a_cached_key_makes_keys_unavailable() {
    let mut s = with_url(&dead_url().await);
    s.jwks_min_refresh_seconds = 1;
    let v = verifier(&s).await;
    let err = v
        .verify(&Signer::rs256("rsa-1").token())
        .await
        .expect_err("no keys");
    assert_eq!(err.code, JwtErrorCode::KeysUnavailable, "{err}");
    assert!(err.code.is_unavailable());
    assert_eq!(err.code.as_str(), "token_keys_unavailable");
}

#[tokio::test]
async fn a_failing_jwks_refuses_new_kids_as_unavailable_then_recovers() {
    let first = Signer::ed25519("ed-1");
    let server = JwksServer::start(jwks(&[&first])).await;
    let mut s = with_url(&server.url);
    s.jwks_min_refresh_seconds = 1;
    let v = verifier(&s).await;

    server.fail_with(StatusCode::SERVICE_UNAVAILABLE);
    let second = Signer::ed25519("ed-2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = v.verify(&second.token()).await.expect_err("cannot fetch");
    assert_eq!(err.code, JwtErrorCode::KeysUnavailable, "{err}");
    assert!(err.message.contains("503"), "{}", err.message);
    // The cached key keeps working meanwhile.
    v.verify(&first.token()).await.expect("cached key");

    server.serve(jwks(&[&first, &second]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&second.token())
        .await
        .expect("fetched after recovery");
}

#[tokio::test]
async fn a_response_that_is_not_a_key_set_makes_keys_unavailable() {
    let server = JwksServer::start(serde_json::json!({"issuer": "not a jwks"})).await;
    let v = verifier(&with_url(&server.url)).await;
    let err = v
        .verify(&Signer::es256("ec-1").token())
        .await
        .expect_err("no keys");
    assert_eq!(err.code, JwtErrorCode::KeysUnavailable, "{err}");
}
