//! Test support: tokens minted by an independent JWT implementation (`jwt-simple`) and a
//! JWKS endpoint served over real HTTP that counts its requests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use jwt_simple::prelude::{
    Claims, Clock, Duration as JwtDuration, ECDSAP256KeyPairLike, ES256KeyPair, Ed25519KeyPair,
    EdDSAKeyPairLike, HS256Key, MACLike, RS256KeyPair, RSAKeyPairLike,
};
use serde_json::{Map, Value, json};
use verdict_config::{JwtClaimNames, JwtSettings, SecretString};

/// A secret of the length the configuration requires.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// `[auth.jwt]` with JWTs off and the documented defaults; tests turn on what they need.
pub fn settings() -> JwtSettings {
    JwtSettings {
        hs256_secret: SecretString::from(String::new()),
        jwks_url: String::new(),
        jwks_file: PathBuf::new(),
        issuer: String::new(),
        audience: String::new(),
        leeway_seconds: 30,
        jwks_timeout_seconds: 2,
        jwks_min_refresh_seconds: 60,
        jwks_max_age_seconds: 3600,
        claims: JwtClaimNames {
            subject: "sub".into(),
            organization: "org".into(),
            environments: "env".into(),
            roles: "roles".into(),
        },
    }
}

pub fn with_secret() -> JwtSettings {
    let mut s = settings();
    s.hs256_secret = SecretString::from(SECRET.to_owned());
    s
}

pub fn with_url(url: &str) -> JwtSettings {
    let mut s = settings();
    s.jwks_url = url.to_owned();
    s
}

/// What goes into a token.
#[derive(Debug, Clone)]
pub struct Spec {
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `exp` relative to now, in seconds (negative: in the past); `None`: no `exp`.
    pub expires_in: Option<i64>,
    /// `nbf` relative to now, in seconds; `None`: no `nbf`.
    pub not_before_in: Option<i64>,
    pub custom: Map<String, Value>,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            subject: Some("user-1".into()),
            issuer: None,
            audience: None,
            expires_in: Some(600),
            not_before_in: None,
            custom: Map::new(),
        }
    }
}

impl Spec {
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.custom.insert(name.to_owned(), value);
        self
    }
}

fn at(offset: i64) -> JwtDuration {
    let now = Clock::now_since_epoch();
    let delta = JwtDuration::from_secs(offset.unsigned_abs());
    if offset >= 0 {
        now + delta
    } else {
        now - delta
    }
}

fn claims(spec: &Spec) -> jwt_simple::claims::JWTClaims<Map<String, Value>> {
    let mut c = Claims::with_custom_claims(spec.custom.clone(), JwtDuration::from_secs(600));
    c.subject = spec.subject.clone();
    c.issuer = spec.issuer.clone();
    if let Some(aud) = &spec.audience {
        c = c.with_audience(aud);
    }
    c.expires_at = spec.expires_in.map(at);
    c.invalid_before = spec.not_before_in.map(at);
    c
}

/// A signing key of one kind, with the key id its tokens carry.
pub enum Signer {
    Hs(HS256Key),
    Rs(Box<RS256KeyPair>),
    Es(ES256KeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    pub fn hs256(secret: &[u8]) -> Self {
        Self::Hs(HS256Key::from_bytes(secret))
    }

    pub fn rs256(kid: &str) -> Self {
        Self::Rs(Box::new(
            RS256KeyPair::generate(2048)
                .expect("RSA key")
                .with_key_id(kid),
        ))
    }

    pub fn es256(kid: &str) -> Self {
        Self::Es(ES256KeyPair::generate().with_key_id(kid))
    }

    pub fn ed25519(kid: &str) -> Self {
        Self::Ed(Ed25519KeyPair::generate().with_key_id(kid))
    }

    pub fn sign(&self, spec: &Spec) -> String {
        let c = claims(spec);
        match self {
            Self::Hs(k) => k.authenticate(c),
            Self::Rs(k) => k.sign(c),
            Self::Es(k) => k.sign(c),
            Self::Ed(k) => k.sign(c),
        }
        .expect("signs")
    }

    pub fn token(&self) -> String {
        self.sign(&Spec::default())
    }

    /// The public key as a JWK (`kid`, `alg`, `use: sig`), as an identity provider serves it.
    pub fn public_jwk(&self) -> Value {
        let text = match self {
            Self::Hs(_) => panic!("no public key"),
            Self::Rs(k) => k.public_key().with_key_id(&kid(k.key_id())).to_jwk(),
            Self::Es(k) => k.public_key().with_key_id(&kid(k.key_id())).to_jwk(),
            Self::Ed(k) => k.public_key().with_key_id(&kid(k.key_id())).to_jwk(),
        };
        serde_json::from_str(&text).expect("JWK JSON")
    }

    /// The RSA public key in PEM, the bytes an HS/RS confusion attack uses as HMAC secret.
    pub fn rsa_public_pem(&self) -> String {
        match self {
            Self::Rs(k) => k.public_key().to_pem().expect("PEM"),
            _ => panic!("not RSA"),
        }
    }
}

fn kid(key_id: &Option<String>) -> String {
    key_id.clone().unwrap_or_default()
}

pub fn jwks(keys: &[&Signer]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// A JWKS endpoint on 127.0.0.1 that counts requests and can be switched to another key
/// set or to failing.
pub struct JwksServer {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    hits: AtomicUsize,
    answer: Mutex<(StatusCode, String)>,
}

impl JwksServer {
    pub async fn start(document: Value) -> Self {
        let shared = Arc::new(Shared {
            hits: AtomicUsize::new(0),
            answer: Mutex::new((StatusCode::OK, document.to_string())),
        });
        let app = axum::Router::new()
            .route("/jwks.json", get(serve))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { url, shared, task }
    }

    pub fn serve(&self, document: Value) {
        *self.shared.answer.lock().expect("lock") = (StatusCode::OK, document.to_string());
    }

    pub fn fail_with(&self, status: StatusCode) {
        *self.shared.answer.lock().expect("lock") = (status, "{\"error\":\"down\"}".into());
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    State(shared): State<Arc<Shared>>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let (status, body) = shared.answer.lock().expect("lock").clone();
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// A URL on 127.0.0.1 where nothing listens.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/jwks.json")
}
