//! What SDKs that evaluate experiments locally are served: the GrowthBook SDK payload of the
//! caller's scope ([`verdict_domain::growthbook`]), rendered once per version of the scope's
//! live experiments.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use verdict_domain::growthbook::{self, SdkExperiment};
use verdict_domain::{Scope, Status, Targeting};

use crate::assignments::{LiveList, audience_rules};
use crate::auth::{Caller, ScopeParams};
use crate::error::AppError;
use crate::{App, Inner};

/// A rendered payload: its JSON and its strong `ETag` (a digest of the JSON, quoted).
#[derive(Debug)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub etag: String,
}

impl Rendered {
    /// `body` with its `ETag`.
    pub fn new(body: Vec<u8>) -> Self {
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Self { body, etag }
    }

    /// Whether an `If-None-Match` header value names this version.
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == self.etag)
    }
}

/// Payloads by scope, each with the live list it was rendered from: the experiment cache
/// hands out a new list when it re-reads the store (at most once a second per scope), so a
/// payload is rendered again only then, not per request.
#[derive(Debug, Default)]
pub struct PayloadCache {
    by_scope: Mutex<HashMap<Scope, (LiveList, Arc<Rendered>)>>,
}

/// Scopes the payload cache holds before it starts over.
const PAYLOAD_CACHE_MAX: usize = 1_000;

impl App {
    /// The GrowthBook payload of the live experiments the caller's scope sees (its key's
    /// environment and organization): running ones as experiment rules, those with a
    /// decided winner as forced values. Read through the same short-lived cache as
    /// `POST /v1/assignments`.
    pub async fn growthbook_payload(&self, caller: &Caller) -> Result<Arc<Rendered>, AppError> {
        let scope = caller.scope(&ScopeParams::default())?;
        let live = self.0.experiments.live(&self.0, &scope).await?;
        {
            let cache = self
                .0
                .payloads
                .by_scope
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((list, rendered)) = cache.get(&scope)
                && Arc::ptr_eq(list, &live)
            {
                return Ok(rendered.clone());
            }
        }
        let rendered = Arc::new(render(&self.0, &scope, &live).await?);
        let mut cache = self
            .0
            .payloads
            .by_scope
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PAYLOAD_CACHE_MAX {
            cache.clear();
        }
        cache.insert(scope, (live, rendered.clone()));
        Ok(rendered)
    }
}

/// The payload of `live`, with the rules of the audiences its running experiments name.
async fn render(state: &Inner, scope: &Scope, live: &LiveList) -> Result<Rendered, AppError> {
    let mut audiences: HashMap<&str, Targeting> = HashMap::new();
    for e in live.iter().map(|l| &l.experiment) {
        let Some(key) = e.audience.as_deref() else {
            continue;
        };
        if e.status == Status::Running && e.winner.is_none() && !audiences.contains_key(key) {
            let rules = audience_rules(state, &scope.environment, key).await?;
            audiences.insert(key, rules);
        }
    }
    let items = live.iter().map(|l| SdkExperiment {
        experiment: &l.experiment,
        audience: l
            .experiment
            .audience
            .as_deref()
            .and_then(|key| audiences.get(key)),
    });
    let payload = growthbook::payload(items);
    let body = serde_json::to_vec(&payload).map_err(AppError::internal)?;
    Ok(Rendered::new(body))
}
