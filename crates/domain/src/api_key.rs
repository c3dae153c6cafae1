//! API keys: who may call what.
//!
//! Keys are random secrets shown once; only their SHA-256 is stored (hashing happens at the
//! edge, this module only models the record and the scope rules).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Administer experiments, environments, audiences, keys, webhooks.
    Admin,
    /// Assignment, events, winner and results reads.
    Client,
    /// Trigger internal jobs.
    Internal,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Admin => "admin",
            KeyScope::Client => "client",
            KeyScope::Internal => "internal",
        }
    }
}

/// A stored API key (never the plaintext).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the plaintext key.
    #[serde(skip_serializing, default)]
    pub hash: String,
    /// First characters of the key, to recognise it in lists.
    pub prefix: String,
    pub scopes: Vec<KeyScope>,
    /// The environment requests with this key act in.
    pub environment: String,
    /// When set, the key only sees this organization's experiments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl ApiKey {
    /// Admin keys may do everything; other scopes only what they name.
    pub fn allows(&self, scope: KeyScope) -> bool {
        self.revoked_at.is_none()
            && (self.scopes.contains(&scope) || self.scopes.contains(&KeyScope::Admin))
    }
}
