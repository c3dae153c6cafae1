//! [`Publisher`]: compile a scope, record a changed snapshot as its next version, write the
//! version to every target, and remember a failure for the publish job to retry.

use time::OffsetDateTime;
use verdict_config::PublishSettings;
use verdict_domain::{ErrorChain, Publication, Scope};
use verdict_store::{DynStore, NewPublication, StoreError};

use crate::compile::{compile, scope_experiments};
use crate::targets::{self, Target};

/// A publish that went through: the scope's latest version, and whether this publish
/// recorded it (`false`: the snapshot had not changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub publication: Publication,
    pub created: bool,
}

/// Why a publish did not go through. The scope stays pending: the publish job retries it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The snapshot could not be compiled or recorded. Its message names no store internals
    /// (it reaches API clients); the cause is its `source()`, logged.
    #[error("the snapshot could not be compiled or recorded: the store failed")]
    Store(#[source] StoreError),
    /// The version is recorded (and served by the API) but a target did not take it.
    #[error("version {} is recorded, but writing it to the {target} target failed: {message}", publication.version)]
    Target {
        publication: Box<Publication>,
        target: &'static str,
        message: String,
    },
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        PublishError::Store(e)
    }
}

/// Publishes scopes' snapshots: the store always, the configured targets besides.
#[derive(Debug, Clone)]
pub struct Publisher {
    store: DynStore,
    targets: Vec<Target>,
}

/// Now, at the millisecond precision stores keep.
fn now() -> OffsetDateTime {
    verdict_store::model::truncate_to_millis(OffsetDateTime::now_utc())
}

impl Publisher {
    /// A publisher writing to the targets `settings` configure (creating the directory).
    pub fn new(store: DynStore, settings: &PublishSettings) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            targets: targets::from_settings(settings)?,
        })
    }

    /// The names of the configured targets besides the store.
    pub fn target_names(&self) -> Vec<&'static str> {
        self.targets.iter().map(|t| t.name).collect()
    }

    /// Compile `scope` now and publish it: a new version when the snapshot changed (written
    /// to every target), else the latest one (written again only when the scope was
    /// pending). On failure the scope is marked pending; a success clears a failure that
    /// happened before this compile.
    pub async fn publish(
        &self,
        scope: &Scope,
        trigger: &str,
        actor: &str,
    ) -> Result<Published, PublishError> {
        let compiled_at = now();
        let result = self.try_publish(scope, trigger, actor, compiled_at).await;
        match &result {
            Ok(_) => {
                if let Err(e) = self.store.clear_publish_pending(scope, compiled_at).await {
                    tracing::warn!(environment = %scope.environment, organization = ?scope.organization, error = %ErrorChain(&e), "cannot clear a retried publish");
                }
            }
            Err(err) => {
                tracing::warn!(environment = %scope.environment, organization = ?scope.organization, error = %ErrorChain(err), "publish failed; the publish job retries it");
                if let Err(e) = self
                    .store
                    .mark_publish_pending(scope, &err.to_string(), now())
                    .await
                {
                    tracing::warn!(environment = %scope.environment, error = %ErrorChain(&e), "cannot record a failed publish (the publish job still compares every scope)");
                }
            }
        }
        result
    }

    async fn try_publish(
        &self,
        scope: &Scope,
        trigger: &str,
        actor: &str,
        at: OffsetDateTime,
    ) -> Result<Published, PublishError> {
        let experiments = scope_experiments(&*self.store, scope).await?;
        let rendered = compile(&*self.store, &experiments).await?;
        let body = String::from_utf8(rendered.body)
            .map_err(|e| StoreError::internal("a config snapshot that is not UTF-8", e))?;
        let new = NewPublication {
            scope: scope.clone(),
            body,
            hash: rendered.hash,
            trigger: trigger.to_owned(),
            actor: actor.to_owned(),
            at,
        };
        // Recorded or not, the latest version has this hash, so these bytes.
        let (publication, created) = self.store.record_publication(&new).await?;
        let rewrite = !created
            && !self.targets.is_empty()
            && self
                .store
                .pending_publishes()
                .await?
                .iter()
                .any(|p| p.scope == *scope);
        if created || rewrite {
            self.write_targets(&publication, new.body.as_bytes())
                .await?;
        }
        Ok(Published {
            publication,
            created,
        })
    }

    /// Write the recorded version `publication`, whose snapshot is `body`, to every target.
    async fn write_targets(
        &self,
        publication: &Publication,
        body: &[u8],
    ) -> Result<(), PublishError> {
        for target in &self.targets {
            target
                .write(publication, body)
                .await
                .map_err(|e| PublishError::Target {
                    publication: Box::new(publication.clone()),
                    target: target.name,
                    message: format!("{e:#}"),
                })?;
        }
        Ok(())
    }

    /// The scopes a change of an experiment of `scope` touches: `scope` itself and, for a
    /// global experiment, every organization of its environment that has a published
    /// snapshot (an organization's snapshot includes the global experiments).
    pub async fn touched_scopes(&self, scope: &Scope) -> Result<Vec<Scope>, StoreError> {
        let mut scopes = vec![scope.clone()];
        if scope.organization.is_none() {
            for s in self
                .store
                .publication_scopes(Some(&scope.environment))
                .await?
            {
                if s.organization.is_some() {
                    scopes.push(s);
                }
            }
        }
        Ok(scopes)
    }

    pub(crate) fn store(&self) -> &DynStore {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_tells_clients_nothing_of_the_store_and_logs_its_cause() {
        let e = PublishError::from(StoreError::internal(
            "reading experiments",
            std::io::Error::other("driver says: table locked"),
        ));
        assert!(!e.to_string().contains("driver"), "{e}");
        assert!(
            ErrorChain(&e).to_string().contains("driver says"),
            "{}",
            ErrorChain(&e)
        );
    }
}
