//! [`AssignmentStore`]: subjects' stored assignments and QA overrides.

use async_trait::async_trait;
use time::OffsetDateTime;
use verdict_domain::{Assignment, NewEvent};

use crate::Result;
use crate::model::{AppendOutcome, SubjectRecord};

/// Stored assignments (never updated or deleted once made) and QA overrides (forced
/// variants).
#[async_trait]
pub trait AssignmentStore: Send + Sync + std::fmt::Debug {
    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>>;

    /// Store `assignment` unless the subject already has one; either way return the stored
    /// assignment and whether this call created it. Atomic: concurrent callers for one
    /// subject all get the same assignment.
    async fn get_or_create_assignment(&self, assignment: &Assignment)
    -> Result<(Assignment, bool)>;

    /// Set (`Some`) or clear (`None`) a QA override for one subject, audited.
    async fn set_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
        variant: Option<&str>,
        actor: &str,
    ) -> Result<()>;

    async fn get_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<String>>;

    /// Whether any subject of the experiment has a QA override. The assignment hot path
    /// reads this with the experiment (not per request) and looks up overrides per subject
    /// only when there are some.
    async fn has_forced_variants(&self, experiment_id: &str) -> Result<bool>;

    /// The experiment's QA overrides as (subject, variant), by subject, at most `limit`.
    async fn forced_variants(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>>;

    /// The QA override and the stored assignment of one subject, read together: the
    /// assignment hot path needs both. Adapters that can read both at once override this.
    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        Ok(SubjectRecord {
            forced: self.get_forced_variant(experiment_id, subject).await?,
            assignment: self.get_assignment(experiment_id, subject).await?,
        })
    }
}

/// The exposure event recorded with an assignment (see
/// [`crate::Store::get_or_create_exposed_assignment`]): everything but what the stored
/// assignment decides (subject, variant, time).
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// Derived from the subject by the caller, so that it is stored once per subject.
    pub event_id: String,
    /// The experiment's exposure event.
    pub event: String,
    pub received_at: OffsetDateTime,
}

impl Exposure {
    /// The event of `assignment`'s subject: its variant, at its assignment time.
    pub fn of(&self, assignment: &Assignment) -> NewEvent {
        NewEvent {
            experiment_id: assignment.experiment_id.clone(),
            event_id: self.event_id.clone(),
            subject: assignment.subject.clone(),
            variant: Some(assignment.variant.clone()),
            event: self.event.clone(),
            value: 1.0,
            ts: assignment.assigned_at,
            received_at: self.received_at,
            meta: None,
        }
    }

    /// The append of an exposure is stored or was already: anything else means the
    /// assignment it follows is not what was just stored.
    pub(crate) fn check(outcomes: &[AppendOutcome]) -> Result<()> {
        match outcomes {
            [AppendOutcome::Accepted | AppendOutcome::Duplicate] => Ok(()),
            other => Err(crate::StoreError::corrupt(format!(
                "the exposure of a stored assignment was refused: {other:?}"
            ))),
        }
    }
}
