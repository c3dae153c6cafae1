//! Assignments: which variant a subject sees, and how a subject is bucketed.
//!
//! Bucketing is GrowthBook's (hash v2 of `salt + subject`, `getBucketRanges`,
//! `chooseVariation`), so a GrowthBook SDK given the same salt, coverage and weights (or the
//! same explicit ranges) puts a subject in the same variant. The first assignment is stored and wins over later weight
//! changes (stickiness is the store's job; see `verdict-store`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::experiment::Experiment;
use crate::hashing;

/// Longest subject id accepted.
pub const MAX_SUBJECT_LEN: usize = 256;

/// A subject's stored assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub experiment_id: String,
    pub subject: String,
    pub variant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub assigned_at: OffsetDateTime,
    /// The declared attributes the request carried (`assignment.context`), kept as they
    /// were when the subject was first assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
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
    match hashing::choose_variation(n, &experiment.bucket_ranges()) {
        Some(i) => Bucket::Variant(i),
        None => Bucket::OutsideCoverage,
    }
}

/// The variant a GrowthBook SDK given this experiment's payload puts `subject` in, once its
/// targeting matched (the SDK has the attributes, Verdict applies none here): the namespace,
/// then the hash and bucket ranges. `None` when the subject is outside the experiment.
pub fn sdk_variant(experiment: &Experiment, subject: &str) -> Option<usize> {
    if outside_namespace(experiment, subject) {
        return None;
    }
    match bucket(experiment, subject) {
        Bucket::Variant(i) => Some(i),
        Bucket::OutsideCoverage => None,
    }
}

/// Whether the experiment has a namespace and `subject` is outside its slice.
fn outside_namespace(experiment: &Experiment, subject: &str) -> bool {
    experiment
        .namespace
        .as_ref()
        .is_some_and(|n| !n.contains(subject))
}

/// The key under which a subject's assignment and events are stored: an organization's
/// subjects are qualified by it (`org:subject`), so that the same subject id in two
/// organizations is two subjects, in the organization's own experiments and in global ones
/// it is served. Bucketing ([`bucket`]) always hashes the bare subject id, as a GrowthBook
/// SDK given that id would.
pub fn subject_key<'a>(organization: Option<&str>, subject: &'a str) -> Cow<'a, str> {
    match organization {
        Some(org) => Cow::Owned(format!("{org}:{subject}")),
        None => Cow::Borrowed(subject),
    }
}

/// Why a subject got the variant it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// In the experiment: a new or stored (sticky) assignment.
    Assigned,
    /// A QA override for this subject.
    Forced,
    /// The experiment is a draft, archived, or completed without a winner.
    NotRunning,
    /// Paused: stored assignments are served, no new subjects enter.
    Paused,
    /// Eligible but outside the traffic allocation.
    OutsideCoverage,
    /// Outside the experiment's slice of its namespace (another experiment of the
    /// namespace may hold the subject).
    OutsideNamespace,
    /// The experiment's (or its audience's) targeting rules do not match.
    TargetingMiss,
    /// A winner was decided: everyone gets the winner's config.
    Winner,
    /// The request did not carry the id of the experiment's unit (`POST /v1/assignments`
    /// for an `anon_id` or `user_id` experiment without one, say): the control, nothing
    /// stored.
    Unidentified,
}

impl Reason {
    /// The OpenFeature evaluation reason of an assignment with this reason: `SPLIT` in the
    /// experiment, `TARGETING_MATCH` for a QA override, `STATIC` for a decided winner,
    /// `DISABLED` when not running, `DEFAULT` for the control served outside the experiment.
    pub fn openfeature(self) -> &'static str {
        match self {
            Reason::Assigned => "SPLIT",
            Reason::Forced => "TARGETING_MATCH",
            Reason::Winner => "STATIC",
            Reason::NotRunning => "DISABLED",
            Reason::Paused
            | Reason::OutsideCoverage
            | Reason::TargetingMiss
            | Reason::OutsideNamespace
            | Reason::Unidentified => "DEFAULT",
        }
    }
}

/// What to serve a subject. The variant is always usable: when the subject is not in the
/// experiment it is the control (or the winner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into `experiment.variants`.
    pub variant: usize,
    pub in_experiment: bool,
    pub reason: Reason,
    /// True when the caller must store a new assignment for this subject.
    pub create: bool,
}

/// What the store knows about this subject.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubjectState<'a> {
    /// The variant key of its stored assignment.
    pub stored: Option<&'a str>,
    /// Its QA override's variant key.
    pub forced: Option<&'a str>,
}

/// Decide what `subject` sees (SPEC §3). `audience` holds the rules of the experiment's
/// audience when it names one (both must match).
pub fn decide(
    experiment: &Experiment,
    audience: Option<&crate::targeting::Targeting>,
    subject: &str,
    attributes: &crate::targeting::Attributes,
    state: SubjectState<'_>,
) -> Decision {
    use crate::status::Status;
    let control = experiment.control_index();
    let index_of = |key: &str| experiment.variants.iter().position(|v| v.key == key);
    let outside = |reason| Decision {
        variant: control,
        in_experiment: false,
        reason,
        create: false,
    };

    if let Some(i) = experiment
        .winner
        .as_ref()
        .and_then(|w| index_of(&w.variant))
    {
        return Decision {
            variant: i,
            in_experiment: false,
            reason: Reason::Winner,
            create: false,
        };
    }
    if let Some(i) = state.forced.and_then(index_of) {
        return Decision {
            variant: i,
            in_experiment: false,
            reason: Reason::Forced,
            create: false,
        };
    }
    match experiment.status {
        Status::Running | Status::Paused => {}
        Status::Draft | Status::Completed | Status::Archived => return outside(Reason::NotRunning),
    }
    if let Some(i) = state.stored.and_then(index_of) {
        return Decision {
            variant: i,
            in_experiment: true,
            reason: Reason::Assigned,
            create: false,
        };
    }
    if experiment.status == Status::Paused {
        return outside(Reason::Paused);
    }
    // GrowthBook checks the namespace before targeting.
    if outside_namespace(experiment, subject) {
        return outside(Reason::OutsideNamespace);
    }
    let targeted =
        audience.is_none_or(|a| a.matches(attributes)) && experiment.targeting.matches(attributes);
    if !targeted {
        return outside(Reason::TargetingMiss);
    }
    match bucket(experiment, subject) {
        Bucket::Variant(i) => Decision {
            variant: i,
            in_experiment: true,
            reason: Reason::Assigned,
            // Every assignment is stored: events are attributed to it. (Non-sticky
            // assignment is refused when an experiment is created.)
            create: true,
        },
        Bucket::OutsideCoverage => outside(Reason::OutsideCoverage),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::experiment::{ExperimentInput, PolicyMode, Provided, Winner};
    use crate::status::Status;
    use crate::targeting::{Attributes, Targeting};
    use crate::{Scope, Variant};

    fn experiment(status: Status, coverage: f64) -> Experiment {
        let mut e = draft(json!({
            "key": "k", "coverage": coverage,
            "variants": [{"key": "a"}, {"key": "b"}],
            "targeting": [{"conditions": [{"attribute": "country", "operator": "eq", "value": "US"}]}]
        }));
        e.status = status;
        e
    }

    fn draft(input: serde_json::Value) -> Experiment {
        serde_json::from_value::<ExperimentInput>(input)
            .unwrap()
            .into_experiment(
                Scope::default(),
                Provided {
                    id: "id".into(),
                    salt: "s".into(),
                    now: OffsetDateTime::UNIX_EPOCH,
                },
            )
            .unwrap()
    }

    fn us() -> Attributes {
        json!({"country": "US"}).as_object().unwrap().clone()
    }

    #[test]
    fn a_running_experiment_assigns_eligible_subjects_and_asks_to_store_them() {
        let e = experiment(Status::Running, 1.0);
        let d = decide(&e, None, "u1", &us(), SubjectState::default());
        assert!(d.in_experiment && d.create);
        assert_eq!(d.reason, Reason::Assigned);
        assert_eq!(Bucket::Variant(d.variant), bucket(&e, "u1"));
    }

    #[test]
    fn a_stored_assignment_wins_over_the_hash() {
        let e = experiment(Status::Running, 1.0);
        let other = if bucket(&e, "u") == Bucket::Variant(0) {
            "b"
        } else {
            "a"
        };
        let d = decide(
            &e,
            None,
            "u",
            &Attributes::new(),
            SubjectState {
                stored: Some(other),
                forced: None,
            },
        );
        assert_eq!(e.variants[d.variant].key, other);
        assert!(d.in_experiment && !d.create);
    }

    #[test]
    fn every_outcome_of_spec_section_3() {
        let draft = experiment(Status::Draft, 1.0);
        assert_eq!(
            decide(&draft, None, "u", &us(), SubjectState::default()).reason,
            Reason::NotRunning
        );

        let paused = experiment(Status::Paused, 1.0);
        let d = decide(&paused, None, "u", &us(), SubjectState::default());
        assert_eq!(
            (d.reason, d.in_experiment, d.variant),
            (Reason::Paused, false, 0)
        );
        let d = decide(
            &paused,
            None,
            "u",
            &us(),
            SubjectState {
                stored: Some("b"),
                forced: None,
            },
        );
        assert_eq!(
            (d.reason, d.variant),
            (Reason::Assigned, 1),
            "paused keeps stored assignments"
        );

        let running = experiment(Status::Running, 1.0);
        let d = decide(
            &running,
            None,
            "u",
            &Attributes::new(),
            SubjectState::default(),
        );
        assert_eq!(
            (d.reason, d.in_experiment, d.create),
            (Reason::TargetingMiss, false, false)
        );

        let audience: Targeting = serde_json::from_value(json!([
            {"conditions": [{"attribute": "plan", "operator": "eq", "value": "pro"}]}
        ]))
        .unwrap();
        let d = decide(
            &running,
            Some(&audience),
            "u",
            &us(),
            SubjectState::default(),
        );
        assert_eq!(
            d.reason,
            Reason::TargetingMiss,
            "audience and experiment rules must both match"
        );

        let none = experiment(Status::Running, 0.0);
        assert_eq!(
            decide(&none, None, "u", &us(), SubjectState::default()).reason,
            Reason::OutsideCoverage
        );

        let d = decide(
            &running,
            None,
            "u",
            &us(),
            SubjectState {
                stored: None,
                forced: Some("b"),
            },
        );
        assert_eq!((d.reason, d.variant, d.create), (Reason::Forced, 1, false));

        let mut done = experiment(Status::Completed, 1.0);
        assert_eq!(
            decide(&done, None, "u", &us(), SubjectState::default()).reason,
            Reason::NotRunning
        );
        done.winner = Some(Winner {
            variant: "b".into(),
            decided_at: OffsetDateTime::UNIX_EPOCH,
            source: PolicyMode::Manual,
            details: json!({}),
        });
        let d = decide(
            &done,
            None,
            "x",
            &Attributes::new(),
            SubjectState {
                stored: Some("a"),
                forced: None,
            },
        );
        assert_eq!(
            (d.reason, d.variant),
            (Reason::Winner, 1),
            "everyone gets the winner"
        );
    }

    #[test]
    fn every_new_assignment_is_stored_so_that_its_events_count() {
        // Even an experiment stored with `sticky: false` (refused at creation since).
        let mut e = experiment(Status::Running, 1.0);
        e.assignment.sticky = false;
        let d = decide(&e, None, "u", &us(), SubjectState::default());
        assert!(d.in_experiment && d.create);
    }

    #[test]
    fn a_flagged_control_is_served_outside_the_experiment() {
        let mut e = experiment(Status::Draft, 1.0);
        e.variants = vec![
            Variant {
                key: "a".into(),
                name: "a".into(),
                weight: 0.5,
                config: json!(1),
                control: false,
                range: None,
            },
            Variant {
                key: "b".into(),
                name: "b".into(),
                weight: 0.5,
                config: json!(2),
                control: true,
                range: None,
            },
        ];
        assert_eq!(
            decide(&e, None, "u", &us(), SubjectState::default()).variant,
            1
        );
    }

    #[test]
    fn explicit_ranges_alone_decide_the_bucket() {
        let e = draft(json!({
            "key": "k",
            "variants": [{"key": "a", "range": [0.6, 1.0]}, {"key": "b", "range": [0.0, 0.2]}]
        }));
        let mut seen = [0usize; 3];
        for i in 0..10_000 {
            let subject = format!("u{i}");
            let n = hashing::hash("s", &subject, 2).unwrap();
            let expected = if (0.6..1.0).contains(&n) {
                Bucket::Variant(0)
            } else if (0.0..0.2).contains(&n) {
                Bucket::Variant(1)
            } else {
                Bucket::OutsideCoverage
            };
            assert_eq!(bucket(&e, &subject), expected, "{subject}: {n}");
            seen[match expected {
                Bucket::Variant(v) => v,
                Bucket::OutsideCoverage => 2,
            }] += 1;
        }
        // About 40 %, 20 % and 40 % of 10,000.
        assert!(seen.iter().all(|&c| c > 1_500), "{seen:?}");
    }

    #[test]
    fn a_namespace_admits_only_the_subjects_of_its_slice_and_keeps_stored_ones() {
        let mut e = experiment(Status::Running, 1.0);
        e.namespace = Some(crate::Namespace {
            id: "checkout".into(),
            start: 0.0,
            end: 0.3,
        });
        let (mut inside, mut outside) = (0, 0);
        for i in 0..2_000 {
            let subject = format!("u{i}");
            let d = decide(&e, None, &subject, &us(), SubjectState::default());
            if hashing::in_namespace(&subject, ("checkout", 0.0, 0.3)) {
                assert_eq!(d.reason, Reason::Assigned, "{subject}");
                inside += 1;
            } else {
                assert_eq!(d.reason, Reason::OutsideNamespace, "{subject}");
                assert!(!d.in_experiment && !d.create);
                outside += 1;
            }
        }
        assert!(inside > 400 && outside > 1_200, "{inside} / {outside}");
        // A subject assigned before the namespace was set keeps its variant.
        let left_out = (0..)
            .map(|i| format!("u{i}"))
            .find(|s| !hashing::in_namespace(s, ("checkout", 0.0, 0.3)))
            .unwrap();
        let stored = SubjectState {
            stored: Some("b"),
            forced: None,
        };
        let d = decide(&e, None, &left_out, &us(), stored);
        assert_eq!(
            (d.reason, e.variants[d.variant].key.as_str()),
            (Reason::Assigned, "b")
        );
    }
}
