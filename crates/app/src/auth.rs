//! Who calls: API keys (`Authorization: Bearer vk_…`), and what they may do.
//!
//! A caller is a [`Caller`]: who it is (for the audit log), the environment and
//! organization it acts in, and the [`Rights`] of its roles ([`verdict_domain::rights`]).
//! Each route requires one right, checked before its request body is read (the `api`
//! crate declares them with the routes); use-cases check the rights that depend on what
//! is asked ([`Caller::scope`] for `environment` / `organization` parameters,
//! `experiments:decide` for a winner set by PATCH).
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
use verdict_domain::{ApiKey, Right, Rights, RoleBook, Scope};

use crate::App;
use crate::error::{AppError, ErrorCode};

/// How long a looked-up key is trusted without asking the store again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// How often a long-lived session checks that its caller's credential still holds.
pub const REVALIDATE_EVERY: Duration = Duration::from_secs(2);
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

/// The bootstrap admin key's hash and the caller it authenticates.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    hash: [u8; 32],
    /// Made once: role `admin` in the bootstrap environment.
    caller: Caller,
}

impl Bootstrap {
    pub fn new(plaintext: &str, environment: &str) -> Option<Self> {
        if plaintext.is_empty() {
            return None;
        }
        Some(Self {
            hash: Sha256::digest(plaintext.as_bytes()).into(),
            caller: Caller::new(Principal {
                actor: "key:bootstrap".to_owned(),
                credential: Credential::Configured,
                environments: vec![environment.to_owned()],
                organization: None,
                rights: Rights::all(),
            }),
        })
    }

    fn matches(&self, presented: &[u8; 32]) -> bool {
        self.hash.ct_eq(presented).into()
    }
}

/// A presented key's SHA-256 digest (the stored hash is its hex form).
type Digest32 = [u8; 32];

/// A looked-up key: its id and the caller it authenticates (`None` once revoked).
#[derive(Debug, Clone)]
struct Known {
    id: String,
    caller: Option<Caller>,
}

/// In-process cache of key lookups.
#[derive(Debug, Default)]
pub struct KeyCache {
    /// By digest: the key and when it was read.
    entries: Mutex<HashMap<Digest32, (Known, Instant)>>,
}

impl KeyCache {
    /// The cached caller of `digest` (`Some(None)`: a revoked key), if fresh.
    fn get(&self, digest: &Digest32) -> Option<Option<Caller>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(digest)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(k, _)| k.caller.clone())
    }

    fn put(&self, digest: Digest32, known: Known) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(digest, (known, Instant::now()));
    }

    /// Forget a key (after revocation through this process).
    pub fn forget_id(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (k, _)| k.id != id);
    }
}

/// The authenticated caller of a request: cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Caller(Arc<Principal>);

/// Who a caller is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, as audit logs record it: `key:<id>` or `jwt:<subject>`.
    pub actor: String,
    /// What it authenticated with, so that a long-lived session can ask again.
    pub credential: Credential,
    /// The environments it may act in; the first is its default.
    pub environments: Vec<String>,
    /// Its organization; `None` for a global caller.
    pub organization: Option<String>,
    /// The rights of its roles.
    pub rights: Rights,
}

/// How a caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The bootstrap key of the configuration.
    Configured,
    /// A stored API key, by the SHA-256 of its plaintext.
    Key([u8; 32]),
    /// A token, valid until `expires_at` (Unix seconds).
    Token { expires_at: i64 },
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Self(Arc::new(principal))
    }

    /// The caller a stored key (or the bootstrap key) authenticates.
    pub fn of_key(key: &ApiKey, digest: [u8; 32], roles: &RoleBook) -> Self {
        Self::new(Principal {
            actor: format!("key:{}", key.id),
            credential: Credential::Key(digest),
            environments: vec![key.environment.clone()],
            organization: key.organization.clone(),
            rights: roles.resolve(key.roles.iter().map(String::as_str)),
        })
    }

    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// 403 `forbidden` naming the missing right unless the caller holds `right`.
    pub fn require(&self, right: Right) -> Result<(), AppError> {
        if self.0.rights.contains(right) {
            Ok(())
        } else {
            Err(missing_right(right))
        }
    }

    pub fn holds(&self, right: Right) -> bool {
        self.0.rights.contains(right)
    }

    /// Who to write in audit logs (`key:<id>`, `jwt:<subject>`).
    pub fn actor(&self) -> &str {
        &self.0.actor
    }

    /// The subject of the caller's JWT (a signed-in user), when it presented one.
    pub fn token_subject(&self) -> Option<&str> {
        match self.0.credential {
            Credential::Token { .. } => self.0.actor.strip_prefix("jwt:"),
            _ => None,
        }
    }

    /// The environment the caller acts in when it names none.
    pub fn environment(&self) -> &str {
        self.0
            .environments
            .first()
            .map_or(verdict_domain::scope::DEFAULT_ENVIRONMENT, String::as_str)
    }

    /// 403 unless the caller may act in environment `env`: one of its own, or any with
    /// `scope:any`.
    pub fn require_environment(&self, env: &str) -> Result<(), AppError> {
        if self.0.environments.iter().any(|e| e == env) || self.holds(Right::ScopeAny) {
            Ok(())
        } else {
            Err(missing_right(Right::ScopeAny).with_message(format!(
                "this caller is bound to another environment than '{env}' (acting in another \
                 needs the right 'scope:any')"
            )))
        }
    }

    /// The scope a request acts in: the caller's environment and organization. Naming
    /// another with the `environment` / `organization` parameters needs `scope:any`, except
    /// an environment among the caller's own (a token may name several). An
    /// organization-bound caller also sees its environment's global experiments (see
    /// [`crate::experiments`]).
    pub fn scope(&self, params: &ScopeParams) -> Result<Scope, AppError> {
        let environment = params
            .environment
            .clone()
            .unwrap_or_else(|| self.environment().to_owned());
        let organization = params
            .organization
            .clone()
            .or_else(|| self.0.organization.clone());
        // A caller's organization is fixed by its credentials: one bound to none (global)
        // may not name one either.
        let wants_other =
            !self.0.environments.contains(&environment) || organization != self.0.organization;
        if wants_other && !self.holds(Right::ScopeAny) {
            return Err(missing_right(Right::ScopeAny).with_message(
                "this caller is bound to another environment or organization \
                 (naming another needs the right 'scope:any')",
            ));
        }
        Ok(Scope {
            environment,
            organization,
        })
    }
}

/// 401 `unauthorized` for a token, with the reason code in the details.
fn token_refused(reason: &str, message: &str) -> AppError {
    AppError::new(ErrorCode::Unauthorized, format!("token refused: {message}"))
        .with_details(vec![serde_json::json!({"reason": reason})])
}

/// 403 `forbidden`: the caller lacks `right` (named in the message and the details).
pub fn missing_right(right: Right) -> AppError {
    AppError::new(
        ErrorCode::Forbidden,
        format!("this caller lacks the right '{right}'"),
    )
    .with_details(vec![serde_json::json!({"missing_right": right.as_str()})])
}

/// Optional `environment` / `organization` parameters (right `scope:any`).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopeParams {
    /// Act in this environment instead of the caller's (needs `scope:any` unless it is one
    /// of the caller's own).
    pub environment: Option<String>,
    /// Act in this organization instead of the caller's (needs `scope:any`).
    pub organization: Option<String>,
}

impl App {
    /// Who presents `token`: a JWT when it has a JWT's shape, else an API key (the bootstrap
    /// key, else a stored key, cached for a few seconds). 401 `unauthorized` when unknown,
    /// revoked, or a token that does not verify (`details[0].reason` says why); 503
    /// `auth_unavailable` when a token's signing key cannot be fetched.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AppError> {
        if verdict_jwt::looks_like_jwt(token) {
            return self.authenticate_token(token).await;
        }
        self.authenticate_digest(Sha256::digest(token.as_bytes()).into())
            .await
    }

    /// Who holds the API key whose plaintext hashes to `digest` (the bootstrap key, else a
    /// stored key that is not revoked): how a console session, which keeps the digest
    /// rather than the key, authenticates each request. 401 `unauthorized` otherwise.
    pub async fn authenticate_digest(&self, digest: [u8; 32]) -> Result<Caller, AppError> {
        let state = &self.0;
        if let Some(bootstrap) = &state.bootstrap
            && bootstrap.matches(&digest)
        {
            return Ok(bootstrap.caller.clone());
        }
        self.stored_key(digest)
            .await?
            .ok_or_else(|| AppError::new(ErrorCode::Unauthorized, "invalid or revoked API key"))
    }

    /// The caller a JWT names: `jwt:<subject>`, the environments of its claim (else the
    /// bootstrap environment), its organization, the rights of its roles.
    async fn authenticate_token(&self, token: &str) -> Result<Caller, AppError> {
        let state = &self.0;
        let Some(verifier) = &state.tokens else {
            return Err(token_refused(
                "tokens_not_configured",
                "this server accepts API keys only ([auth.jwt] configures tokens)",
            ));
        };
        let claims = verifier.verify(token).await.map_err(|e| {
            if e.code.is_unavailable() {
                AppError::new(ErrorCode::AuthUnavailable, e.message)
                    .with_details(vec![serde_json::json!({"reason": e.code.as_str()})])
                    .retry_after(5)
            } else {
                token_refused(e.code.as_str(), &e.message)
            }
        })?;
        let environments = if claims.environments.is_empty() {
            vec![state.settings.auth.bootstrap_environment.clone()]
        } else {
            claims.environments
        };
        Ok(Caller::new(Principal {
            actor: format!("jwt:{}", claims.subject),
            credential: Credential::Token {
                expires_at: claims.expires_at.unwrap_or(i64::MAX),
            },
            environments,
            organization: claims.organization,
            rights: state.roles.resolve(claims.roles.iter().map(String::as_str)),
        }))
    }

    /// The caller of the stored key whose plaintext hashes to `digest`; `None` when there is
    /// none or it is revoked. Cached for [`KEY_CACHE_TTL`].
    async fn stored_key(&self, digest: Digest32) -> Result<Option<Caller>, AppError> {
        let state = &self.0;
        if let Some(caller) = state.keys.get(&digest) {
            return Ok(caller);
        }
        let Some(key) = state.store.find_api_key(&hex::encode(digest)).await? else {
            return Ok(None);
        };
        let known = Known {
            caller: key
                .revoked_at
                .is_none()
                .then(|| Caller::of_key(&key, digest, &state.roles)),
            id: key.id,
        };
        state.keys.put(digest, known.clone());
        Ok(known.caller)
    }

    /// Whether `caller`'s credential still holds: a stored key not revoked (as known within
    /// the key cache's few seconds), a token not expired. When the store cannot answer, the
    /// caller is kept (asked again at the next check).
    pub async fn still_authenticated(&self, caller: &Caller) -> bool {
        match &caller.principal().credential {
            Credential::Configured => true,
            Credential::Key(digest) => self.stored_key(*digest).await.map_or(true, |c| c.is_some()),
            Credential::Token { expires_at } => {
                time::OffsetDateTime::now_utc().unix_timestamp() < *expires_at
            }
        }
    }

    /// Completes once `caller`'s credential no longer holds (checked every
    /// [`REVALIDATE_EVERY`]): long-lived sessions (WebSocket, Server-Sent Events) end with it,
    /// so a revoked key or an expired token is cut off there too.
    pub async fn credential_revoked(&self, caller: Caller) {
        loop {
            tokio::time::sleep(REVALIDATE_EVERY).await;
            if !self.still_authenticated(&caller).await {
                return;
            }
        }
    }

    /// Resolves when a push stream of `caller` must end: the server shuts down, or the
    /// caller's credential is revoked or expires.
    pub async fn push_ended(&self, caller: Caller) {
        tokio::select! {
            () = self.0.stop.cancelled() => {}
            () = self.credential_revoked(caller) => {}
        }
    }

    /// The role names this deployment knows (built-in and configured).
    pub fn roles(&self) -> &RoleBook {
        &self.0.roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[&str], organization: Option<&str>) -> Caller {
        let key = ApiKey {
            id: "key_1".into(),
            name: "k".into(),
            hash: String::new(),
            prefix: String::new(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            environment: "production".into(),
            organization: organization.map(str::to_owned),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            revoked_at: None,
        };
        Caller::of_key(&key, [0; 32], &RoleBook::default())
    }

    fn params(environment: Option<&str>, organization: Option<&str>) -> ScopeParams {
        ScopeParams {
            environment: environment.map(str::to_owned),
            organization: organization.map(str::to_owned),
        }
    }

    #[test]
    fn only_callers_with_scope_any_act_outside_their_environment_and_organization() {
        let global_client = caller(&["client"], None);
        assert!(global_client.scope(&params(None, None)).is_ok());
        for (env, org) in [(None, Some("acme")), (Some("staging"), None)] {
            let err = global_client.scope(&params(env, org)).unwrap_err();
            assert_eq!(err.code, ErrorCode::Forbidden, "{env:?} {org:?}");
            assert_eq!(err.details[0]["missing_right"], "scope:any");
        }
        let acme_client = caller(&["client"], Some("acme"));
        let scope = acme_client.scope(&params(None, None)).unwrap();
        assert_eq!(scope.organization.as_deref(), Some("acme"));
        assert!(acme_client.scope(&params(None, Some("acme"))).is_ok());
        assert!(acme_client.scope(&params(None, Some("globex"))).is_err());
        let admin = caller(&["admin"], None);
        let scope = admin.scope(&params(Some("staging"), Some("acme"))).unwrap();
        assert_eq!(
            (scope.environment.as_str(), scope.organization.as_deref()),
            ("staging", Some("acme"))
        );
    }

    #[test]
    fn a_caller_holds_the_rights_of_its_roles_and_names_the_one_it_lacks() {
        let viewer = caller(&["viewer"], None);
        assert!(viewer.require(Right::ResultsRead).is_ok());
        let err = viewer.require(Right::ExperimentsWrite).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert!(err.message.contains("experiments:write"), "{}", err.message);
        assert_eq!(err.details[0]["missing_right"], "experiments:write");
        assert_eq!(viewer.actor(), "key:key_1");
        let both = caller(&["viewer", "client"], None);
        assert!(both.require(Right::EventsWrite).is_ok() && both.require(Right::AuditRead).is_ok());
        assert!(caller(&["no-such-role"], None).principal().rights == Rights::NONE);
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
