//! Metric thresholds: alerts an experimenter configures on an experiment ("tell me when the
//! treatment's error rate reaches 5%"), announced by an `experiment.metrics_threshold_reached`
//! webhook once per crossing.
//!
//! A threshold watches one figure of one of the experiment's metrics per variant (or of one
//! variant): the metric's estimate in its unit (see [`crate::metric`]), or a plain count.
//! After each aggregation the figures are read ([`Reading`]) and
//! [`ThresholdState::advance`] decides, per (threshold, variant), whether it was **reached**:
//! the figure is at or above `above` (at or below `below`). Going from not reached to reached
//! is a crossing, announced once; falling back re-arms it silently, so a figure that
//! oscillates around the value is announced at each new crossing and never while it stays.
//! The state is stored per experiment, with each crossing's message written in the same
//! atomic step, so a crossing is announced exactly once even across crashes and replicas.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::validation::{Problems, check_key};

/// Most thresholds one experiment may have.
pub const MAX_THRESHOLDS: usize = 20;

/// Which figure of a metric a threshold watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ThresholdStatistic {
    /// The metric's estimate per variant, in its unit: a conversion rate (`binomial`), events
    /// per subject (`count`), value per subject (`sum`) or value per event (`mean`), after
    /// the metric's cap, exactly as results show it.
    #[default]
    Estimate,
    /// Subjects assigned to the variant.
    Subjects,
    /// Subjects with at least one of the metric's events.
    ConvertedSubjects,
    /// The metric's events.
    Events,
    /// Σ of the metric's event values.
    Sum,
}

impl ThresholdStatistic {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Estimate => "estimate",
            Self::Subjects => "subjects",
            Self::ConvertedSubjects => "converted_subjects",
            Self::Events => "events",
            Self::Sum => "sum",
        }
    }
}

/// One threshold of an experiment: `{"metric": "error", "above": 0.05}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MetricThreshold {
    /// The event of one of the experiment's metrics (primary, secondary or guardrail).
    pub metric: String,
    /// The figure watched (default `estimate`).
    #[serde(default)]
    pub statistic: ThresholdStatistic,
    /// Reached when the figure is at or above this value. Exactly one of `above` and
    /// `below` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Reached when the figure is at or below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Only this variant; absent: every variant, each crossing announced on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A variant is judged only once it has this many subjects (default 0), so that an early
    /// figure from a handful of subjects does not fire the alert.
    #[serde(default)]
    pub min_subjects: u64,
}

impl MetricThreshold {
    /// `(direction, value)`: `"above"` or `"below"`, and the configured value.
    pub fn bound(&self) -> (&'static str, f64) {
        match (self.above, self.below) {
            (Some(v), _) => ("above", v),
            (None, Some(v)) => ("below", v),
            (None, None) => ("above", f64::INFINITY),
        }
    }

    /// Whether `figure` reaches this threshold.
    pub fn reached_by(&self, figure: f64) -> bool {
        match (self.above, self.below) {
            (Some(v), _) => figure >= v,
            (None, Some(v)) => figure <= v,
            (None, None) => false,
        }
    }

    /// What identifies this threshold in the stored state: every setting that decides when
    /// it is reached, so that changing one starts it afresh.
    pub fn state_key(&self) -> String {
        let (direction, value) = self.bound();
        format!(
            "{}:{}:{direction}:{value:?}:{}",
            self.metric,
            self.statistic.as_str(),
            self.min_subjects
        )
    }

    /// Problems of this threshold at `field`, given the experiment's metric events and
    /// variant keys.
    pub fn check<'a>(
        &self,
        p: &mut Problems,
        field: &str,
        metrics: &[&str],
        mut variants: impl Iterator<Item = &'a str>,
    ) {
        check_key(p, &format!("{field}.metric"), &self.metric);
        if !self.metric.is_empty() && !metrics.contains(&self.metric.as_str()) {
            p.push(
                format!("{field}.metric"),
                format!(
                    "must be the event of one of the experiment's metrics ({})",
                    metrics.join(", ")
                ),
            );
        }
        match (self.above, self.below) {
            (Some(_), Some(_)) | (None, None) => {
                p.push(field.to_owned(), "give exactly one of `above` and `below`")
            }
            (Some(v), None) | (None, Some(v)) if !v.is_finite() => {
                let which = if self.above.is_some() {
                    "above"
                } else {
                    "below"
                };
                p.push(format!("{field}.{which}"), "must be a finite number");
            }
            _ => {}
        }
        if let Some(v) = &self.variant
            && !variants.any(|k| k == v)
        {
            p.push(
                format!("{field}.variant"),
                "must be the key of one of the experiment's variants",
            );
        }
    }
}

/// Every problem of an experiment's `thresholds`.
pub fn check_thresholds<'a>(
    p: &mut Problems,
    thresholds: &[MetricThreshold],
    metrics: &[&str],
    variants: impl Iterator<Item = &'a str> + Clone,
) {
    if thresholds.len() > MAX_THRESHOLDS {
        p.push(
            "thresholds",
            format!("must have at most {MAX_THRESHOLDS} entries"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, t) in thresholds.iter().enumerate() {
        let field = format!("thresholds[{i}]");
        t.check(p, &field, metrics, variants.clone());
        if !seen.insert((t.state_key(), t.variant.clone())) {
            p.push(field, "repeats an earlier threshold");
        }
    }
}

/// One figure read for one (threshold, variant) after an aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Index of the threshold in the experiment's `thresholds`.
    pub threshold: usize,
    pub variant: String,
    /// The variant's subjects (for `min_subjects`).
    pub subjects: u64,
    /// The watched figure; `None` where it is undefined (an estimate without subjects).
    pub figure: Option<f64>,
}

/// A crossing to announce.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    /// Index of the threshold in the experiment's `thresholds`.
    pub threshold: usize,
    pub variant: String,
    pub figure: f64,
    pub subjects: u64,
    /// The experiment's crossings announced so far, this one included (numbers its message).
    pub number: u64,
}

/// Which (threshold, variant) pairs of an experiment are at or beyond their threshold, and
/// how many crossings have been announced. Stored per experiment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Crossings announced so far: the number of the last message.
    pub announced: u64,
    /// `<threshold state key>/<variant>` of each pair currently reached.
    pub reached: BTreeSet<String>,
}

impl ThresholdState {
    /// The state after `readings` of `thresholds`, and the crossings to announce (in reading
    /// order, numbered from `announced + 1`).
    ///
    /// A pair is reached when its figure is defined, its variant has `min_subjects`, and the
    /// figure reaches the threshold. A pair without a defined figure keeps its previous
    /// state (nothing is known), and pairs of thresholds no longer configured are forgotten.
    pub fn advance(
        &self,
        thresholds: &[MetricThreshold],
        readings: &[Reading],
    ) -> (ThresholdState, Vec<Crossing>) {
        let mut next = ThresholdState {
            announced: self.announced,
            reached: BTreeSet::new(),
        };
        let mut crossings = Vec::new();
        for r in readings {
            let Some(t) = thresholds.get(r.threshold) else {
                continue;
            };
            let pair = format!("{}/{}", t.state_key(), r.variant);
            let was = self.reached.contains(&pair);
            let now = match r.figure {
                Some(f) if r.subjects >= t.min_subjects => t.reached_by(f),
                Some(_) => false,
                None => was,
            };
            if now {
                next.reached.insert(pair);
            }
            if now
                && !was
                && let Some(figure) = r.figure
            {
                next.announced += 1;
                crossings.push(Crossing {
                    threshold: r.threshold,
                    variant: r.variant.clone(),
                    figure,
                    subjects: r.subjects,
                    number: next.announced,
                });
            }
        }
        (next, crossings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn threshold(v: serde_json::Value) -> MetricThreshold {
        serde_json::from_value(v).unwrap()
    }

    fn reading(threshold: usize, variant: &str, subjects: u64, figure: Option<f64>) -> Reading {
        Reading {
            threshold,
            variant: variant.into(),
            subjects,
            figure,
        }
    }

    fn problems(thresholds: &[MetricThreshold]) -> Vec<String> {
        let mut p = Problems::new();
        check_thresholds(
            &mut p,
            thresholds,
            &["purchase", "error"],
            ["a", "b"].into_iter(),
        );
        p.iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    #[test]
    fn a_crossing_is_announced_once_and_again_only_after_falling_back() {
        let ts = [threshold(json!({"metric": "purchase", "above": 0.5}))];
        let s0 = ThresholdState::default();
        let (s1, c) = s0.advance(
            &ts,
            &[
                reading(0, "a", 10, Some(0.4)),
                reading(0, "b", 10, Some(0.5)),
            ],
        );
        assert_eq!(c.len(), 1, "at the value counts as reached");
        assert_eq!(
            (c[0].variant.as_str(), c[0].number, c[0].figure),
            ("b", 1, 0.5)
        );
        // Still reached: nothing new.
        let (s2, c) = s1.advance(
            &ts,
            &[
                reading(0, "a", 20, Some(0.45)),
                reading(0, "b", 20, Some(0.7)),
            ],
        );
        assert!(c.is_empty());
        assert_eq!(s2, s1);
        // b falls back (re-armed, silently), a crosses.
        let (s3, c) = s2.advance(
            &ts,
            &[
                reading(0, "a", 30, Some(0.6)),
                reading(0, "b", 30, Some(0.2)),
            ],
        );
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].variant.as_str(), c[0].number), ("a", 2));
        // b crosses again: a second announcement for b.
        let (s4, c) = s3.advance(
            &ts,
            &[
                reading(0, "a", 40, Some(0.6)),
                reading(0, "b", 40, Some(0.55)),
            ],
        );
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].variant.as_str(), c[0].number), ("b", 3));
        assert_eq!(s4.announced, 3);
        assert_eq!(s4.reached.len(), 2);
    }

    #[test]
    fn below_min_subjects_or_undefined_nothing_is_announced() {
        let ts = [threshold(
            json!({"metric": "error", "below": 0.1, "min_subjects": 100}),
        )];
        let (s1, c) = ThresholdState::default().advance(&ts, &[reading(0, "a", 99, Some(0.0))]);
        assert!(c.is_empty());
        assert!(s1.reached.is_empty());
        let (s2, c) = s1.advance(&ts, &[reading(0, "a", 100, Some(0.1))]);
        assert_eq!(c.len(), 1, "at the value, from the 100th subject");
        // An undefined figure keeps the pair as it was: no re-arm, no crossing.
        let (s3, c) = s2.advance(&ts, &[reading(0, "a", 100, None)]);
        assert!(c.is_empty());
        assert_eq!(s3, s2);
    }

    #[test]
    fn a_changed_threshold_starts_afresh_and_a_removed_one_is_forgotten() {
        let old = [threshold(json!({"metric": "purchase", "above": 0.5}))];
        let (s1, _) = ThresholdState::default().advance(&old, &[reading(0, "a", 10, Some(0.6))]);
        let new = [threshold(json!({"metric": "purchase", "above": 0.55}))];
        let (s2, c) = s1.advance(&new, &[reading(0, "a", 10, Some(0.6))]);
        assert_eq!(c.len(), 1, "the new value is a new threshold");
        assert_eq!(c[0].number, 2);
        assert_eq!(s2.reached.len(), 1);
        let (s3, c) = s2.advance(&[], &[]);
        assert!(c.is_empty());
        assert!(s3.reached.is_empty());
        assert_eq!(s3.announced, 2, "numbers are never reused");
    }

    #[test]
    fn every_problem_of_the_thresholds_is_listed() {
        let bad = [
            threshold(json!({"metric": "signup", "above": 1.0})),
            threshold(json!({"metric": "purchase"})),
            threshold(json!({"metric": "purchase", "above": 1.0, "below": 0.0})),
            threshold(json!({"metric": "purchase", "below": 1.0, "variant": "c"})),
        ];
        let found = problems(&bad);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found[0].starts_with("thresholds[0].metric: must be the event"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("thresholds[1]: give exactly one"),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("thresholds[2]: give exactly one"),
            "{found:?}"
        );
        assert!(found[3].starts_with("thresholds[3].variant"), "{found:?}");
        let not_finite = MetricThreshold {
            above: Some(f64::NAN),
            ..threshold(json!({"metric": "purchase", "above": 1.0}))
        };
        assert_eq!(
            problems(&[not_finite]),
            ["thresholds[0].above: must be a finite number"]
        );
        let same = threshold(json!({"metric": "error", "above": 3.0, "statistic": "events"}));
        let found = problems(&[same.clone(), same]);
        assert_eq!(found, ["thresholds[1]: repeats an earlier threshold"]);
        let many: Vec<_> = (0..=MAX_THRESHOLDS)
            .map(|i| threshold(json!({"metric": "purchase", "above": i})))
            .collect();
        assert_eq!(
            problems(&many),
            ["thresholds: must have at most 20 entries"]
        );
        assert!(
            problems(&[threshold(
                json!({"metric": "purchase", "above": 1, "variant": "b"})
            )])
            .is_empty()
        );
    }
}
