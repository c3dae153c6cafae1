//! Assignments: which variant a subject sees, and how a subject is bucketed.
//!
//! Bucketing is GrowthBook's (hash v2 of `salt + subject`, `getBucketRanges`,
//! `chooseVariation`), so a GrowthBook SDK given the same salt, coverage and weights puts a
//! subject in the same variant. The first assignment is stored and wins over later weight
//! changes (stickiness is the store's job; see `verdict-store`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::experiment::Experiment;
use crate::hashing;

/// Longest subject id accepted.
pub const MAX_SUBJECT_LEN: usize = 256;

/// A subject's stored assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub experiment_id: String,
    pub subject: String,
    pub variant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub assigned_at: OffsetDateTime,
}

/// Where the hash puts a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Inside coverage, in the variant at this index.
    Variant(usize),
    /// Outside the experiment's traffic allocation.
    OutsideCoverage,
}

/// Bucket `subject` into `experiment` exactly as a GrowthBook SDK would.
pub fn bucket(experiment: &Experiment, subject: &str) -> Bucket {
    let salt = &experiment.assignment.salt;
    let Some(n) = hashing::hash(salt, subject, u32::from(experiment.assignment.hash_version))
    else {
        return Bucket::OutsideCoverage;
    };
    let weights = experiment.weights();
    let ranges = hashing::bucket_ranges(weights.len(), experiment.coverage, Some(&weights));
    match hashing::choose_variation(n, &ranges) {
        Some(i) => Bucket::Variant(i),
        None => Bucket::OutsideCoverage,
    }
}

/// The key under which a subject's assignment is stored: per-organization experiments
/// include the organization so that the same subject id in two organizations is two subjects.
pub fn subject_key(experiment: &Experiment, subject: &str) -> String {
    match &experiment.scope.organization {
        Some(org) => format!("{org}:{subject}"),
        None => subject.to_owned(),
    }
}
