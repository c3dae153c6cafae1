//! The one error type of the crate.

use thiserror::Error;

/// Why a statistic could not be computed.
///
/// Every variant describes bad *input*; the numerical routines themselves do not fail on valid
/// input (they saturate at 0 or 1 instead).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum StatsError {
    /// An arm reported more conversions than exposures.
    #[error("arm {arm}: {conversions} conversions exceed {n} exposures")]
    ConversionsExceedTrials {
        /// Index of the offending arm in the input slice.
        arm: usize,
        /// Reported conversions.
        conversions: u64,
        /// Reported exposures.
        n: u64,
    },
    /// The number of arms is outside what the routine supports.
    #[error("expected between {min} and {max} arms, got {got}")]
    ArmCount {
        /// Smallest supported number of arms.
        min: usize,
        /// Largest supported number of arms.
        max: usize,
        /// Number of arms passed in.
        got: usize,
    },
    /// A parameter was NaN, infinite or outside its documented range.
    #[error("invalid {name}: {value} ({reason})")]
    InvalidParameter {
        /// Parameter name as documented on the function.
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// What the valid range is.
        reason: &'static str,
    },
    /// Two slices that must be parallel have different lengths.
    #[error("{what}: expected {expected} entries, got {got}")]
    LengthMismatch {
        /// Which pair of inputs disagreed.
        what: &'static str,
        /// Length of the reference slice.
        expected: usize,
        /// Length of the other slice.
        got: usize,
    },
    /// A sample is too small for the statistic (for example a variance from one observation).
    #[error("{what} needs at least {min} observations, got {got}")]
    TooFewObservations {
        /// Which statistic.
        what: &'static str,
        /// Minimum sample size.
        min: u64,
        /// Observed sample size.
        got: u64,
    },
    /// The data have zero variance, so the test statistic is undefined (0/0 or x/0).
    #[error("{0}: zero variance, the statistic is undefined")]
    ZeroVariance(&'static str),
}
