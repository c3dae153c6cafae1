//! The figures metric thresholds watch ([`verdict_domain::threshold`]), read from the same
//! per-variant figures results show.

use verdict_domain::threshold::Reading;
use verdict_domain::{Experiment, ThresholdStatistic, VariantCounts};

use crate::estimate::estimate;

/// One [`Reading`] per (threshold, variant) of `e`'s thresholds, in threshold then variant
/// order. `figures(event)` gives the per-variant figures of a metric event (after its cap);
/// a threshold whose metric has no figures, or a variant missing from them, is not read.
pub fn readings<'a>(
    e: &Experiment,
    figures: impl Fn(&str) -> Option<&'a [VariantCounts]>,
) -> Vec<Reading> {
    let mut out = Vec::new();
    for (i, t) in e.thresholds.iter().enumerate() {
        let (Some(metric), Some(rows)) = (e.metric(&t.metric), figures(&t.metric)) else {
            continue;
        };
        for c in rows {
            if t.variant.as_ref().is_some_and(|v| *v != c.variant) {
                continue;
            }
            let figure = match t.statistic {
                ThresholdStatistic::Estimate => estimate(metric.kind, c).map(|a| a.value),
                ThresholdStatistic::Subjects => Some(c.subjects as f64),
                ThresholdStatistic::ConvertedSubjects => Some(c.converted_subjects as f64),
                ThresholdStatistic::Events => Some(c.events as f64),
                ThresholdStatistic::Sum => c.sum.is_finite().then_some(c.sum),
            };
            out.push(Reading {
                threshold: i,
                variant: c.variant.clone(),
                subjects: c.subjects,
                figure,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::OffsetDateTime;
    use verdict_domain::experiment::Provided;
    use verdict_domain::{ExperimentInput, Scope};

    fn experiment() -> Experiment {
        let input: ExperimentInput = serde_json::from_value(json!({
            "key": "k",
            "variants": [{"key": "a"}, {"key": "b"}],
            "primary_metric": {"event": "purchase", "kind": "binomial"},
            "secondary_metrics": [{"event": "revenue", "kind": "mean"}],
            "thresholds": [
                {"metric": "purchase", "above": 0.5},
                {"metric": "revenue", "below": 3.0, "variant": "b"},
                {"metric": "revenue", "statistic": "events", "above": 10},
                {"metric": "revenue", "statistic": "sum", "above": 10}
            ]
        }))
        .unwrap();
        input
            .into_experiment(
                Scope::default(),
                Provided {
                    id: "e".into(),
                    salt: "s".into(),
                    now: OffsetDateTime::UNIX_EPOCH,
                },
            )
            .unwrap()
    }

    fn counts(
        variant: &str,
        subjects: u64,
        converted: u64,
        events: u64,
        sum: f64,
    ) -> VariantCounts {
        VariantCounts {
            variant: variant.into(),
            subjects,
            converted_subjects: converted,
            events,
            sum,
            ..Default::default()
        }
    }

    #[test]
    fn each_threshold_reads_its_figure_per_variant() {
        let e = experiment();
        let purchase = [counts("a", 10, 6, 9, 9.0), counts("b", 0, 0, 0, 0.0)];
        let revenue = [
            counts("a", 10, 4, 8, 20.0),
            counts("b", 10, 2, 4, f64::INFINITY),
        ];
        let r = readings(&e, |event| match event {
            "purchase" => Some(&purchase[..]),
            "revenue" => Some(&revenue[..]),
            _ => None,
        });
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.threshold, r.variant.as_str(), r.subjects, r.figure))
            .collect();
        assert_eq!(
            got,
            [
                // The conversion rate; undefined without subjects.
                (0, "a", 10, Some(0.6)),
                (0, "b", 0, None),
                // Only b; a value per event is undefined when the totals overflowed.
                (1, "b", 10, None),
                (2, "a", 10, Some(8.0)),
                (2, "b", 10, Some(4.0)),
                (3, "a", 10, Some(20.0)),
                (3, "b", 10, None),
            ]
        );
        // Without figures for a metric, its thresholds are not read.
        let r = readings(&e, |event| (event == "purchase").then_some(&purchase[..]));
        assert_eq!(r.len(), 2);
    }
}
