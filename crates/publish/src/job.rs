//! The `publish` job: publishes every scope whose snapshot changed without a request that
//! published it (a winner the evaluation job decided, a start or an end the lifecycle job
//! made), and retries scopes whose last publish failed.

use std::collections::BTreeSet;

use serde::Serialize;
use verdict_domain::{Scope, Status};
use verdict_jobs::{Job, JobError, RunContext, Schedule};
use verdict_store::ExperimentFilter;

use crate::publisher::Publisher;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishReport {
    /// Scopes compiled: those with a published version or a pending retry, and those with
    /// live experiments.
    pub scopes: u64,
    /// New versions recorded.
    pub published: u64,
    /// Scopes whose publish failed again (still pending), each with its error.
    pub failed: Vec<String>,
}

/// The `publish` job.
#[derive(Debug, Clone)]
pub struct PublishJob {
    publisher: Publisher,
    schedule: String,
}

impl PublishJob {
    pub fn new(publisher: Publisher, schedule: String) -> Self {
        Self {
            publisher,
            schedule,
        }
    }

    /// Every scope a run compiles.
    async fn scopes(&self) -> Result<BTreeSet<(String, Option<String>)>, JobError> {
        let store = self.publisher.store();
        let mut scopes: BTreeSet<(String, Option<String>)> = store
            .publication_scopes(None)
            .await?
            .into_iter()
            .map(|s| (s.environment, s.organization))
            .collect();
        for status in [Status::Running, Status::Completed] {
            let filter = ExperimentFilter {
                status: Some(status),
                ..ExperimentFilter::default()
            };
            for e in store.list_all_experiments(&filter).await? {
                if status == Status::Running || e.winner.is_some() {
                    scopes.insert((e.scope.environment, e.scope.organization));
                }
            }
        }
        Ok(scopes)
    }
}

#[async_trait::async_trait]
impl Job for PublishJob {
    type Report = PublishReport;

    fn name(&self) -> &'static str {
        "publish"
    }

    fn schedule(&self) -> Schedule {
        Schedule::Cron(self.schedule.clone())
    }

    async fn run(&self, ctx: RunContext) -> Result<PublishReport, JobError> {
        let mut report = PublishReport::default();
        for (environment, organization) in self.scopes().await? {
            if ctx.stop.is_cancelled() {
                break;
            }
            let scope = Scope::new(environment, organization);
            report.scopes += 1;
            match self.publisher.publish(&scope, "job", "job:publish").await {
                Ok(p) => report.published += u64::from(p.created),
                Err(e) => report.failed.push(format!(
                    "{}{}: {e}",
                    scope.environment,
                    scope
                        .organization
                        .as_deref()
                        .map(|o| format!("/{o}"))
                        .unwrap_or_default()
                )),
            }
        }
        Ok(report)
    }
}
