//! Start-up rules checked after layering. Every rule reports the key it is about and all
//! broken rules are reported together.

use secrecy::ExposeSecret;

use crate::error::Problem;
use crate::settings::{CacheKind, JwtSettings, Settings, StoreKind};

const MIN_BODY_LIMIT_BYTES: u64 = 1024;
const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3600;
const MAX_BATCH: usize = 1000;
const MAX_BUSY_TIMEOUT_MS: u64 = 600_000;
const MIN_ADMIN_KEY_CHARS: usize = 16;
/// The square of a subject's total of such values (1e200 for one event) leaves f64's
/// ~1.8e308 room for any realistic number of events and subjects.
const MAX_ABS_VALUE: f64 = 1e100;
const MAX_REQUEST_TIMEOUT_SECONDS: u64 = 86_400;
const MAX_HEADER_READ_TIMEOUT_SECONDS: u64 = 3600;
const MAX_ASSIGNMENT_CACHE_MB: u64 = 65_536;

/// Parse a 6-field cron expression (seconds first) as the scheduler does.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// When `schedule` (a valid 6-field cron expression, UTC) fires next, strictly after `after`.
pub fn next_fire(schedule: &str, after: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
    let cron = parse_schedule(schedule).ok()?;
    let start = chrono_of(after.replace_nanosecond(0).ok()?)?;
    let next = cron.find_next_occurrence(&start, false).ok()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(next.timestamp_millis()) * 1_000_000)
        .ok()
}

/// The tick of `schedule` a run starting at `now` is for: its latest occurrence at or before
/// `now` (the scheduler fires at or after a tick, never before).
pub fn tick_of(schedule: &str, now: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
    let cron = parse_schedule(schedule).ok()?;
    // Schedules have whole seconds; from `now` with its fraction, croner would answer `now`.
    let whole = now.replace_nanosecond(0).ok()?;
    let tick = cron
        .find_previous_occurrence(&chrono_of(whole)?, true)
        .ok()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(tick.timestamp_millis()) * 1_000_000)
        .ok()
}

fn chrono_of(t: time::OffsetDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
    chrono::DateTime::from_timestamp_millis(ms)
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
        (1..=MAX_HEADER_READ_TIMEOUT_SECONDS).contains(&s.server.header_read_timeout_seconds),
        "server.header_read_timeout_seconds",
        format!(
            "must be between 1 and {MAX_HEADER_READ_TIMEOUT_SECONDS} (got {})",
            s.server.header_read_timeout_seconds
        ),
    );

    check(
        (1..=MAX_ASSIGNMENT_CACHE_MB).contains(&s.server.assignment_cache_mb),
        "server.assignment_cache_mb",
        format!(
            "must be between 1 and {MAX_ASSIGNMENT_CACHE_MB} (got {})",
            s.server.assignment_cache_mb
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

    validate_jwt(&s.auth.jwt, &mut check);

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
    check(
        s.ingest.max_abs_value > 0.0 && s.ingest.max_abs_value <= MAX_ABS_VALUE,
        "ingest.max_abs_value",
        format!(
            "must be a number above 0 and at most {MAX_ABS_VALUE:e} (got {})",
            s.ingest.max_abs_value
        ),
    );

    for (key, expr) in [
        ("jobs.aggregate_schedule", &s.jobs.aggregate_schedule),
        ("jobs.evaluate_schedule", &s.jobs.evaluate_schedule),
        ("jobs.retention_schedule", &s.jobs.retention_schedule),
        ("jobs.lifecycle_schedule", &s.jobs.lifecycle_schedule),
        ("jobs.publish_schedule", &s.jobs.publish_schedule),
    ] {
        if let Err(e) = parse_schedule(expr) {
            check(
                false,
                key,
                format!("not a 6-field cron expression (sec min hour day month weekday): {e}"),
            );
        }
    }

    check(
        (1..=MAX_LEASE_SECONDS).contains(&s.jobs.lease_seconds),
        "jobs.lease_seconds",
        format!(
            "must be between 1 and {MAX_LEASE_SECONDS} (got {})",
            s.jobs.lease_seconds
        ),
    );
    check(
        (1..=MAX_LEASE_SECONDS).contains(&s.jobs.http_wait_seconds),
        "jobs.http_wait_seconds",
        format!(
            "must be between 1 and {MAX_LEASE_SECONDS} (got {})",
            s.jobs.http_wait_seconds
        ),
    );
    check(
        s.jobs.metrics_push_seconds <= 86_400,
        "jobs.metrics_push_seconds",
        format!(
            "must be between 0 and 86400 (got {})",
            s.jobs.metrics_push_seconds
        ),
    );
    // A job run requested over HTTP must be able to answer before the request times out.
    check(
        (1..=MAX_REQUEST_TIMEOUT_SECONDS).contains(&s.server.request_timeout_seconds)
            && s.server.request_timeout_seconds > s.jobs.http_wait_seconds,
        "server.request_timeout_seconds",
        format!(
            "must be more than jobs.http_wait_seconds ({}) and at most \
             {MAX_REQUEST_TIMEOUT_SECONDS} (got {})",
            s.jobs.http_wait_seconds, s.server.request_timeout_seconds
        ),
    );
    for (key, days) in [
        ("retention.raw_events_days", s.retention.raw_events_days),
        ("retention.buckets_days", s.retention.buckets_days),
        ("retention.runs_days", s.retention.runs_days),
        (
            "retention.webhook_attempts_days",
            s.retention.webhook_attempts_days,
        ),
    ] {
        check(
            (1..=MAX_RETENTION_DAYS).contains(&days),
            key,
            format!("must be between 1 and {MAX_RETENTION_DAYS} days (got {days})"),
        );
    }
    check(
        (1..=MAX_SNAPSHOT_VERSIONS_KEPT).contains(&s.retention.snapshot_versions_kept),
        "retention.snapshot_versions_kept",
        format!(
            "must be between 1 and {MAX_SNAPSHOT_VERSIONS_KEPT} (got {})",
            s.retention.snapshot_versions_kept
        ),
    );
    check(
        (1..=MAX_RETENTION_BATCH).contains(&s.retention.batch_size),
        "retention.batch_size",
        format!(
            "must be between 1 and {MAX_RETENTION_BATCH} (got {})",
            s.retention.batch_size
        ),
    );

    crate::webhooks::validate(&s.webhooks, &mut problems);
    crate::publish::validate(&s.publish, &mut problems);
    crate::console::validate(&s.console, &mut problems);

    // Custom roles: known rights only, no built-in name reused (the domain's rules).
    if let Err(found) = verdict_domain::RoleBook::with_custom(&s.auth.roles, "auth.roles") {
        problems.extend(found.into_iter().map(|p| Problem::new(p.field, p.message)));
    }

    problems
}

/// The `[auth.jwt]` rules.
fn validate_jwt(jwt: &JwtSettings, check: &mut impl FnMut(bool, &str, String)) {
    let secret_bytes = jwt.hs256_secret.expose_secret().len();
    check(
        secret_bytes == 0 || secret_bytes >= MIN_JWT_SECRET_BYTES,
        "auth.jwt.hs256_secret",
        format!("must be empty or at least {MIN_JWT_SECRET_BYTES} bytes"),
    );
    let url = jwt.jwks_url.trim();
    check(
        url.is_empty() || is_http_url(url),
        "auth.jwt.jwks_url",
        "must be an http:// or https:// URL with a host".to_owned(),
    );
    check(
        url.is_empty() || jwt.jwks_file.as_os_str().is_empty(),
        "auth.jwt.jwks_file",
        "set either auth.jwt.jwks_url or auth.jwt.jwks_file, not both".to_owned(),
    );
    check(
        jwt.leeway_seconds <= MAX_JWT_LEEWAY_SECONDS,
        "auth.jwt.leeway_seconds",
        format!(
            "must be at most {MAX_JWT_LEEWAY_SECONDS} (got {})",
            jwt.leeway_seconds
        ),
    );
    check(
        (1..=MAX_JWKS_TIMEOUT_SECONDS).contains(&jwt.jwks_timeout_seconds),
        "auth.jwt.jwks_timeout_seconds",
        format!(
            "must be between 1 and {MAX_JWKS_TIMEOUT_SECONDS} (got {})",
            jwt.jwks_timeout_seconds
        ),
    );
    check(
        (1..=MAX_JWKS_MIN_REFRESH_SECONDS).contains(&jwt.jwks_min_refresh_seconds),
        "auth.jwt.jwks_min_refresh_seconds",
        format!(
            "must be between 1 and {MAX_JWKS_MIN_REFRESH_SECONDS} (got {})",
            jwt.jwks_min_refresh_seconds
        ),
    );
    check(
        (jwt.jwks_min_refresh_seconds..=MAX_JWKS_MAX_AGE_SECONDS)
            .contains(&jwt.jwks_max_age_seconds),
        "auth.jwt.jwks_max_age_seconds",
        format!(
            "must be between auth.jwt.jwks_min_refresh_seconds ({}) and \
             {MAX_JWKS_MAX_AGE_SECONDS} (got {})",
            jwt.jwks_min_refresh_seconds, jwt.jwks_max_age_seconds
        ),
    );
    for (key, name) in [
        ("auth.jwt.claims.subject", &jwt.claims.subject),
        ("auth.jwt.claims.organization", &jwt.claims.organization),
        ("auth.jwt.claims.environments", &jwt.claims.environments),
        ("auth.jwt.claims.roles", &jwt.claims.roles),
    ] {
        check(
            !name.trim().is_empty(),
            key,
            "must name a claim (a name or a dotted path)".to_owned(),
        );
    }
}

/// `http://host...` or `https://host...` (a non-empty host, no spaces).
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.starts_with(':') && !url.contains(char::is_whitespace)
    })
}

/// Shortest HS256 secret, in bytes (RFC 7518 3.2: at least the hash size).
const MIN_JWT_SECRET_BYTES: usize = 32;
/// Largest clock-skew allowance on `exp` / `nbf`, in seconds.
const MAX_JWT_LEEWAY_SECONDS: u64 = 600;
/// Longest JWKS fetch, in seconds.
const MAX_JWKS_TIMEOUT_SECONDS: u64 = 60;
/// Longest interval between unknown-kid refetches, in seconds.
const MAX_JWKS_MIN_REFRESH_SECONDS: u64 = 3600;
/// Longest a fetched key set is used without fetching again (7 days), in seconds.
const MAX_JWKS_MAX_AGE_SECONDS: u64 = 7 * 24 * 3600;

/// Longest job lease and HTTP wait, in seconds.
const MAX_LEASE_SECONDS: u64 = 3600;
/// Longest retention, in days (100 years).
const MAX_RETENTION_DAYS: u32 = 36_500;
/// Most rows one retention delete may remove.
const MAX_RETENTION_BATCH: usize = 100_000;
/// Most config snapshot versions kept per scope.
const MAX_SNAPSHOT_VERSIONS_KEPT: u32 = 1_000_000;
