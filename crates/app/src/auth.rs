//! API keys: `Authorization: Bearer <key>`.
//!
//! Keys are `vk_` + 48 random hex characters. Only their SHA-256 is stored; a presented key
//! is hashed and looked up by hash, and the bootstrap admin key (from configuration) is
//! compared hash-to-hash in constant time. Lookups are cached in-process for a few seconds
//! so the hot paths (assignment, events) do not pay a store read per request; a revocation
//! made through this process takes effect at once, one made elsewhere within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use verdict_domain::{ApiKey, KeyScope, Scope};

use crate::App;
use crate::error::{AppError, ErrorCode};

/// How long a looked-up key is trusted without asking the store again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on cached keys; the cache is cleared when full (keys are few; this only stops
/// unbounded growth).
const KEY_CACHE_MAX: usize = 10_000;

/// Hex SHA-256 of a plaintext key.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// A new random key: the plaintext (shown once) and its hash (stored).
pub fn generate_key() -> (String, String) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let plaintext = format!("vk_{}", hex::encode(bytes));
    let hash = hash_key(&plaintext);
    (plaintext, hash)
}

/// The bootstrap admin key's identity and hash.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    hash: [u8; 32],
    /// The caller it authenticates, made once.
    key: Arc<ApiKey>,
}

impl Bootstrap {
    pub fn new(plaintext: &str, environment: &str) -> Option<Self> {
        if plaintext.is_empty() {
            return None;
        }
        Some(Self {
            hash: Sha256::digest(plaintext.as_bytes()).into(),
            key: Arc::new(ApiKey {
                id: "bootstrap".into(),
                name: "bootstrap admin key (configuration)".into(),
                hash: String::new(),
                prefix: String::new(),
                scopes: vec![KeyScope::Admin],
                environment: environment.into(),
                organization: None,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                revoked_at: None,
            }),
        })
    }

    fn matches(&self, presented: &[u8; 32]) -> bool {
        self.hash.ct_eq(presented).into()
    }
}

/// A presented key's SHA-256 digest (the stored hash is its hex form).
type Digest32 = [u8; 32];

/// In-process cache of key lookups.
#[derive(Debug, Default)]
pub struct KeyCache {
    /// By digest: the key and when it was read.
    entries: Mutex<HashMap<Digest32, (Arc<ApiKey>, Instant)>>,
}

impl KeyCache {
    fn get(&self, digest: &Digest32) -> Option<Arc<ApiKey>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(digest)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(k, _)| k.clone())
    }

    fn put(&self, digest: Digest32, key: Arc<ApiKey>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(digest, (key, Instant::now()));
    }

    /// Forget a key (after revocation through this process).
    pub fn forget_id(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (k, _)| k.id != id);
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Shared with the key cache: a request clones a reference, not the key.
    pub key: Arc<ApiKey>,
}

impl Caller {
    /// 403 unless the key allows `scope` (admin allows everything).
    pub fn require(&self, scope: KeyScope) -> Result<(), AppError> {
        if self.key.allows(scope) {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorCode::Forbidden,
                format!("this API key lacks the '{}' scope", scope.as_str()),
            ))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.key.allows(KeyScope::Admin)
    }

    /// Who to write in audit logs.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key.id)
    }

    /// The scope a request acts in: the key's environment and organization; admin keys may
    /// name others with `environment` / `organization` query parameters.
    pub fn scope(&self, params: &ScopeParams) -> Result<Scope, AppError> {
        let environment = params
            .environment
            .clone()
            .unwrap_or_else(|| self.key.environment.clone());
        let organization = params
            .organization
            .clone()
            .or_else(|| self.key.organization.clone());
        // A key's organization is fixed by the key: one bound to none (global) may not name
        // one either; only admin keys act elsewhere.
        let wants_other =
            environment != self.key.environment || organization != self.key.organization;
        if wants_other && !self.is_admin() {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                "this API key is bound to another environment or organization",
            ));
        }
        Ok(Scope {
            environment,
            organization,
        })
    }
}

/// Optional `environment` / `organization` parameters (admin keys only).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopeParams {
    /// Act in this environment instead of the key's (admin keys only).
    pub environment: Option<String>,
    /// Act in this organization instead of the key's (admin keys only).
    pub organization: Option<String>,
}

impl App {
    /// Who presents `token` (an API key): the bootstrap key, else a stored key (cached for a
    /// few seconds). 401 `unauthorized` when unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AppError> {
        let state = &self.0;
        let invalid = || AppError::new(ErrorCode::Unauthorized, "invalid or revoked API key");
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(bootstrap) = &state.bootstrap
            && bootstrap.matches(&digest)
        {
            return Ok(Caller {
                key: bootstrap.key.clone(),
            });
        }
        let key = match state.keys.get(&digest) {
            Some(k) => k,
            None => {
                let hash = hex::encode(digest);
                let k = Arc::new(state.store.find_api_key(&hash).await?.ok_or_else(invalid)?);
                state.keys.put(digest, k.clone());
                k
            }
        };
        if key.revoked_at.is_some() {
            return Err(invalid());
        }
        Ok(Caller { key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: Vec<KeyScope>, organization: Option<&str>) -> Caller {
        Caller {
            key: Arc::new(ApiKey {
                id: "key_1".into(),
                name: "k".into(),
                hash: String::new(),
                prefix: String::new(),
                scopes,
                environment: "production".into(),
                organization: organization.map(str::to_owned),
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                revoked_at: None,
            }),
        }
    }

    fn params(environment: Option<&str>, organization: Option<&str>) -> ScopeParams {
        ScopeParams {
            environment: environment.map(str::to_owned),
            organization: organization.map(str::to_owned),
        }
    }

    #[test]
    fn only_admin_keys_act_outside_their_environment_and_organization() {
        let global_client = caller(vec![KeyScope::Client], None);
        assert!(global_client.scope(&params(None, None)).is_ok());
        for (env, org) in [(None, Some("acme")), (Some("staging"), None)] {
            let err = global_client.scope(&params(env, org)).unwrap_err();
            assert_eq!(err.code, ErrorCode::Forbidden, "{env:?} {org:?}");
        }
        let acme_client = caller(vec![KeyScope::Client], Some("acme"));
        let scope = acme_client.scope(&params(None, None)).unwrap();
        assert_eq!(scope.organization.as_deref(), Some("acme"));
        assert!(acme_client.scope(&params(None, Some("acme"))).is_ok());
        assert!(acme_client.scope(&params(None, Some("globex"))).is_err());
        let admin = caller(vec![KeyScope::Admin], None);
        let scope = admin.scope(&params(Some("staging"), Some("acme"))).unwrap();
        assert_eq!(
            (scope.environment.as_str(), scope.organization.as_deref()),
            ("staging", Some("acme"))
        );
    }

    #[test]
    fn generated_keys_are_distinct_and_hash_to_what_is_stored() {
        let (a, ha) = generate_key();
        let (b, _) = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("vk_") && a.len() == 51);
        assert_eq!(hash_key(&a), ha);
        assert_eq!(ha.len(), 64);
    }

    #[test]
    fn the_bootstrap_key_matches_only_itself() {
        let b = Bootstrap::new("a-long-bootstrap-key", "production").unwrap();
        assert!(b.matches(&Sha256::digest(b"a-long-bootstrap-key").into()));
        assert!(!b.matches(&Sha256::digest(b"a-long-bootstrap-kez").into()));
        assert!(Bootstrap::new("", "production").is_none());
    }
}
