//! Published config snapshots: each version of a scope's compiled SDK configuration (the
//! GrowthBook payload of its live experiments), recorded with what triggered it.
//!
//! A scope (environment, optionally organization) gets a new version when what it compiles
//! to changes: versions count up from 1 per scope, and two versions in a row never hold the
//! same bytes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::scope::Scope;

/// One published version of a scope's snapshot (its body is stored beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Publication {
    pub environment: String,
    /// The organization whose scope this is; absent for the environment's global scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// 1 for a scope's first version, then one more per published change.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: u64,
    /// SHA-256 of the body, lowercase hex.
    pub hash: String,
    /// The body's length in bytes.
    pub size: u64,
    /// What asked for it: `manual` (`POST …/publish`), the change that made it (e.g.
    /// `experiment.status_changed`), or `job` (the publish job catching up).
    pub trigger: String,
    /// Who: the API key's id or token subject, or `job:publish`.
    pub actor: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

impl Publication {
    /// The scope this version belongs to.
    #[must_use]
    pub fn scope(&self) -> Scope {
        Scope::new(self.environment.clone(), self.organization.clone())
    }

    /// The body's strong HTTP `ETag`: the first 128 bits of its hash, quoted (what
    /// `GET /api/features/…` answers for the same bytes).
    #[must_use]
    pub fn etag(&self) -> String {
        etag_of_hash(&self.hash)
    }
}

/// The `ETag` of a body whose SHA-256 is `hash` (lowercase hex).
#[must_use]
pub fn etag_of_hash(hash: &str) -> String {
    format!("\"{}\"", &hash[..hash.len().min(32)])
}

/// A scope whose last publish did not reach every target: the publish job retries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPublish {
    pub scope: Scope,
    /// The last failure.
    pub error: String,
    /// When it last failed.
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
}
