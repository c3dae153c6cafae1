//! The retry plan: what to do after each delivery attempt.
//!
//! Rules (SPEC §7), applied by [`RetrySchedule::classify`] to the outcome of attempt `n`:
//! - **2xx**: delivered.
//! - **410 Gone**: the receiver says the endpoint is gone for good; disable the endpoint.
//! - **408, 429, any other non-2xx that is not a 4xx (1xx, 3xx, 5xx), a timeout, a
//!   connection error**: retry, after the `n`-th delay of the schedule. Redirects are not
//!   followed, so a 3xx is a failed attempt like a 5xx.
//! - **Any other 4xx**: fail now. The receiver rejected the request and sending it again
//!   unchanged will not help.
//! - **A retryable outcome of the last attempt** (the schedule is used up): fail, exhausted.
//!
//! Delays are jittered so that the retries of a burst of messages do not all land at once:
//! the scheduled delay is multiplied by `0.8 + 0.4 × j`, where `j` in `[0, 1)` is drawn by
//! the caller (this module draws no randomness, so that it stays pure and testable). That is
//! ±20 %, and `j = 0.5` leaves the delay unchanged. A `Retry-After` longer than the jittered
//! delay wins, capped at [`MAX_RETRY_AFTER`] so that a receiver cannot park a message for
//! ever.

use std::time::Duration;

/// The longest `Retry-After` honoured; longer requests are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How far jitter moves a scheduled delay, either way (0.2 = ±20 %).
pub const JITTER_SPREAD: f64 = 0.2;

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered with this status and, if it sent one, this `Retry-After`.
    Status(u16, Option<Duration>),
    /// No complete response within the delivery timeout.
    Timeout,
    /// No connection: DNS failure, refused, reset, TLS failure.
    ConnectError,
}

/// Why a message will not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// A 4xx other than 408, 410 and 429: sending the same request again will not help.
    Rejected,
    /// Every scheduled retry was used up.
    Exhausted,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The receiver accepted the message.
    Delivered,
    /// Try again this long after the attempt.
    RetryAt(Duration),
    /// Give up on this message.
    Fail(FailReason),
    /// Give up on this message and disable the endpoint (410 Gone).
    DisableEndpoint,
}

/// The delays between attempts: attempt `n` (counting from 1) that fails retryably is
/// followed by attempt `n + 1` after `delays[n - 1]`. So there are at most
/// `delays.len() + 1` attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (SPEC §7): eight attempts over about 27.6 h.
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        RetrySchedule::new(
            [
                5,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

impl RetrySchedule {
    /// A schedule with these delays; empty means a single attempt and no retries.
    pub fn new(delays: Vec<Duration>) -> Self {
        RetrySchedule { delays }
    }

    /// The delays, before jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The most attempts a message gets: the first one plus one per delay.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// What to do after attempt `attempt` (1 for the first; 0 is treated as 1) came to
    /// `outcome`. `jitter` is the caller's uniform draw in `[0, 1)`; values outside are
    /// clamped and NaN counts as 0.5 (no jitter). See the module docs for the rules.
    pub fn classify(&self, attempt: u32, outcome: AttemptOutcome, jitter: f64) -> Decision {
        let retry_after = match outcome {
            AttemptOutcome::Status(200..=299, _) => return Decision::Delivered,
            AttemptOutcome::Status(410, _) => return Decision::DisableEndpoint,
            AttemptOutcome::Status(408 | 429, retry_after) => retry_after,
            AttemptOutcome::Status(400..=499, _) => return Decision::Fail(FailReason::Rejected),
            AttemptOutcome::Status(_, retry_after) => retry_after,
            AttemptOutcome::Timeout | AttemptOutcome::ConnectError => None,
        };
        let index = attempt.max(1) as usize - 1;
        let Some(&scheduled) = self.delays.get(index) else {
            return Decision::Fail(FailReason::Exhausted);
        };
        let delay = apply_jitter(scheduled, jitter);
        match retry_after {
            Some(asked) => Decision::RetryAt(delay.max(asked.min(MAX_RETRY_AFTER))),
            None => Decision::RetryAt(delay),
        }
    }
}

/// `delay × (1 − JITTER_SPREAD + 2 × JITTER_SPREAD × j)`, with `j` clamped to `[0, 1]` and
/// NaN taken as 0.5.
pub fn apply_jitter(delay: Duration, jitter: f64) -> Duration {
    let j = if jitter.is_nan() {
        0.5
    } else {
        jitter.clamp(0.0, 1.0)
    };
    delay.mul_f64(1.0 - JITTER_SPREAD + 2.0 * JITTER_SPREAD * j)
}

/// A `Retry-After` header in its delta-seconds form (`"120"`). The HTTP-date form is not
/// understood and gives `None`, as does anything malformed: the schedule then applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_JITTER: f64 = 0.5;
    const S: u64 = 1;
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn status(code: u16) -> AttemptOutcome {
        AttemptOutcome::Status(code, None)
    }

    /// Runs `outcomes` through the default schedule without jitter, as a dispatcher would:
    /// the decisions taken, stopping at the first that is not a retry.
    fn run(outcomes: &[AttemptOutcome]) -> Vec<Decision> {
        let schedule = RetrySchedule::default();
        let mut decisions = Vec::new();
        for (i, &outcome) in outcomes.iter().enumerate() {
            let decision = schedule.classify(i as u32 + 1, outcome, NO_JITTER);
            decisions.push(decision);
            if !matches!(decision, Decision::RetryAt(_)) {
                break;
            }
        }
        decisions
    }

    #[test]
    fn the_default_schedule_is_the_one_in_the_spec() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            schedule.delays(),
            [
                secs(5 * S),
                secs(5 * MIN),
                secs(30 * MIN),
                secs(2 * HOUR),
                secs(5 * HOUR),
                secs(10 * HOUR),
                secs(10 * HOUR)
            ]
        );
        assert_eq!(schedule.max_attempts(), 8);
    }

    #[test]
    fn three_500s_then_a_200_is_delivered_on_the_fourth_attempt_after_5s_5min_30min() {
        assert_eq!(
            run(&[status(500), status(500), status(500), status(200)]),
            [
                Decision::RetryAt(secs(5)),
                Decision::RetryAt(secs(5 * MIN)),
                Decision::RetryAt(secs(30 * MIN)),
                Decision::Delivered,
            ]
        );
    }

    #[test]
    fn every_2xx_is_delivered() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(run(&[status(code)]), [Decision::Delivered], "{code}");
        }
    }

    #[test]
    fn a_400_is_not_retried() {
        assert_eq!(run(&[status(400)]), [Decision::Fail(FailReason::Rejected)]);
    }

    #[test]
    fn every_4xx_except_408_410_429_fails_without_retry_even_with_retry_after() {
        for code in (400..=499).filter(|c| ![408, 410, 429].contains(c)) {
            assert_eq!(
                RetrySchedule::default().classify(
                    1,
                    AttemptOutcome::Status(code, Some(secs(1))),
                    NO_JITTER
                ),
                Decision::Fail(FailReason::Rejected),
                "{code}"
            );
        }
    }

    #[test]
    fn a_410_disables_the_endpoint_at_any_attempt() {
        assert_eq!(run(&[status(410)]), [Decision::DisableEndpoint]);
        assert_eq!(
            run(&[status(500), status(410)]),
            [Decision::RetryAt(secs(5)), Decision::DisableEndpoint]
        );
        assert_eq!(
            RetrySchedule::default().classify(99, status(410), NO_JITTER),
            Decision::DisableEndpoint
        );
    }

    #[test]
    fn timeouts_connection_errors_408_429_and_5xx_are_retried() {
        let retryable = [
            AttemptOutcome::Timeout,
            AttemptOutcome::ConnectError,
            status(408),
            status(429),
            status(500),
            status(502),
            status(503),
            status(504),
            status(599),
        ];
        for outcome in retryable {
            assert_eq!(run(&[outcome]), [Decision::RetryAt(secs(5))], "{outcome:?}");
        }
    }

    #[test]
    fn informational_and_redirect_statuses_are_retried_like_any_non_2xx() {
        for code in [100, 301, 302, 307, 308] {
            assert_eq!(run(&[status(code)]), [Decision::RetryAt(secs(5))], "{code}");
        }
    }

    #[test]
    fn the_retry_after_each_attempt_follows_the_schedule_in_order() {
        let schedule = RetrySchedule::default();
        for (i, &delay) in schedule.delays().iter().enumerate() {
            assert_eq!(
                schedule.classify(i as u32 + 1, AttemptOutcome::Timeout, NO_JITTER),
                Decision::RetryAt(delay),
                "attempt {}",
                i + 1
            );
        }
    }

    #[test]
    fn a_retryable_failure_of_the_last_attempt_fails_as_exhausted() {
        let outcomes = vec![status(503); 8];
        let decisions = run(&outcomes);
        assert_eq!(decisions.len(), 8);
        assert!(
            decisions[..7]
                .iter()
                .all(|d| matches!(d, Decision::RetryAt(_)))
        );
        assert_eq!(decisions[7], Decision::Fail(FailReason::Exhausted));
        assert_eq!(
            RetrySchedule::default().classify(9, status(503), NO_JITTER),
            Decision::Fail(FailReason::Exhausted)
        );
    }

    #[test]
    fn a_success_on_the_last_attempt_is_still_delivered() {
        assert_eq!(
            RetrySchedule::default().classify(8, status(200), NO_JITTER),
            Decision::Delivered
        );
    }

    #[test]
    fn an_empty_schedule_allows_one_attempt_and_no_retry() {
        let schedule = RetrySchedule::new(Vec::new());
        assert_eq!(schedule.max_attempts(), 1);
        assert_eq!(
            schedule.classify(1, status(500), NO_JITTER),
            Decision::Fail(FailReason::Exhausted)
        );
        assert_eq!(
            schedule.classify(1, status(204), NO_JITTER),
            Decision::Delivered
        );
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first_attempt() {
        assert_eq!(
            RetrySchedule::default().classify(0, status(500), NO_JITTER),
            Decision::RetryAt(secs(5))
        );
    }

    #[test]
    fn a_custom_schedule_is_used_as_given() {
        let schedule = RetrySchedule::new(vec![secs(1), secs(2)]);
        assert_eq!(
            schedule.classify(1, status(500), NO_JITTER),
            Decision::RetryAt(secs(1))
        );
        assert_eq!(
            schedule.classify(2, status(500), NO_JITTER),
            Decision::RetryAt(secs(2))
        );
        assert_eq!(
            schedule.classify(3, status(500), NO_JITTER),
            Decision::Fail(FailReason::Exhausted)
        );
    }

    #[test]
    fn a_retry_after_of_120_seconds_is_respected() {
        assert_eq!(
            RetrySchedule::default().classify(
                1,
                AttemptOutcome::Status(429, Some(secs(120))),
                NO_JITTER
            ),
            Decision::RetryAt(secs(120))
        );
        assert_eq!(
            RetrySchedule::default().classify(
                1,
                AttemptOutcome::Status(503, Some(secs(120))),
                NO_JITTER
            ),
            Decision::RetryAt(secs(120))
        );
    }

    #[test]
    fn a_retry_after_shorter_than_the_schedule_does_not_shorten_it() {
        assert_eq!(
            RetrySchedule::default().classify(
                2,
                AttemptOutcome::Status(429, Some(secs(120))),
                NO_JITTER
            ),
            Decision::RetryAt(secs(5 * MIN))
        );
    }

    #[test]
    fn a_retry_after_longer_than_a_day_is_capped_at_a_day() {
        assert_eq!(
            RetrySchedule::default().classify(
                1,
                AttemptOutcome::Status(503, Some(secs(7 * 24 * HOUR))),
                NO_JITTER
            ),
            Decision::RetryAt(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn a_retry_after_never_revives_an_exhausted_message() {
        assert_eq!(
            RetrySchedule::default().classify(
                8,
                AttemptOutcome::Status(429, Some(secs(60))),
                NO_JITTER
            ),
            Decision::Fail(FailReason::Exhausted)
        );
    }

    #[test]
    fn jitter_moves_a_delay_by_at_most_twenty_percent_either_way() {
        let base = secs(100);
        assert_eq!(apply_jitter(base, 0.0), secs(80));
        assert_eq!(apply_jitter(base, 0.5), secs(100));
        assert_eq!(apply_jitter(base, 0.75), secs(110));
        for i in 0..1000 {
            let j = f64::from(i) / 1000.0;
            let d = apply_jitter(base, j);
            assert!(d >= secs(80) && d < secs(120), "j = {j}: {d:?}");
        }
        assert_eq!(
            RetrySchedule::default().classify(2, status(500), 0.0),
            Decision::RetryAt(secs(4 * MIN))
        );
    }

    #[test]
    fn out_of_range_or_nan_jitter_is_clamped() {
        let base = secs(100);
        assert_eq!(apply_jitter(base, -3.0), secs(80));
        assert_eq!(apply_jitter(base, 7.0), secs(120));
        assert_eq!(apply_jitter(base, f64::NAN), secs(100));
        assert_eq!(apply_jitter(base, f64::INFINITY), secs(120));
    }

    #[test]
    fn a_retry_after_is_compared_with_the_jittered_delay() {
        // Scheduled 5 min, jittered up to 6 min: a 5.5 min Retry-After is already satisfied.
        let schedule = RetrySchedule::default();
        let jittered = apply_jitter(secs(5 * MIN), 0.999);
        assert_eq!(
            schedule.classify(2, AttemptOutcome::Status(503, Some(secs(330))), 0.999),
            Decision::RetryAt(jittered)
        );
        // Jittered down to 4 min: the 5.5 min Retry-After wins.
        assert_eq!(
            schedule.classify(2, AttemptOutcome::Status(503, Some(secs(330))), 0.0),
            Decision::RetryAt(secs(330))
        );
    }

    #[test]
    fn retry_after_delta_seconds_are_parsed_and_anything_else_is_ignored() {
        assert_eq!(parse_retry_after("120"), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(secs(0)));
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after(""), None);
    }
}
