//! Published config snapshots: publish a scope by hand, list its versions, read one (the
//! latest or any), and the publish that follows every change of what SDKs evaluate.
//!
//! A change is live-impacting when the experiment it touches is in a snapshot before or
//! after it ([`growthbook::in_payload`]: running, or paused or completed with a winner): a
//! status change, an edit or a new split
//! of such an experiment, a manual winner, its deletion, and an edit of an audience running
//! experiments use. The use-case makes the change, then publishes every scope the
//! experiment's snapshot is part of and answers the outcome ([`PublishOutcome`]) beside its
//! result ([`Changed`]); a failed publish never fails the change (the publish job retries
//! it).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use verdict_domain::growthbook;
use verdict_domain::{Experiment, Publication, Scope, Status};
use verdict_publish::{PublishError, Published, Rendered};
use verdict_store::ExperimentFilter;

use crate::auth::{Caller, ScopeParams};
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};
use crate::{App, Inner};

/// The outcome of the publish a change caused: `attempted` when the change was
/// live-impacting; `succeeded` when every scope it touched was published (recorded and
/// written to every target); `error` says what failed otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    pub attempted: bool,
    pub succeeded: bool,
    pub error: Option<String>,
}

/// A change's result and the outcome of the publish it caused.
#[derive(Debug)]
pub struct Changed<T> {
    pub value: T,
    pub publish: PublishOutcome,
}

/// The query of the environment-scoped snapshot routes.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotScope {
    /// The organization whose snapshot this is, instead of the caller's (needs `scope:any`);
    /// absent: the caller's (for a global caller, the environment's global snapshot).
    pub organization: Option<String>,
}

/// The query of `GET /v1/environments/{env}/snapshots`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotListParams {
    /// The organization whose versions to list (needs `scope:any` unless the caller's).
    pub organization: Option<String>,
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

/// The answer to `POST /v1/environments/{env}/publish`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublishAnswer {
    /// The scope's latest version.
    pub publication: Publication,
    /// Whether this publish recorded it (`false`: the snapshot had not changed since).
    pub created: bool,
    /// The targets it is written to besides the store (`directory`, `s3`).
    pub targets: Vec<&'static str>,
}

impl App {
    fn snapshot_scope(
        caller: &Caller,
        env: &str,
        organization: Option<String>,
    ) -> Result<Scope, AppError> {
        caller.scope(&ScopeParams {
            environment: Some(env.to_owned()),
            organization,
        })
    }

    /// Publish the caller's scope of `env` now (recorded as `manual`).
    pub async fn publish_scope(
        &self,
        caller: &Caller,
        env: &str,
        query: SnapshotScope,
    ) -> Result<PublishAnswer, AppError> {
        let scope = Self::snapshot_scope(caller, env, query.organization)?;
        self.find_environment(env).await?;
        let Published {
            publication,
            created,
        } = self
            .0
            .publisher
            .publish(&scope, "manual", caller.actor())
            .await
            .map_err(publish_failed)?;
        self.0.publications.notify();
        Ok(PublishAnswer {
            publication,
            created,
            targets: self.0.publisher.target_names(),
        })
    }

    /// A page of the scope's versions, newest first.
    pub async fn publications(
        &self,
        caller: &Caller,
        env: &str,
        params: SnapshotListParams,
    ) -> Result<Paginated<Publication>, AppError> {
        let scope = Self::snapshot_scope(caller, env, params.organization)?;
        let page = PageParams {
            page: params.page,
            page_size: params.page_size,
        }
        .to_request()?;
        Ok(Paginated::of(
            self.0.store.list_publications(&scope, page).await?,
            page,
        ))
    }

    /// A version of the scope's snapshot (the latest when `version` is `None`) with its
    /// bytes; `snapshot_not_found` when the scope has none (yet) or not that one.
    pub async fn snapshot(
        &self,
        caller: &Caller,
        env: &str,
        query: SnapshotScope,
        version: Option<u64>,
    ) -> Result<(Publication, Rendered), AppError> {
        let scope = Self::snapshot_scope(caller, env, query.organization)?;
        let found = self.0.store.get_publication(&scope, version).await?;
        let (publication, body) = found.ok_or_else(|| {
            let what =
                version.map_or_else(|| "no version".to_owned(), |v| format!("no version {v}"));
            AppError::new(
                ErrorCode::SnapshotNotFound,
                format!(
                    "the snapshot of environment '{env}'{} has {what}; publish it with POST \
                     /v1/environments/{env}/publish",
                    scope
                        .organization
                        .as_deref()
                        .map(|o| format!(", organization '{o}',"))
                        .unwrap_or_default()
                ),
            )
        })?;
        // The recorded hash is the body's: not computed again.
        let rendered = Rendered::with_hash(body.into_bytes(), publication.hash.clone());
        Ok((publication, rendered))
    }

    /// The scope a snapshot stream follows, checked as [`App::snapshot`] checks it.
    pub fn snapshot_stream_scope(
        &self,
        caller: &Caller,
        env: &str,
        query: SnapshotScope,
    ) -> Result<Scope, AppError> {
        Self::snapshot_scope(caller, env, query.organization)
    }

    /// The scope's latest version, for a stream that announces new ones.
    pub async fn latest_publication(&self, scope: &Scope) -> Result<Option<Publication>, AppError> {
        Ok(self.0.store.latest_publication(scope).await?)
    }

    /// Wait until a publish by this process may have made a new version (or `timeout`).
    pub async fn publication_changed(&self, timeout: std::time::Duration) {
        self.0.publications.wait(timeout).await;
    }

    /// After a change from `before` to `after` (`None`: created or deleted): publish every
    /// scope it touches when either side is in snapshots.
    pub(crate) async fn publish_change(
        &self,
        before: Option<&Experiment>,
        after: Option<&Experiment>,
        trigger: &str,
        actor: &str,
    ) -> PublishOutcome {
        let touched = [before, after]
            .into_iter()
            .flatten()
            .find(|e| growthbook::in_payload(e));
        match touched {
            Some(e) => publish_scopes(&self.0, vec![e.scope.clone()], trigger, actor).await,
            None => PublishOutcome::default(),
        }
    }

    /// After an audience of `env` changed: publish the scopes of the running experiments
    /// that use it.
    pub(crate) async fn publish_audience_change(
        &self,
        env: &str,
        key: &str,
        actor: &str,
    ) -> PublishOutcome {
        let filter = ExperimentFilter {
            environment: Some(env.to_owned()),
            status: Some(Status::Running),
            ..ExperimentFilter::default()
        };
        let users = match self.0.store.list_all_experiments(&filter).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(environment = env, audience = key, error = %verdict_domain::ErrorChain(&e), "cannot read the experiments an audience change touches");
                return failed(
                    "the experiments using the audience could not be read: the store failed".into(),
                );
            }
        };
        let mut scopes: Vec<Scope> = Vec::new();
        for e in users
            .into_iter()
            .filter(|e| e.audience.as_deref() == Some(key))
        {
            if !scopes.contains(&e.scope) {
                scopes.push(e.scope);
            }
        }
        if scopes.is_empty() {
            return PublishOutcome::default();
        }
        publish_scopes(&self.0, scopes, "audience.updated", actor).await
    }
}

fn failed(error: String) -> PublishOutcome {
    PublishOutcome {
        attempted: true,
        succeeded: false,
        error: Some(error),
    }
}

/// Publish `scopes` and every scope each touches (organizations that include a global
/// experiment).
async fn publish_scopes(
    state: &Inner,
    scopes: Vec<Scope>,
    trigger: &str,
    actor: &str,
) -> PublishOutcome {
    let mut all: Vec<Scope> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for scope in scopes {
        match state.publisher.touched_scopes(&scope).await {
            Ok(touched) => {
                for s in touched {
                    if !all.contains(&s) {
                        all.push(s);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(environment = %scope.environment, error = %verdict_domain::ErrorChain(&e), "cannot read the scopes a change touches");
                errors.push(
                    "the organizations' snapshots could not be listed: the store failed".into(),
                );
                all.push(scope);
            }
        }
    }
    for scope in &all {
        if let Err(e) = state.publisher.publish(scope, trigger, actor).await {
            errors.push(e.to_string());
        }
    }
    state.publications.notify();
    PublishOutcome {
        attempted: true,
        succeeded: errors.is_empty(),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// 502 `publish_failed` (the scope is pending: the publish job retries it).
fn publish_failed(e: PublishError) -> AppError {
    let details = match &e {
        PublishError::Target {
            publication,
            target,
            ..
        } => vec![serde_json::json!({"version": publication.version, "target": target})],
        PublishError::Store(_) => Vec::new(),
    };
    let store_down = matches!(&e, PublishError::Store(s) if s.is_retryable());
    let err = AppError::new(
        ErrorCode::PublishFailed,
        format!("{e}; the publish job retries it"),
    )
    .with_details(details);
    if store_down { err.retry_after(5) } else { err }
}

/// Wakes streams in this process when a publish may have made a new version (a stream also
/// checks the store every few seconds, for versions other replicas made).
#[derive(Debug, Default)]
pub struct PublicationSignal {
    notify: tokio::sync::Notify,
}

impl PublicationSignal {
    fn notify(&self) {
        self.notify.notify_waiters();
    }

    async fn wait(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }
}
