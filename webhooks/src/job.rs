//! The `webhooks` job: the dispatcher as a continuous job of the runner. The replica holding
//! the lease delivers for [`verdict_jobs::CONTINUOUS_RUN`] per scheduled run; a triggered
//! run (HTTP, CLI) drains what is due and ends.

use async_trait::async_trait;
use verdict_jobs::{Job, JobError, RunContext, Schedule};
use verdict_metrics::Metrics;
use verdict_store::Trigger;

use crate::dispatcher::{DispatchReport, Dispatcher};

#[derive(Debug, Clone)]
pub struct DeliveryJob {
    dispatcher: Dispatcher,
    metrics: Metrics,
}

impl DeliveryJob {
    pub fn new(dispatcher: Dispatcher, metrics: Metrics) -> Self {
        Self {
            dispatcher,
            metrics,
        }
    }
}

#[async_trait]
impl Job for DeliveryJob {
    type Report = DispatchReport;

    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn schedule(&self) -> Schedule {
        Schedule::Continuous
    }

    async fn run(&self, ctx: RunContext) -> Result<DispatchReport, JobError> {
        let for_at_most =
            (ctx.trigger == Trigger::Schedule).then_some(verdict_jobs::CONTINUOUS_RUN);
        let report = self.dispatcher.run_for(for_at_most, &ctx.stop).await?;
        for (outcome, n) in [
            ("delivered", report.delivered),
            ("retried", report.retried),
            ("failed", report.failed),
        ] {
            self.metrics.webhook_attempts(outcome, n);
        }
        Ok(report)
    }
}
