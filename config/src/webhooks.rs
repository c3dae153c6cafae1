//! `[webhooks]`: webhook delivery (the dispatcher and the endpoints API).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::Problem;

/// The most seconds any webhook duration setting accepts (30 days).
const MAX_SECONDS: u64 = 30 * 24 * 60 * 60;
/// Most retries a schedule may list.
const MAX_RETRIES: usize = 30;
/// Longest request timeout, in seconds.
const MAX_TIMEOUT_SECONDS: u64 = 300;
/// Largest dispatcher batch.
const MAX_BATCH: usize = 1000;

/// `[webhooks]`: how messages are delivered to endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Allow endpoints whose host resolves to private, loopback, link-local or reserved
    /// addresses (tests and closed networks only).
    pub allow_private_targets: bool,
    /// Time limit of one delivery attempt (connect, send, response), in seconds.
    pub request_timeout_seconds: u64,
    /// Delays before retries 1, 2, …, in seconds (jittered ±20 %). A TOML array, or a
    /// comma-separated list in the environment.
    #[serde(deserialize_with = "seconds_list")]
    pub retry_schedule_seconds: Vec<u64>,
    /// An endpoint failing every attempt for this long is disabled, in seconds.
    pub disable_after_seconds: u64,
    /// How long the previous secret keeps signing after a rotation, in seconds.
    pub secret_rotation_overlap_seconds: u64,
    /// How long an idle dispatcher sleeps before polling again, in milliseconds.
    pub idle_sleep_ms: u64,
    /// How long a claimed delivery stays leased to its dispatcher, in seconds.
    pub lease_seconds: u64,
    /// Most deliveries one dispatcher round claims.
    pub batch_size: usize,
}

impl WebhooksSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    pub fn retry_schedule(&self) -> Vec<Duration> {
        self.retry_schedule_seconds
            .iter()
            .map(|&s| Duration::from_secs(s))
            .collect()
    }

    pub fn disable_after(&self) -> Duration {
        Duration::from_secs(self.disable_after_seconds)
    }

    pub fn secret_rotation_overlap(&self) -> Duration {
        Duration::from_secs(self.secret_rotation_overlap_seconds)
    }

    pub fn idle_sleep(&self) -> Duration {
        Duration::from_millis(self.idle_sleep_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
}

/// A list of seconds: a TOML array of integers, or (from a `VERDICT_*` variable, where
/// every value is a string) `"5, 300, 1800"`.
fn seconds_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<u64>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::List(list) => Ok(list),
        Either::Text(text) if text.trim().is_empty() => Ok(Vec::new()),
        Either::Text(text) => text
            .split(',')
            .map(|part| {
                part.trim().parse::<u64>().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected whole seconds separated by commas, got '{}'",
                        part.trim()
                    ))
                })
            })
            .collect(),
    }
}

/// The `[webhooks]` start-up rules.
pub(crate) fn validate(w: &WebhooksSettings, problems: &mut Vec<Problem>) {
    let mut check = |ok: bool, key: &str, message: String| {
        if !ok {
            problems.push(Problem::new(key, message));
        }
    };
    check(
        (1..=MAX_TIMEOUT_SECONDS).contains(&w.request_timeout_seconds),
        "webhooks.request_timeout_seconds",
        format!(
            "must be between 1 and {MAX_TIMEOUT_SECONDS} (got {})",
            w.request_timeout_seconds
        ),
    );
    check(
        w.retry_schedule_seconds.len() <= MAX_RETRIES
            && w.retry_schedule_seconds
                .iter()
                .all(|&s| (1..=MAX_SECONDS).contains(&s)),
        "webhooks.retry_schedule_seconds",
        format!(
            "must list at most {MAX_RETRIES} delays, each between 1 and {MAX_SECONDS} seconds \
             (got {:?})",
            w.retry_schedule_seconds
        ),
    );
    check(
        (60..=MAX_SECONDS).contains(&w.disable_after_seconds),
        "webhooks.disable_after_seconds",
        format!(
            "must be between 60 and {MAX_SECONDS} (got {})",
            w.disable_after_seconds
        ),
    );
    check(
        w.secret_rotation_overlap_seconds <= MAX_SECONDS,
        "webhooks.secret_rotation_overlap_seconds",
        format!(
            "must be at most {MAX_SECONDS} (got {})",
            w.secret_rotation_overlap_seconds
        ),
    );
    check(
        (1..=60_000).contains(&w.idle_sleep_ms),
        "webhooks.idle_sleep_ms",
        format!("must be between 1 and 60000 (got {})", w.idle_sleep_ms),
    );
    // A claim must outlive the attempt it covers, or another dispatcher could take the
    // delivery while the first is still sending it.
    check(
        w.lease_seconds >= 2 * w.request_timeout_seconds && w.lease_seconds <= MAX_SECONDS,
        "webhooks.lease_seconds",
        format!(
            "must be at least twice webhooks.request_timeout_seconds ({}) and at most \
             {MAX_SECONDS} (got {})",
            2 * w.request_timeout_seconds,
            w.lease_seconds
        ),
    );
    check(
        (1..=MAX_BATCH).contains(&w.batch_size),
        "webhooks.batch_size",
        format!("must be between 1 and {MAX_BATCH} (got {})", w.batch_size),
    );
}

#[cfg(test)]
mod tests {
    use crate::{ConfigError, Settings};

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(
            None,
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        )
    }

    fn problem_keys(e: &ConfigError) -> Vec<String> {
        e.problems().iter().map(|p| p.key.clone()).collect()
    }

    #[test]
    fn the_webhook_defaults_are_the_documented_ones() {
        let w = load(&[]).unwrap().webhooks;
        assert!(!w.allow_private_targets);
        assert_eq!(w.request_timeout_seconds, 15);
        assert_eq!(
            w.retry_schedule_seconds,
            [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
        );
        assert_eq!(w.disable_after_seconds, 5 * 24 * 3600);
        assert_eq!(w.secret_rotation_overlap_seconds, 24 * 3600);
        assert_eq!(w.lease_seconds, 60);
    }

    #[test]
    fn a_retry_schedule_from_the_environment_is_a_comma_separated_list() {
        let w = load(&[
            ("VERDICT_WEBHOOKS__RETRY_SCHEDULE_SECONDS", "1, 2,30"),
            ("VERDICT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ])
        .unwrap()
        .webhooks;
        assert_eq!(w.retry_schedule_seconds, [1, 2, 30]);
        assert!(w.allow_private_targets);
        let err = load(&[("VERDICT_WEBHOOKS__RETRY_SCHEDULE_SECONDS", "5,soon")]).unwrap_err();
        assert_eq!(
            problem_keys(&err),
            ["webhooks.retry_schedule_seconds"],
            "{err}"
        );
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn bad_webhook_settings_are_reported_together_naming_each_key() {
        let err = load(&[
            ("VERDICT_WEBHOOKS__REQUEST_TIMEOUT_SECONDS", "20"),
            ("VERDICT_WEBHOOKS__LEASE_SECONDS", "30"),
            ("VERDICT_WEBHOOKS__RETRY_SCHEDULE_SECONDS", "0,5"),
            ("VERDICT_WEBHOOKS__DISABLE_AFTER_SECONDS", "10"),
            ("VERDICT_WEBHOOKS__BATCH_SIZE", "0"),
            ("VERDICT_WEBHOOKS__IDLE_SLEEP_MS", "0"),
        ])
        .unwrap_err();
        let mut keys = problem_keys(&err);
        keys.sort();
        assert_eq!(
            keys,
            [
                "webhooks.batch_size",
                "webhooks.disable_after_seconds",
                "webhooks.idle_sleep_ms",
                "webhooks.lease_seconds",
                "webhooks.retry_schedule_seconds",
            ],
            "{err}"
        );
    }
}
