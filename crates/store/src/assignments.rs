//! [`AssignmentStore`]: subjects' stored assignments and QA overrides.

use async_trait::async_trait;
use verdict_domain::Assignment;

use crate::Result;
use crate::model::SubjectRecord;

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

    /// The QA override and the stored assignment of one subject, read together: the
    /// assignment hot path needs both. Adapters that can read both at once override this.
    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        Ok(SubjectRecord {
            forced: self.get_forced_variant(experiment_id, subject).await?,
            assignment: self.get_assignment(experiment_id, subject).await?,
        })
    }
}
