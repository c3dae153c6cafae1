//! What SDKs that evaluate experiments locally are served: the GrowthBook SDK payload of the
//! caller's scope, compiled by the same function as published config snapshots
//! ([`verdict_publish::compile()`]) from the scope's live experiments as the assignment path
//! caches them, once per version of that list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use verdict_domain::Scope;

use crate::assignments::LiveList;
use crate::auth::{Caller, ScopeParams};
use crate::error::AppError;
use crate::{App, Inner};

pub use verdict_publish::Rendered;

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
        let rendered = Arc::new(render(&self.0, &live).await?);
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

/// The payload of `live`: the config snapshot compiler's output for these experiments.
async fn render(state: &Inner, live: &LiveList) -> Result<Rendered, AppError> {
    Ok(verdict_publish::compile(&*state.store, live.iter().map(|l| &l.experiment)).await?)
}
