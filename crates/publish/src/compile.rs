//! A scope's live experiments, and their compiled snapshot.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use verdict_domain::growthbook::{self, SdkExperiment};
use verdict_domain::publication::etag_of_hash;
use verdict_domain::{Experiment, Scope, Status, Targeting};
use verdict_store::{AudienceStore, ExperimentFilter, ExperimentStore, StoreError};

/// Compiled bytes (JSON) with their SHA-256 and strong `ETag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    /// SHA-256 of `body`, lowercase hex.
    pub hash: String,
    /// The first 128 bits of `hash`, quoted.
    pub etag: String,
}

impl Rendered {
    /// `body` with its hash and `ETag`.
    pub fn new(body: Vec<u8>) -> Self {
        let hash = hex::encode(Sha256::digest(&body));
        Self::with_hash(body, hash)
    }

    /// `body` whose SHA-256 (lowercase hex) is known to be `hash` (a recorded version).
    pub fn with_hash(body: Vec<u8>, hash: String) -> Self {
        let etag = etag_of_hash(&hash);
        Self { body, hash, etag }
    }

    /// Whether an `If-None-Match` header value names this version.
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == self.etag)
    }
}

/// The live experiments `scope` sees, read from the store: running, paused, then completed
/// with a winner, each oldest first; for an organization, its own then the environment's
/// global ones whose key it does not use itself (its own experiment wins a key clash, as on
/// the assignment path).
pub async fn scope_experiments(
    store: &dyn ExperimentStore,
    scope: &Scope,
) -> Result<Vec<Experiment>, StoreError> {
    let mut all = live_of(store, scope).await?;
    if scope.organization.is_some() {
        let own: std::collections::HashSet<String> = all.iter().map(|e| e.key.clone()).collect();
        let global = live_of(store, &Scope::global(scope.environment.clone())).await?;
        all.extend(global.into_iter().filter(|e| !own.contains(&e.key)));
    }
    Ok(all)
}

/// The live experiments of exactly `scope`.
async fn live_of(
    store: &dyn ExperimentStore,
    scope: &Scope,
) -> Result<Vec<Experiment>, StoreError> {
    let mut all = Vec::new();
    for status in [Status::Running, Status::Paused, Status::Completed] {
        let filter = ExperimentFilter {
            environment: Some(scope.environment.clone()),
            organization: Some(scope.organization.clone()),
            status: Some(status),
            with_global: false,
            text: None,
        };
        let listed = store.list_all_experiments(&filter).await?;
        all.extend(
            listed
                .into_iter()
                .filter(|e| status != Status::Completed || e.winner.is_some()),
        );
    }
    Ok(all)
}

/// The snapshot of `experiments` (in [`scope_experiments`] order): the GrowthBook payload,
/// with the rules of the audiences running experiments name read from `audiences` (an
/// audience that no longer exists matches nobody, as on the assignment path).
pub async fn compile<'a>(
    audiences: &dyn AudienceStore,
    experiments: impl IntoIterator<Item = &'a Experiment>,
) -> Result<Rendered, StoreError> {
    let experiments: Vec<&Experiment> = experiments.into_iter().collect();
    let mut rules: HashMap<&str, Targeting> = HashMap::new();
    for e in &experiments {
        let Some(key) = e.audience.as_deref() else {
            continue;
        };
        if e.status == Status::Running && e.winner.is_none() && !rules.contains_key(key) {
            let found = audiences.get_audience(&e.scope.environment, key).await?;
            rules.insert(key, found.map_or_else(Targeting::nobody, |a| a.rules));
        }
    }
    let items = experiments.iter().map(|e| SdkExperiment {
        experiment: e,
        audience: e.audience.as_deref().and_then(|key| rules.get(key)),
    });
    let payload = growthbook::payload(items);
    let body = serde_json::to_vec(&payload)
        .map_err(|e| StoreError::internal("encoding a config snapshot", e))?;
    Ok(Rendered::new(body))
}
