//! Tokens minted by `jwt-simple` (an independent implementation), verified by `verdict-jwt`:
//! every algorithm, every time and audience rule, the attacks, the claim mapping.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{JwksServer, SECRET, Signer, Spec, jwks, settings, with_secret, with_url};
use serde_json::json;
use verdict_jwt::{JwtErrorCode, JwtVerifier, TokenClaims};

async fn verifier(settings: &verdict_config::JwtSettings) -> JwtVerifier {
    JwtVerifier::new(settings)
        .await
        .expect("usable settings")
        .expect("JWT is on")
}

async fn refused(v: &JwtVerifier, token: &str) -> JwtErrorCode {
    match v.verify(token).await {
        Ok(claims) => panic!("accepted: {claims:?}"),
        Err(err) => {
            assert!(!err.message.is_empty());
            err.code
        }
    }
}

#[tokio::test]
async fn jwt_is_off_when_no_secret_and_no_key_set_are_configured() {
    assert!(JwtVerifier::new(&settings()).await.expect("ok").is_none());
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_shared_secret_is_accepted_with_its_claims() {
    let v = verifier(&with_secret()).await;
    let token = Signer::hs256(SECRET.as_bytes()).sign(
        &Spec::default()
            .claim("org", json!("acme"))
            .claim("env", json!(["staging", "production"]))
            .claim("roles", json!("editor")),
    );
    let claims = v.verify(&token).await.expect("accepted");
    assert_eq!(claims.subject, "user-1");
    assert_eq!(claims.organization.as_deref(), Some("acme"));
    assert_eq!(claims.environments, ["staging", "production"]);
    assert_eq!(claims.roles, ["editor"]);
    let exp = claims.expires_at.expect("exp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now + 590..=now + 610).contains(&exp),
        "exp {exp}, now {now}"
    );
}

#[tokio::test]
async fn an_hs256_token_signed_with_another_secret_has_a_bad_signature() {
    let v = verifier(&with_secret()).await;
    let token = Signer::hs256(b"another-secret-of-32-bytes-or-more!!").token();
    assert_eq!(refused(&v, &token).await, JwtErrorCode::BadSignature);
}

async fn accepted_via_jwks(signer: Signer) {
    let server = JwksServer::start(jwks(&[&signer])).await;
    let v = verifier(&with_url(&server.url)).await;
    let claims = v
        .verify(&signer.sign(&Spec::default().claim("roles", json!(["admin"]))))
        .await
        .expect("accepted");
    assert_eq!(claims.subject, "user-1");
    assert_eq!(claims.roles, ["admin"]);
    assert_eq!(server.hits(), 1, "the key set is fetched once and cached");
    v.verify(&signer.token()).await.expect("accepted again");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn an_rs256_token_verifies_with_the_key_from_the_jwks() {
    accepted_via_jwks(Signer::rs256("rsa-1")).await;
}

#[tokio::test]
async fn an_es256_token_verifies_with_the_key_from_the_jwks() {
    accepted_via_jwks(Signer::es256("ec-1")).await;
}

#[tokio::test]
async fn an_eddsa_token_verifies_with_the_key_from_the_jwks() {
    accepted_via_jwks(Signer::ed25519("ed-1")).await;
}

#[tokio::test]
async fn a_token_signed_by_a_key_not_in_the_set_under_a_known_kid_has_a_bad_signature() {
    let published = Signer::es256("ec-1");
    let impostor = Signer::es256("ec-1");
    let server = JwksServer::start(jwks(&[&published])).await;
    let v = verifier(&with_url(&server.url)).await;
    assert_eq!(
        refused(&v, &impostor.token()).await,
        JwtErrorCode::BadSignature
    );
}

#[tokio::test]
async fn the_algorithm_comes_from_the_key_not_from_the_token() {
    // An ES256 token whose kid names an Ed25519 key of the set.
    let ed = Signer::ed25519("shared-kid");
    let server = JwksServer::start(jwks(&[&ed])).await;
    let v = verifier(&with_url(&server.url)).await;
    let es = Signer::es256("shared-kid");
    assert_eq!(
        refused(&v, &es.token()).await,
        JwtErrorCode::AlgorithmNotAllowed
    );
}

#[tokio::test]
async fn expired_tokens_are_refused_beyond_the_leeway_only() {
    let v = verifier(&with_secret()).await;
    let signer = Signer::hs256(SECRET.as_bytes());
    let expired = signer.sign(&Spec {
        expires_in: Some(-120),
        ..Spec::default()
    });
    assert_eq!(refused(&v, &expired).await, JwtErrorCode::Expired);
    let within_leeway = signer.sign(&Spec {
        expires_in: Some(-10),
        ..Spec::default()
    });
    v.verify(&within_leeway)
        .await
        .expect("within the 30 s leeway");
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let v = verifier(&with_secret()).await;
    let token = Signer::hs256(SECRET.as_bytes()).sign(&Spec {
        expires_in: None,
        ..Spec::default()
    });
    assert_eq!(refused(&v, &token).await, JwtErrorCode::MissingClaim);
}

#[tokio::test]
async fn a_token_whose_nbf_is_in_the_future_is_not_yet_valid() {
    let v = verifier(&with_secret()).await;
    let signer = Signer::hs256(SECRET.as_bytes());
    let future = signer.sign(&Spec {
        not_before_in: Some(300),
        ..Spec::default()
    });
    assert_eq!(refused(&v, &future).await, JwtErrorCode::NotYetValid);
    let past = signer.sign(&Spec {
        not_before_in: Some(-5),
        ..Spec::default()
    });
    v.verify(&past).await.expect("nbf in the past");
}

#[tokio::test]
async fn the_audience_must_include_the_configured_one() {
    let mut s = with_secret();
    s.audience = "verdict".into();
    let v = verifier(&s).await;
    let signer = Signer::hs256(SECRET.as_bytes());
    let aud = |a: Option<&str>| {
        signer.sign(&Spec {
            audience: a.map(str::to_owned),
            ..Spec::default()
        })
    };
    v.verify(&aud(Some("verdict")))
        .await
        .expect("right audience");
    assert_eq!(
        refused(&v, &aud(Some("billing"))).await,
        JwtErrorCode::WrongAudience
    );
    assert_eq!(refused(&v, &aud(None)).await, JwtErrorCode::MissingClaim);
}

#[tokio::test]
async fn without_a_configured_audience_the_tokens_audience_is_not_judged() {
    let v = verifier(&with_secret()).await;
    let token = Signer::hs256(SECRET.as_bytes()).sign(&Spec {
        audience: Some("anything".into()),
        ..Spec::default()
    });
    v.verify(&token).await.expect("accepted");
}

#[tokio::test]
async fn the_issuer_must_be_the_configured_one() {
    let mut s = with_secret();
    s.issuer = "https://idp.example".into();
    let v = verifier(&s).await;
    let signer = Signer::hs256(SECRET.as_bytes());
    let iss = |i: Option<&str>| {
        signer.sign(&Spec {
            issuer: i.map(str::to_owned),
            ..Spec::default()
        })
    };
    v.verify(&iss(Some("https://idp.example")))
        .await
        .expect("right issuer");
    assert_eq!(
        refused(&v, &iss(Some("https://evil.example"))).await,
        JwtErrorCode::WrongIssuer
    );
    assert_eq!(refused(&v, &iss(None)).await, JwtErrorCode::MissingClaim);
}

fn unsigned_token(header: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let payload = json!({"sub": "admin", "exp": exp, "roles": ["admin"]});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

#[tokio::test]
async fn unsigned_tokens_are_refused() {
    let signer = Signer::ed25519("ed-1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    let mut s = with_url(&server.url);
    s.hs256_secret = verdict_config::SecretString::from(SECRET.to_owned());
    let v = verifier(&s).await;
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"alg": "none", "kid": "ed-1"}),
    ] {
        let token = unsigned_token(header.clone());
        assert!(verdict_jwt::looks_like_jwt(&token), "{token}");
        assert_eq!(
            refused(&v, &token).await,
            JwtErrorCode::AlgorithmNotAllowed,
            "{header}"
        );
    }
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused() {
    let rsa = Signer::rs256("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa])).await;
    let pem = rsa.rsa_public_pem();
    let forged = match Signer::hs256(pem.as_bytes()) {
        Signer::Hs(key) => Signer::Hs(key.with_key_id("rsa-1")),
        _ => unreachable!(),
    }
    .token();

    // Key set only: HS256 has no key at all.
    let v = verifier(&with_url(&server.url)).await;
    assert_eq!(
        refused(&v, &forged).await,
        JwtErrorCode::AlgorithmNotAllowed
    );

    // Secret and key set: HS256 is checked with the secret only, never the RSA key.
    let mut s = with_url(&server.url);
    s.hs256_secret = verdict_config::SecretString::from(SECRET.to_owned());
    let v = verifier(&s).await;
    assert_eq!(refused(&v, &forged).await, JwtErrorCode::BadSignature);
    // The same verifier still takes genuine tokens of both kinds.
    v.verify(&rsa.token()).await.expect("RS256");
    v.verify(&Signer::hs256(SECRET.as_bytes()).token())
        .await
        .expect("HS256");
}

fn with_segment(token: &str, index: usize, replace: impl Fn(&str) -> String) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[index] = replace(&parts[index]);
    parts.join(".")
}

#[tokio::test]
async fn a_tampered_signature_or_payload_is_a_bad_signature() {
    let signer = Signer::rs256("rsa-1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    let v = verifier(&with_url(&server.url)).await;
    let token = signer.token();
    v.verify(&token).await.expect("genuine");

    let flipped = with_segment(&token, 2, |sig| {
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).expect("base64");
        bytes[10] ^= 0x01;
        URL_SAFE_NO_PAD.encode(bytes)
    });
    assert_eq!(refused(&v, &flipped).await, JwtErrorCode::BadSignature);

    let escalated = with_segment(&token, 1, |payload| {
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
                .expect("json");
        claims["roles"] = json!(["admin"]);
        URL_SAFE_NO_PAD.encode(claims.to_string())
    });
    assert_eq!(refused(&v, &escalated).await, JwtErrorCode::BadSignature);
}

#[tokio::test]
async fn garbage_is_malformed() {
    let v = verifier(&with_secret()).await;
    for token in ["vk_0123", "a.b.c", "e30.e30.e30", "not a token"] {
        assert_eq!(refused(&v, token).await, JwtErrorCode::Malformed, "{token}");
    }
}

#[tokio::test]
async fn claim_names_may_be_dotted_paths_and_values_a_string_or_a_list() {
    let mut s = with_secret();
    s.claims.subject = "preferred_username".into();
    s.claims.organization = "tenant.id".into();
    s.claims.environments = "verdict.env".into();
    s.claims.roles = "realm_access.roles".into();
    let v = verifier(&s).await;
    let token = Signer::hs256(SECRET.as_bytes()).sign(
        &Spec::default()
            .claim("preferred_username", json!("ada"))
            .claim("tenant", json!({"id": "org-9"}))
            .claim("verdict", json!({"env": "production"}))
            .claim("realm_access", json!({"roles": ["admin", "viewer"]})),
    );
    let claims = v.verify(&token).await.expect("accepted");
    assert_eq!(
        TokenClaims {
            expires_at: None,
            ..claims
        },
        TokenClaims {
            subject: "ada".into(),
            organization: Some("org-9".into()),
            environments: vec!["production".into()],
            roles: vec!["admin".into(), "viewer".into()],
            expires_at: None,
        }
    );
}

#[tokio::test]
async fn a_token_without_the_subject_claim_is_refused() {
    let mut s = with_secret();
    s.claims.subject = "email".into();
    let v = verifier(&s).await;
    // `sub` is there, but the configured subject claim is not.
    let err = v
        .verify(&Signer::hs256(SECRET.as_bytes()).token())
        .await
        .expect_err("no email");
    assert_eq!(err.code, JwtErrorCode::MissingClaim);
    assert!(err.message.contains("email"), "{}", err.message);
    assert_eq!(err.code.as_str(), "token_missing_claim");
}

#[tokio::test]
async fn a_jwks_file_is_read_at_start_and_a_bad_one_is_a_configuration_error() {
    let signer = Signer::es256("file-key");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&signer]).to_string()).expect("write");
    let mut s = settings();
    s.jwks_file = path.clone();
    let v = verifier(&s).await;
    v.verify(&signer.token()).await.expect("accepted");
    assert_eq!(
        refused(&v, &Signer::es256("other").token()).await,
        JwtErrorCode::UnknownKey
    );

    std::fs::write(
        &path,
        "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
    )
    .expect("write");
    let err = JwtVerifier::new(&s).await.expect_err("no usable key");
    assert!(err.contains("no usable signing key"), "{err}");
    s.jwks_file = dir.path().join("missing.json");
    let err = JwtVerifier::new(&s).await.expect_err("missing file");
    assert!(err.contains("missing.json"), "{err}");
}
