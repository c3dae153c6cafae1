//! What SDKs that evaluate experiments locally are served: the GrowthBook SDK payload of the
//! caller's scope ([`verdict_domain::growthbook`]).

use std::collections::HashMap;

use verdict_domain::growthbook::{self, Payload, SdkExperiment};
use verdict_domain::{Status, Targeting};

use crate::App;
use crate::auth::{Caller, ScopeParams};
use crate::error::AppError;

impl App {
    /// The GrowthBook payload of the live experiments the caller's scope sees (its key's
    /// environment and organization): running ones as experiment rules, those with a
    /// decided winner as forced values. Read through the same short-lived cache as
    /// `POST /v1/assignments`.
    pub async fn growthbook_payload(&self, caller: &Caller) -> Result<Payload, AppError> {
        let scope = caller.scope(&ScopeParams::default())?;
        let live = self.0.experiments.live(&self.0, &scope).await?;
        let mut audiences: HashMap<&str, Targeting> = HashMap::new();
        for e in live.iter().map(|l| &l.experiment) {
            let Some(key) = e.audience.as_deref() else {
                continue;
            };
            if e.status == Status::Running && e.winner.is_none() && !audiences.contains_key(key) {
                let rules = self
                    .0
                    .store
                    .get_audience(&scope.environment, key)
                    .await?
                    // A deleted audience matches nobody, as on the assignment path.
                    .map_or_else(Targeting::nobody, |a| a.rules);
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
        // No live experiment: a fixed date, so that the empty payload's ETag stays the same.
        Ok(growthbook::payload(items, time::OffsetDateTime::UNIX_EPOCH))
    }
}
