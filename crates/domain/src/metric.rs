//! Metrics: what an experiment measures, how each kind is estimated per variant, and the
//! settings that shape its statistics (cap, mSPRT mixing scale, guardrail margin).
//!
//! A metric is fed by one event key. Per subject the stores keep `n_i` (counted events) and
//! `total_i` (Σ of their values); the [`MetricKind`] says which per-variant estimate is
//! compared (see [`crate::VariantCounts`] for the figures):
//!
//! | kind | estimate per variant | unit of `min_delta`, `tau`, an absolute `margin` |
//! |---|---|---|
//! | `binomial` | converted subjects / subjects | rate points (0.01 = one point) |
//! | `count` | Σ n_i / subjects (subjects without events count as 0) | events per subject |
//! | `sum` | Σ total_i / subjects (subjects without events count as 0) | value per subject |
//! | `mean` | Σ total_i / Σ n_i, subjects as the unit (delta method) | value per event |

use serde::{Deserialize, Serialize};

use crate::validation::{Problems, check_key};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Did the subject convert (at least one event)? Compared by the share of subjects who
    /// did.
    #[default]
    Binomial,
    /// Number of events per subject, compared by its mean over the variant's subjects.
    Count,
    /// Sum of event values per subject (revenue per subject), compared by its mean over the
    /// variant's subjects.
    Sum,
    /// Value per event (latency per request, basket value per order): Σ values / Σ events over
    /// the variant, a ratio metric with subjects as the unit.
    Mean,
}

impl MetricKind {
    /// The kinds whose per-subject totals a [`Cap`] may limit.
    pub fn takes_cap(self) -> bool {
        !matches!(self, Self::Binomial)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    #[default]
    Maximize,
    Minimize,
}

/// What a metric is for in an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MetricRole {
    /// Decides the winner.
    Primary,
    /// Reported only.
    Secondary,
    /// Blocks a decision for a variant credibly worse than the control, or not yet shown to be
    /// within the metric's [`Margin`] of it.
    Guardrail,
}

/// Winsorising of heavy-tailed values: each subject's total is replaced by
/// `min(total, cap)` before any figure is computed. Serialized as `{"value": 500.0}` or
/// `{"percentile": 0.99}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// Cap each subject's total at this value (metric units, > 0).
    Value(f64),
    /// Cap each subject's total at this quantile of the subjects' totals, in (0, 1): the
    /// caller turns it into a value from the data at each evaluation.
    Percentile(f64),
}

/// How much worse than the control a guardrail metric may be. Serialized as
/// `{"relative": 0.2}` or `{"absolute": 0.5}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Margin {
    /// A fraction of the control's estimate (0.2 = a 20% degradation is tolerated), > 0.
    Relative(f64),
    /// In the metric's units (see the module docs), > 0.
    Absolute(f64),
}

impl Margin {
    /// The tolerated degradation in the metric's units when the control's estimate is
    /// `control_estimate` (a relative margin scales with its magnitude).
    pub fn absolute(self, control_estimate: f64) -> f64 {
        match self {
            Self::Relative(r) => r * control_estimate.abs(),
            Self::Absolute(a) => a,
        }
    }
}

/// The margin of a guardrail metric that configures none: a 20% relative degradation.
///
/// Why 20% and not less: non-inferiority is shown by an always-valid confidence interval
/// (the one the peeking guard inverts), which is wider than a fixed-sample one. At 20,000
/// subjects per arm that interval of a difference of two 5% rates is about ±0.0067 (with the
/// default τ = 0.01), i.e. ~13% of the rate, so a margin much below 20% could not be shown
/// by then even when the variants are truly equal, and every decision would stall on it.
pub const DEFAULT_GUARDRAIL_MARGIN: Margin = Margin::Relative(0.2);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The event key whose events feed this metric.
    pub event: String,
    #[serde(default)]
    pub kind: MetricKind,
    #[serde(default)]
    pub objective: Objective,
    /// Only events within this many hours of the subject's start count: its assignment, or
    /// its first exposure when the experiment names an `exposure_event` (none = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<u32>,
    /// Cap each subject's total before computing figures (`count`, `sum` and `mean` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
    /// Mixing standard deviation τ of the always-valid test (mSPRT) on a difference of this
    /// metric's estimates, in the metric's units (rate points for `binomial`), > 0: the size
    /// of effect the test is most sensitive to. When absent: for `binomial`, the policy's
    /// `tau_squared` (else the statistics' default τ = 0.01); for the other kinds, a quarter
    /// of the control's estimate, taken once at the first evaluation where every variant has
    /// `min_assignments` subjects and then kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// Guardrail metrics only: the degradation against the control that is tolerated; none =
    /// [`DEFAULT_GUARDRAIL_MARGIN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<Margin>,
}

impl Metric {
    /// A metric of `event` with no window, cap, τ or margin.
    pub fn new(event: impl Into<String>, kind: MetricKind, objective: Objective) -> Self {
        Self {
            event: event.into(),
            kind,
            objective,
            window_hours: None,
            cap: None,
            tau: None,
            margin: None,
        }
    }

    /// The margin a guardrail uses: the configured one, else [`DEFAULT_GUARDRAIL_MARGIN`].
    pub fn guardrail_margin(&self) -> Margin {
        self.margin.unwrap_or(DEFAULT_GUARDRAIL_MARGIN)
    }

    /// Pushes every problem of this metric, used in `role`, to `p` under `field`.
    pub fn check(&self, p: &mut Problems, field: &str, role: MetricRole) {
        check_key(p, &format!("{field}.event"), &self.event);
        if self.window_hours == Some(0) {
            p.push(
                format!("{field}.window_hours"),
                "must be at least 1 when set",
            );
        }
        if let Some(cap) = self.cap {
            if !self.kind.takes_cap() {
                p.push(
                    format!("{field}.cap"),
                    "only count, sum and mean metrics take a cap (a binomial metric has no values to cap)",
                );
            }
            match cap {
                Cap::Value(v) if !(v.is_finite() && v > 0.0) => {
                    p.push(format!("{field}.cap.value"), "must be a positive number")
                }
                Cap::Percentile(q) if !(q > 0.0 && q < 1.0) => p.push(
                    format!("{field}.cap.percentile"),
                    "must be greater than 0 and less than 1",
                ),
                _ => {}
            }
        }
        if let Some(tau) = self.tau
            && !(tau.is_finite() && tau > 0.0)
        {
            p.push(format!("{field}.tau"), "must be a positive number");
        }
        if let Some(margin) = self.margin {
            if role != MetricRole::Guardrail {
                p.push(
                    format!("{field}.margin"),
                    "only guardrail metrics take a margin",
                );
            }
            match margin {
                Margin::Relative(r) if !(r.is_finite() && r > 0.0) => p.push(
                    format!("{field}.margin.relative"),
                    "must be a positive number",
                ),
                Margin::Absolute(a) if !(a.is_finite() && a > 0.0) => p.push(
                    format!("{field}.margin.absolute"),
                    "must be a positive number",
                ),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metric(v: serde_json::Value) -> Metric {
        serde_json::from_value(v).unwrap()
    }

    fn problems(m: &Metric, role: MetricRole) -> Problems {
        let mut p = Problems::new();
        m.check(&mut p, "m", role);
        p
    }

    #[test]
    fn a_metric_without_the_optional_settings_reads_and_writes_as_before() {
        let m = metric(json!({"event": "purchase", "kind": "sum"}));
        assert_eq!(
            m,
            Metric::new("purchase", MetricKind::Sum, Objective::Maximize)
        );
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"event": "purchase", "kind": "sum", "objective": "maximize"})
        );
    }

    #[test]
    fn caps_margins_and_tau_read_in_snake_case() {
        let m = metric(
            json!({"event": "revenue", "kind": "sum", "cap": {"percentile": 0.99},
                              "tau": 0.5, "margin": {"relative": 0.1}}),
        );
        assert_eq!(m.cap, Some(Cap::Percentile(0.99)));
        assert_eq!(m.tau, Some(0.5));
        assert_eq!(m.margin, Some(Margin::Relative(0.1)));
        let m = metric(
            json!({"event": "revenue", "kind": "sum", "cap": {"value": 500.0},
                              "margin": {"absolute": 2.0}}),
        );
        assert_eq!(m.cap, Some(Cap::Value(500.0)));
        assert_eq!(m.margin, Some(Margin::Absolute(2.0)));
        assert_eq!(
            serde_json::to_value(m).unwrap()["cap"],
            json!({"value": 500.0})
        );
    }

    #[test]
    fn a_guardrail_without_a_margin_tolerates_twenty_percent() {
        let m = Metric::new("errors", MetricKind::Binomial, Objective::Minimize);
        assert_eq!(m.guardrail_margin(), Margin::Relative(0.2));
        assert!((m.guardrail_margin().absolute(-0.05) - 0.01).abs() < 1e-15);
        assert_eq!(Margin::Absolute(3.0).absolute(100.0), 3.0);
    }

    #[test]
    fn a_cap_on_a_binomial_metric_is_refused() {
        let m = metric(json!({"event": "signup", "cap": {"value": 10.0}}));
        assert!(problems(&m, MetricRole::Primary).mentions("m.cap"));
        let m = metric(json!({"event": "signup", "kind": "count", "cap": {"value": 10.0}}));
        assert!(problems(&m, MetricRole::Primary).is_empty());
    }

    #[test]
    fn out_of_range_settings_are_all_reported() {
        let m = metric(
            json!({"event": "latency", "kind": "mean", "cap": {"percentile": 1.0},
                              "tau": 0.0, "margin": {"relative": -0.1}, "window_hours": 0}),
        );
        let p = problems(&m, MetricRole::Guardrail);
        for field in [
            "m.cap.percentile",
            "m.tau",
            "m.margin.relative",
            "m.window_hours",
        ] {
            assert!(p.mentions(field), "{field} missing from: {p}");
        }
        let m = metric(
            json!({"event": "revenue", "kind": "sum", "cap": {"value": -5.0},
                              "margin": {"absolute": 0.0}}),
        );
        let p = problems(&m, MetricRole::Guardrail);
        assert!(
            p.mentions("m.cap.value") && p.mentions("m.margin.absolute"),
            "{p}"
        );
    }

    #[test]
    fn only_guardrails_take_a_margin() {
        let m = metric(json!({"event": "errors", "margin": {"relative": 0.1}}));
        assert!(problems(&m, MetricRole::Guardrail).is_empty());
        assert!(problems(&m, MetricRole::Primary).mentions("m.margin"));
        assert!(problems(&m, MetricRole::Secondary).mentions("m.margin"));
    }
}
