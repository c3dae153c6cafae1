//! [`PublicationStore`]: the published versions of each scope's config snapshot, with their
//! bodies, and the scopes whose last publish must be retried.

use async_trait::async_trait;
use time::OffsetDateTime;
use verdict_domain::{PendingPublish, Publication, Scope};

use crate::Result;
use crate::model::{Page, PageRequest};

/// A version about to be recorded: its scope, body and provenance (the store numbers it).
#[derive(Debug, Clone)]
pub struct NewPublication {
    pub scope: Scope,
    /// The compiled snapshot (JSON).
    pub body: String,
    /// SHA-256 of `body`, lowercase hex.
    pub hash: String,
    pub trigger: String,
    pub actor: String,
    pub at: OffsetDateTime,
}

/// Config snapshot versions, numbered from 1 per scope.
#[async_trait]
pub trait PublicationStore: Send + Sync + std::fmt::Debug {
    /// Record `new` as its scope's next version, unless the scope's latest version has the
    /// same hash: then that version is answered and nothing is written. `true` when a
    /// version was recorded. Atomic: concurrent calls number versions without gaps or
    /// duplicates, and never record the same hash twice in a row.
    async fn record_publication(&self, new: &NewPublication) -> Result<(Publication, bool)>;
    /// A page of a scope's versions, newest first.
    async fn list_publications(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> Result<Page<Publication>>;
    /// The scope's latest version, without its body.
    async fn latest_publication(&self, scope: &Scope) -> Result<Option<Publication>>;
    /// A version (the latest when `version` is `None`) with its body.
    async fn get_publication(
        &self,
        scope: &Scope,
        version: Option<u64>,
    ) -> Result<Option<(Publication, String)>>;
    /// Every scope with a recorded version or a pending retry, of `environment` when given.
    async fn publication_scopes(&self, environment: Option<&str>) -> Result<Vec<Scope>>;
    /// Remember that publishing `scope` failed at `at` (replacing an earlier failure).
    async fn mark_publish_pending(
        &self,
        scope: &Scope,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<()>;
    /// Forget `scope`'s failure if it happened at or before `compiled_at` (a publish that
    /// compiled after the failure covers it; a later failure stays).
    async fn clear_publish_pending(&self, scope: &Scope, compiled_at: OffsetDateTime)
    -> Result<()>;
    /// The scopes waiting for a retry.
    async fn pending_publishes(&self) -> Result<Vec<PendingPublish>>;
}
