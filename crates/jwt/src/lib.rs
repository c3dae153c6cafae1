//! JWT bearer tokens for Verdict: verification and the caller identity they carry.
//!
//! This crate owns:
//!
//! - **Verification** ([`JwtVerifier::verify`]): signature, `exp` (required), `nbf`, `iss`
//!   and `aud` as configured in `[auth.jwt]`, with a clock-skew leeway. HS256 verifies with a
//!   shared secret; RS256/384/512, PS256/384/512, ES256/384 and EdDSA with keys from a JSON
//!   Web Key Set. The algorithm a token may use follows from the key, not from its header:
//!   `alg: none` and HS/RS confusion are refused.
//! - **The key set**: fetched from `jwks_url` (with a timeout, cached, fetched again for an
//!   unknown key id at most once per `jwks_min_refresh_seconds` and when older than
//!   `jwks_max_age_seconds`) or read from `jwks_file` at start-up.
//! - **Claim mapping** to [`TokenClaims`] (subject, organization, environments, roles) with
//!   configurable claim names or dotted paths.
//! - **Errors** ([`JwtError`]): a stable [`JwtErrorCode`] (`token_expired`, ...) and the
//!   reason; only [`JwtErrorCode::KeysUnavailable`] is the server's problem (503).
//!
//! It must not:
//!
//! - decide what a caller may do: roles and environments are handed over as found; the
//!   application layer turns them into rights;
//! - log or return tokens or the secret.
//!
//! # Layout
//!
//! - `src/lib.rs`: [`JwtVerifier`], the verification steps in order.
//! - `src/algorithm.rs`: [`looks_like_jwt`], header parsing, which key source and algorithm a
//!   token may use (pure).
//! - `src/jwks.rs`: the key set, its fetching, caching and refresh limits (IO).
//! - `src/claims.rs`: [`TokenClaims`] and the claim mapping (pure).
//! - `src/error.rs`: [`JwtError`], [`JwtErrorCode`].

mod algorithm;
mod claims;
mod error;
mod jwks;

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use verdict_config::{ExposeSecret, JwtClaimNames, JwtSettings};

pub use algorithm::looks_like_jwt;
pub use claims::TokenClaims;
pub use error::{JwtError, JwtErrorCode};

use crate::algorithm::{Route, parse_header, route};
use crate::jwks::KeySet;

/// Verifies JWT bearer tokens against the configured secret and/or key set. Cheap to clone
/// (one shared key cache).
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    secret: Option<DecodingKey>,
    key_set: Option<KeySet>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
    claims: JwtClaimNames,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("JwtVerifier")
            .field("hs256_secret", &inner.secret.as_ref().map(|_| "[REDACTED]"))
            .field("key_set", &inner.key_set)
            .field("issuer", &inner.issuer)
            .field("audience", &inner.audience)
            .field("leeway_seconds", &inner.leeway_seconds)
            .field("claims", &inner.claims)
            .finish()
    }
}

impl JwtVerifier {
    /// The verifier for `[auth.jwt]`, or `None` when JWTs are off (no secret, no JWKS URL,
    /// no JWKS file).
    ///
    /// A JWKS file is read now; a JWKS URL is fetched now, but an identity provider that is
    /// down at start-up is not an error (tokens are refused as keys-unavailable until a
    /// later fetch succeeds).
    ///
    /// # Errors
    ///
    /// Configuration that cannot work: an unreadable JWKS file or one without a usable
    /// signing key, an unusable secret.
    pub async fn new(settings: &JwtSettings) -> Result<Option<Self>, String> {
        if !settings.enabled() {
            return Ok(None);
        }
        let secret = settings.hs256_secret.expose_secret();
        let secret = if secret.is_empty() {
            None
        } else {
            Some(
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| format!("auth.jwt.hs256_secret is unusable: {e}"))?,
            )
        };
        let url = Some(settings.jwks_url.trim()).filter(|u| !u.is_empty());
        let file = Some(settings.jwks_file.as_path()).filter(|p| !p.as_os_str().is_empty());
        let key_set = if url.is_some() || file.is_some() {
            Some(
                KeySet::open(
                    url,
                    file,
                    settings.jwks_timeout(),
                    settings.jwks_min_refresh(),
                    settings.jwks_max_age(),
                )
                .await?,
            )
        } else {
            None
        };
        let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Some(Self {
            inner: Arc::new(Inner {
                secret,
                key_set,
                issuer: non_empty(&settings.issuer),
                audience: non_empty(&settings.audience),
                leeway_seconds: settings.leeway_seconds,
                claims: settings.claims.clone(),
            }),
        }))
    }

    /// Checks `token` (without the `Bearer ` prefix) and returns who it speaks for.
    ///
    /// # Errors
    ///
    /// A [`JwtError`] whose code says which rule the token broke; signature problems are
    /// reported before claim problems.
    pub async fn verify(&self, token: &str) -> Result<TokenClaims, JwtError> {
        let inner = &self.inner;
        if !looks_like_jwt(token) {
            return Err(JwtError::new(
                JwtErrorCode::Malformed,
                "not a JWT (three base64url segments separated by dots)",
            ));
        }
        let header = parse_header(token)?;
        let (key, algorithm) =
            match route(&header.alg, inner.secret.is_some(), inner.key_set.is_some())? {
                Route::Secret => match &inner.secret {
                    Some(secret) => (secret.clone(), Algorithm::HS256),
                    None => return Err(internal_route_error()),
                },
                Route::KeySet(algorithm) => match &inner.key_set {
                    Some(set) => (
                        set.key_for(header.kid.as_deref(), algorithm).await?,
                        algorithm,
                    ),
                    None => return Err(internal_route_error()),
                },
            };
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &self.validation(algorithm))
                .map_err(|e| error::from_library(&e))?;
        claims::map_claims(&data.claims, &inner.claims)
    }

    /// The checks for a token verified with `algorithm` (the only one allowed).
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let inner = &self.inner;
        let mut validation = Validation::new(algorithm);
        validation.leeway = inner.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &inner.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &inner.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience, a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// `route` only chooses a source that is configured; this is the refusal if it ever did not.
fn internal_route_error() -> JwtError {
    JwtError::new(
        JwtErrorCode::AlgorithmNotAllowed,
        "no key of this kind is configured",
    )
}
