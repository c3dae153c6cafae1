//! What a job is: a [`Job`] names itself, says when it runs ([`Schedule`]) and does one run
//! under the lease the runner holds for it ([`RunContext`]), returning its typed report or a
//! [`JobError`] that keeps its causes.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use verdict_store::{Fence, StoreError, Trigger};

/// When the scheduler runs a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// On a cron schedule (seconds first, UTC): each tick runs once across replicas.
    Cron(String),
    /// Continuously: whichever replica holds the lease runs it back to back, one run per
    /// tenure (the job bounds how long a scheduled run lasts); the others look at the lease
    /// every third of its duration and take over when it lapses.
    Continuous,
}

impl Schedule {
    /// The cron expression, if any.
    pub fn cron(&self) -> Option<&str> {
        match self {
            Schedule::Cron(expr) => Some(expr),
            Schedule::Continuous => None,
        }
    }
}

/// What a run knows about itself.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub trigger: Trigger,
    /// The lease's fence: every write the run makes carries it, so a holder that lost the
    /// lease cannot write over its successor.
    pub fence: Fence,
    /// Narrow the run to one experiment (its id, or its key in the default scope); only
    /// jobs whose [`Job::takes_experiment`] is true are given one.
    pub experiment: Option<String>,
    /// Cancelled when the process shuts down: a long run ends early (after finishing the
    /// step in progress).
    pub stop: CancellationToken,
    /// When the run started.
    pub started_at: OffsetDateTime,
}

/// Why a run failed. `Display` names what failed; the causes follow as `source()`s, so the
/// run record and the log carry the whole chain
/// ([`verdict_domain::error_chain()`]).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run was asked for something it cannot do (e.g. an unknown experiment).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// One job. Implemented next to the job's logic (`aggregator/`, `retention/`, `webhooks/`);
/// the [`crate::Runner`] leases, records, schedules and stops every job the same way.
#[async_trait]
pub trait Job: Send + Sync + fmt::Debug + 'static {
    /// What a successful run reports (stored in its run record as JSON).
    type Report: Serialize + Send + 'static;

    /// The job's name in leases, run records, metrics, the CLI and the internal API.
    fn name(&self) -> &'static str;

    fn schedule(&self) -> Schedule;

    /// Whether a run may be narrowed to one experiment ([`RunContext::experiment`]).
    fn takes_experiment(&self) -> bool {
        false
    }

    /// One run. Writes carry `ctx.fence`; a long run watches `ctx.stop`.
    async fn run(&self, ctx: RunContext) -> Result<Self::Report, JobError>;

    /// How far behind the job is, in seconds (e.g. the age of the oldest event not yet
    /// aggregated); `None` when the job has no such notion.
    async fn lag(&self, _now: OffsetDateTime) -> Result<Option<f64>, JobError> {
        Ok(None)
    }
}

/// A [`Job`] with its report as JSON, so jobs of different report types share one registry.
#[async_trait]
pub(crate) trait AnyJob: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn schedule(&self) -> Schedule;
    fn takes_experiment(&self) -> bool;
    async fn run_json(&self, ctx: RunContext) -> Result<serde_json::Value, JobError>;
    async fn lag(&self, now: OffsetDateTime) -> Result<Option<f64>, JobError>;
}

#[async_trait]
impl<J: Job> AnyJob for J {
    fn name(&self) -> &'static str {
        Job::name(self)
    }

    fn schedule(&self) -> Schedule {
        Job::schedule(self)
    }

    fn takes_experiment(&self) -> bool {
        Job::takes_experiment(self)
    }

    async fn run_json(&self, ctx: RunContext) -> Result<serde_json::Value, JobError> {
        let report = Job::run(self, ctx).await?;
        serde_json::to_value(report)
            .map_err(|e| JobError::Other(anyhow::Error::new(e).context("encoding the report")))
    }

    async fn lag(&self, now: OffsetDateTime) -> Result<Option<f64>, JobError> {
        Job::lag(self, now).await
    }
}
