//! Start-up rules checked after layering. Every rule reports the key it is about and all
//! broken rules are reported together.

use secrecy::ExposeSecret;

use crate::error::Problem;
use crate::settings::{CacheKind, Settings, StoreKind};

const MIN_BODY_LIMIT_BYTES: u64 = 1024;
const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3600;
const MAX_BATCH: usize = 1000;
const MAX_BUSY_TIMEOUT_MS: u64 = 600_000;
const MIN_ADMIN_KEY_CHARS: usize = 16;

/// Parse a 6-field cron expression (seconds first) as the scheduler does.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// Every broken rule, in key order of `default.toml`. Messages never include secret values.
pub(crate) fn validate(s: &Settings) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &str, message: String| {
        if !ok {
            problems.push(Problem::new(key, message));
        }
    };

    check(
        !s.data_dir.to_string_lossy().trim().is_empty(),
        "data_dir",
        "must not be empty".to_owned(),
    );

    check(
        s.server.port >= 1,
        "server.port",
        format!("must be between 1 and 65535 (got {})", s.server.port),
    );
    check(
        s.server.request_body_limit_bytes >= MIN_BODY_LIMIT_BYTES,
        "server.request_body_limit_bytes",
        format!(
            "must be at least {MIN_BODY_LIMIT_BYTES} (got {})",
            s.server.request_body_limit_bytes
        ),
    );
    check(
        s.server.shutdown_grace_seconds <= MAX_SHUTDOWN_GRACE_SECONDS,
        "server.shutdown_grace_seconds",
        format!(
            "must be at most {MAX_SHUTDOWN_GRACE_SECONDS} (got {})",
            s.server.shutdown_grace_seconds
        ),
    );

    check(
        !s.log.level.trim().is_empty(),
        "log.level",
        "must not be empty (an EnvFilter directive such as \"info\")".to_owned(),
    );

    check(
        s.sqlite.busy_timeout_ms <= MAX_BUSY_TIMEOUT_MS,
        "sqlite.busy_timeout_ms",
        format!(
            "must be at most {MAX_BUSY_TIMEOUT_MS} (got {})",
            s.sqlite.busy_timeout_ms
        ),
    );

    if s.store == StoreKind::Mongodb {
        let uri = s.mongodb.uri.expose_secret();
        if uri.is_empty() {
            check(
                false,
                "mongodb.uri",
                "required when store = \"mongodb\"".to_owned(),
            );
        } else {
            check(
                uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"),
                "mongodb.uri",
                "must start with \"mongodb://\" or \"mongodb+srv://\"".to_owned(),
            );
        }
        check(
            !s.mongodb.database.trim().is_empty(),
            "mongodb.database",
            "required when store = \"mongodb\"".to_owned(),
        );
    }

    if s.cache == CacheKind::Redis {
        let url = s.redis.url.expose_secret();
        if url.is_empty() {
            check(
                false,
                "redis.url",
                "required when cache = \"redis\"".to_owned(),
            );
        } else {
            check(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                "redis.url",
                "must start with \"redis://\" or \"rediss://\"".to_owned(),
            );
        }
    }

    let admin_key_chars = s.auth.bootstrap_admin_key.expose_secret().chars().count();
    check(
        admin_key_chars == 0 || admin_key_chars >= MIN_ADMIN_KEY_CHARS,
        "auth.bootstrap_admin_key",
        format!("must be empty or at least {MIN_ADMIN_KEY_CHARS} characters"),
    );

    check(
        (1..=MAX_BATCH).contains(&s.ingest.max_batch),
        "ingest.max_batch",
        format!(
            "must be between 1 and {MAX_BATCH} (got {})",
            s.ingest.max_batch
        ),
    );
    check(
        s.ingest.rate_limit_per_second == 0
            || s.ingest.rate_limit_burst >= s.ingest.rate_limit_per_second,
        "ingest.rate_limit_burst",
        format!(
            "must be at least ingest.rate_limit_per_second ({}) when rate limiting is on (got {})",
            s.ingest.rate_limit_per_second, s.ingest.rate_limit_burst
        ),
    );

    for (key, expr) in [
        ("jobs.aggregate_schedule", &s.jobs.aggregate_schedule),
        ("jobs.evaluate_schedule", &s.jobs.evaluate_schedule),
    ] {
        if let Err(e) = parse_schedule(expr) {
            check(
                false,
                key,
                format!("not a 6-field cron expression (sec min hour day month weekday): {e}"),
            );
        }
    }

    problems
}
