//! API keys: who may call what.
//!
//! Keys are random secrets shown once; only their SHA-256 is stored (hashing happens at the
//! edge, this module only models the record; what its roles allow is [`crate::rights`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
    /// Role names ([`crate::rights`]): built-in (`admin`, `client`, `internal`, `viewer`,
    /// `experimenter`, `operator`) or configured. Keys stored with `scopes` read as the
    /// roles of the same names.
    #[serde(alias = "scopes")]
    pub roles: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stored_with_scopes_read_as_the_roles_of_the_same_names() {
        let stored = r#"{"id": "key_1", "name": "app", "prefix": "vk_0123456",
            "scopes": ["client", "internal"], "environment": "production",
            "created_at": "2026-01-01T00:00:00Z"}"#;
        let key: ApiKey = serde_json::from_str(stored).unwrap();
        assert_eq!(key.roles, ["client", "internal"]);
        let written = serde_json::to_value(&key).unwrap();
        assert_eq!(written["roles"], serde_json::json!(["client", "internal"]));
        assert!(written.get("scopes").is_none());
    }
}
