use std::io::Write as _;
use std::path::PathBuf;

use secrecy::ExposeSecret;
use tempfile::NamedTempFile;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml_file(contents: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().expect("create temp file");
    file.write_all(contents.as_bytes())
        .expect("write temp file");
    file
}

fn load_with(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let file = file.map(toml_file);
    Settings::load_from(file.as_ref().map(NamedTempFile::path), vars(env))
}

fn load_ok(file: Option<&str>, env: &[(&str, &str)]) -> Settings {
    match load_with(file, env) {
        Ok(settings) => settings,
        Err(err) => panic!("expected settings to load, got:\n{err}"),
    }
}

fn load_err(file: Option<&str>, env: &[(&str, &str)]) -> ConfigError {
    match load_with(file, env) {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(err) => err,
    }
}

/// Asserts the error has a `<key>: ...` line and returns that line.
fn line_for(err: &ConfigError, key: &str) -> String {
    let text = err.to_string();
    text.lines()
        .find(|line| line.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no line for `{key}` in:\n{text}"))
        .to_owned()
}

fn assert_invalid_only(err: &ConfigError, key: &str) {
    assert!(
        matches!(err, ConfigError::Invalid(_)),
        "not a validation error: {err:?}"
    );
    assert_eq!(err.problems().len(), 1, "expected one problem, got:\n{err}");
    line_for(err, key);
}

// --- layering -------------------------------------------------------------------------

#[test]
fn defaults_load_and_validate() {
    let s = load_ok(None, &[]);
    assert_eq!(s.data_dir, PathBuf::from("./data"));
    assert_eq!(s.store, StoreKind::Sqlite);
    assert_eq!(s.cache, CacheKind::Memory);
    assert_eq!(s.server.host, "127.0.0.1");
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.server.request_body_limit_bytes, 1_048_576);
    assert_eq!(s.server.shutdown_grace_seconds, 30);
    assert_eq!(s.server.request_timeout_seconds, 60);
    assert_eq!(s.server.header_read_timeout_seconds, 10);
    assert_eq!(s.server.max_connections_per_peer, 256);
    assert_eq!(s.server.assignment_cache_mb, 64);
    assert_eq!(s.log.level, "info");
    assert_eq!(s.log.format, LogFormat::Text);
    assert_eq!(s.sqlite.path, PathBuf::new());
    assert_eq!(s.sqlite.busy_timeout_ms, 5000);
    assert_eq!(s.mongodb.uri.expose_secret(), "");
    assert_eq!(s.mongodb.database, "verdict");
    assert_eq!(s.mongodb.connect_timeout_ms, 5000);
    assert_eq!(s.redis.url.expose_secret(), "");
    assert_eq!(s.redis.key_prefix, "verdict:");
    assert_eq!(s.auth.bootstrap_admin_key.expose_secret(), "");
    assert_eq!(s.auth.bootstrap_environment, "production");
    assert_eq!(s.ingest.max_batch, 1000);
    assert_eq!(s.ingest.rate_limit_per_second, 5000);
    assert_eq!(s.ingest.rate_limit_burst, 10_000);
}

#[test]
fn every_default_key_documents_its_env_var() {
    let mut section = String::new();
    let mut previous = "";
    for line in DEFAULT_CONFIG_TOML.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !line.starts_with('#')
        {
            let var = if section.is_empty() {
                format!("VERDICT_{}", key.to_uppercase())
            } else {
                // `[auth.jwt]` nests like its variables: VERDICT_AUTH__JWT__<KEY>.
                let section = section.to_uppercase().replace('.', "__");
                format!("VERDICT_{section}__{}", key.to_uppercase())
            };
            assert_eq!(
                previous,
                format!("# env: {var}"),
                "comment above `{section}.{key}`"
            );
        }
        previous = line;
    }
}

#[test]
fn sqlite_path_defaults_to_verdict_db_in_data_dir() {
    let s = load_ok(None, &[("VERDICT_DATA_DIR", "/var/lib/verdict")]);
    assert_eq!(
        s.sqlite_path(),
        PathBuf::from("/var/lib/verdict/verdict.db")
    );
    let s = load_ok(None, &[("VERDICT_SQLITE__PATH", "/tmp/x.db")]);
    assert_eq!(s.sqlite_path(), PathBuf::from("/tmp/x.db"));
}

#[test]
fn file_overrides_default() {
    let s = load_ok(
        Some(
            "store = \"mongodb\"\n[mongodb]\nuri = \"mongodb://db:27017\"\n[server]\nport = 9090\n",
        ),
        &[],
    );
    assert_eq!(s.server.port, 9090);
    assert_eq!(s.store, StoreKind::Mongodb);
    assert_eq!(s.mongodb.uri.expose_secret(), "mongodb://db:27017");
    // Keys the file does not mention keep their defaults.
    assert_eq!(s.server.host, "127.0.0.1");
    assert_eq!(s.mongodb.database, "verdict");
}

#[test]
fn env_overrides_file() {
    let s = load_ok(
        Some("[server]\nport = 9090\n[log]\nformat = \"json\"\n"),
        &[("VERDICT_SERVER__PORT", "9000")],
    );
    assert_eq!(s.server.port, 9000);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn double_underscore_nests_and_top_level_keys_need_none() {
    let s = load_ok(
        None,
        &[
            ("VERDICT_STORE", "mongodb"),
            ("VERDICT_MONGODB__URI", "mongodb+srv://u:p@cluster/x"),
            ("VERDICT_MONGODB__CONNECT_TIMEOUT_MS", "250"),
            ("VERDICT_CACHE", "redis"),
            ("VERDICT_REDIS__URL", "rediss://cache:6380"),
            ("VERDICT_LOG__LEVEL", "warn,verdict_api=debug"),
        ],
    );
    assert_eq!(s.store, StoreKind::Mongodb);
    assert_eq!(s.cache, CacheKind::Redis);
    assert_eq!(s.mongodb.uri.expose_secret(), "mongodb+srv://u:p@cluster/x");
    assert_eq!(s.mongodb.connect_timeout_ms, 250);
    assert_eq!(s.redis.url.expose_secret(), "rediss://cache:6380");
    assert_eq!(s.log.level, "warn,verdict_api=debug");
}

#[test]
fn all_digit_secret_from_env_stays_a_string() {
    let s = load_ok(
        None,
        &[("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", "12345678901234567890")],
    );
    assert_eq!(
        s.auth.bootstrap_admin_key.expose_secret(),
        "12345678901234567890"
    );
}

#[test]
fn verdict_test_variables_are_ignored() {
    let s = load_ok(
        None,
        &[
            ("VERDICT_TEST_MONGODB_URI", "mongodb://test:27017"),
            ("VERDICT_TEST_ANYTHING__AT_ALL", "x"),
            ("PATH", "/usr/bin"),
        ],
    );
    assert_eq!(s.store, StoreKind::Sqlite);
    assert_eq!(s.mongodb.uri.expose_secret(), "");
}

#[test]
fn the_config_file_variable_is_not_a_setting() {
    let s = load_ok(None, &[("VERDICT_CONFIG", "/etc/verdict.toml")]);
    assert_eq!(s.store, StoreKind::Sqlite);
}

// --- parse errors ---------------------------------------------------------------------

#[test]
fn unknown_key_in_file_is_an_error_naming_it() {
    let err = load_err(Some("[server]\nprot = 9000\n"), &[]);
    assert!(matches!(err, ConfigError::Load(_)), "{err:?}");
    let line = line_for(&err, "server.prot");
    assert!(line.contains("unknown key"), "{line}");
    assert!(line.contains("(from file "), "{line}");
}

#[test]
fn unknown_section_in_file_is_an_error_naming_it() {
    let err = load_err(Some("[servr]\nport = 9000\n"), &[]);
    line_for(&err, "servr");
}

#[test]
fn unknown_env_key_is_an_error_naming_it() {
    let err = load_err(None, &[("VERDICT_SERVER__PROT", "9000")]);
    let line = line_for(&err, "server.prot");
    assert!(line.contains("env VERDICT_SERVER__PROT"), "{line}");
}

#[test]
fn env_name_with_empty_segment_is_an_error_naming_the_variable() {
    let err = load_err(
        None,
        &[("VERDICT_SERVER___PORT", "9000"), ("VERDICT_LOG__", "x")],
    );
    line_for(&err, "server._port");
    line_for(&err, "VERDICT_LOG__");
}

#[test]
fn wrong_type_error_names_the_key_and_its_source() {
    let err = load_err(Some("[server]\nport = \"abc\"\n"), &[]);
    let line = line_for(&err, "server.port");
    assert!(line.contains("(from file "), "{line}");

    let err = load_err(None, &[("VERDICT_SERVER__PORT", "abc")]);
    let line = line_for(&err, "server.port");
    assert!(line.contains("env VERDICT_SERVER__PORT"), "{line}");
}

#[test]
fn port_above_65535_is_an_error_naming_server_port() {
    let err = load_err(None, &[("VERDICT_SERVER__PORT", "70000")]);
    line_for(&err, "server.port");
}

#[test]
fn unknown_enum_value_is_an_error_naming_the_key() {
    let err = load_err(Some("store = \"postgres\"\n"), &[]);
    let line = line_for(&err, "store");
    assert!(
        line.contains("sqlite") && line.contains("mongodb"),
        "{line}"
    );
}

#[test]
fn missing_config_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nope.toml");
    let err = Settings::load_from(Some(&path), vars(&[])).expect_err("missing file");
    let line = line_for(&err, "--config");
    assert!(line.contains(&path.display().to_string()), "{line}");
}

#[test]
fn bad_toml_is_one_line_naming_the_file_without_echoing_it() {
    let file = toml_file("[mongodb]\nuri = \"mongodb://user:hunter2@db\n");
    let err = Settings::load_from(Some(file.path()), vars(&[])).expect_err("bad TOML");
    assert_eq!(err.problems().len(), 1);
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("--config: "), "{text}");
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn secret_of_wrong_type_is_not_echoed() {
    let err = load_err(
        Some("[auth]\nbootstrap_admin_key = 1234567890123456789\n"),
        &[],
    );
    let line = line_for(&err, "auth.bootstrap_admin_key");
    assert!(!line.contains("1234567890123456789"), "{line}");
}

// --- validation: one test per rule ----------------------------------------------------

#[test]
fn port_zero_is_rejected() {
    let err = load_err(None, &[("VERDICT_SERVER__PORT", "0")]);
    assert_invalid_only(&err, "server.port");
}

#[test]
fn request_body_limit_below_1024_is_rejected() {
    let err = load_err(
        None,
        &[("VERDICT_SERVER__REQUEST_BODY_LIMIT_BYTES", "1023")],
    );
    assert_invalid_only(&err, "server.request_body_limit_bytes");
    load_ok(
        None,
        &[("VERDICT_SERVER__REQUEST_BODY_LIMIT_BYTES", "1024")],
    );
}

#[test]
fn shutdown_grace_above_an_hour_is_rejected() {
    let err = load_err(None, &[("VERDICT_SERVER__SHUTDOWN_GRACE_SECONDS", "3601")]);
    assert_invalid_only(&err, "server.shutdown_grace_seconds");
    load_ok(None, &[("VERDICT_SERVER__SHUTDOWN_GRACE_SECONDS", "3600")]);
}

#[test]
fn mongodb_store_requires_a_uri() {
    let err = load_err(None, &[("VERDICT_STORE", "mongodb")]);
    assert_invalid_only(&err, "mongodb.uri");
    assert_eq!(
        err.to_string(),
        "mongodb.uri: required when store = \"mongodb\""
    );
}

#[test]
fn mongodb_uri_must_have_a_mongodb_scheme() {
    let err = load_err(
        None,
        &[
            ("VERDICT_STORE", "mongodb"),
            ("VERDICT_MONGODB__URI", "http://user:hunter2@db"),
        ],
    );
    assert_invalid_only(&err, "mongodb.uri");
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn mongodb_store_requires_a_database_name() {
    let err = load_err(
        None,
        &[
            ("VERDICT_STORE", "mongodb"),
            ("VERDICT_MONGODB__URI", "mongodb://db"),
            ("VERDICT_MONGODB__DATABASE", ""),
        ],
    );
    assert_invalid_only(&err, "mongodb.database");
}

#[test]
fn mongodb_settings_are_not_checked_for_sqlite_store() {
    load_ok(
        None,
        &[
            ("VERDICT_MONGODB__URI", "nonsense"),
            ("VERDICT_REDIS__URL", "nonsense"),
        ],
    );
}

#[test]
fn redis_cache_requires_a_redis_url() {
    let err = load_err(None, &[("VERDICT_CACHE", "redis")]);
    assert_invalid_only(&err, "redis.url");
    let err = load_err(
        None,
        &[
            ("VERDICT_CACHE", "redis"),
            ("VERDICT_REDIS__URL", "http://r"),
        ],
    );
    assert_invalid_only(&err, "redis.url");
}

#[test]
fn ingest_max_batch_must_be_between_1_and_1000() {
    let err = load_err(None, &[("VERDICT_INGEST__MAX_BATCH", "0")]);
    assert_invalid_only(&err, "ingest.max_batch");
    let err = load_err(None, &[("VERDICT_INGEST__MAX_BATCH", "1001")]);
    assert_invalid_only(&err, "ingest.max_batch");
}

#[test]
fn snapshot_versions_kept_must_be_between_1_and_a_million() {
    let name = "VERDICT_RETENTION__SNAPSHOT_VERSIONS_KEPT";
    for bad in ["0", "1000001"] {
        let err = load_err(None, &[(name, bad)]);
        assert_invalid_only(&err, "retention.snapshot_versions_kept");
    }
    let s = load_ok(None, &[(name, "1")]);
    assert_eq!(s.retention.snapshot_versions_kept, 1);
    assert_eq!(load_ok(None, &[]).retention.snapshot_versions_kept, 1000);
}

#[test]
fn rate_limit_burst_below_rate_is_rejected_only_when_limiting_is_on() {
    let err = load_err(
        None,
        &[
            ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "100"),
            ("VERDICT_INGEST__RATE_LIMIT_BURST", "99"),
        ],
    );
    assert_invalid_only(&err, "ingest.rate_limit_burst");
    let s = load_ok(
        None,
        &[
            ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "0"),
            ("VERDICT_INGEST__RATE_LIMIT_BURST", "0"),
        ],
    );
    assert!(!s.ingest.rate_limit_enabled());
}

#[test]
fn sqlite_busy_timeout_above_ten_minutes_is_rejected() {
    let err = load_err(None, &[("VERDICT_SQLITE__BUSY_TIMEOUT_MS", "600001")]);
    assert_invalid_only(&err, "sqlite.busy_timeout_ms");
}

#[test]
fn short_bootstrap_admin_key_is_rejected() {
    let err = load_err(
        None,
        &[("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", "short-secret")],
    );
    assert_invalid_only(&err, "auth.bootstrap_admin_key");
    assert!(!err.to_string().contains("short-secret"));
    load_ok(
        None,
        &[("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", "sixteen-chars-ok")],
    );
}

#[test]
fn empty_data_dir_is_rejected() {
    let err = load_err(None, &[("VERDICT_DATA_DIR", "")]);
    assert_invalid_only(&err, "data_dir");
}

#[test]
fn empty_log_level_is_rejected() {
    let err = load_err(None, &[("VERDICT_LOG__LEVEL", " ")]);
    assert_invalid_only(&err, "log.level");
}

#[test]
fn multiple_problems_are_reported_together() {
    let err = load_err(
        Some("store = \"mongodb\"\n[server]\nport = 0\n"),
        &[("VERDICT_INGEST__MAX_BATCH", "0"), ("VERDICT_DATA_DIR", "")],
    );
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    for key in ["data_dir", "server.port", "mongodb.uri", "ingest.max_batch"] {
        line_for(&err, key);
    }
    assert_eq!(err.to_string().lines().count(), 4, "{err}");
}

#[test]
fn multiple_parse_problems_are_reported_together() {
    let err = load_err(
        Some("[server]\nprot = 1\nport = \"abc\"\n[ingest]\nmax_batch = \"lots\"\n"),
        &[("VERDICT_BOGUS", "1"), ("VERDICT_LOG__", "x")],
    );
    assert!(matches!(err, ConfigError::Load(_)), "{err:?}");
    for key in [
        "server.prot",
        "server.port",
        "ingest.max_batch",
        "bogus",
        "VERDICT_LOG__",
    ] {
        line_for(&err, key);
    }
    assert_eq!(err.to_string().lines().count(), 5, "{err}");
}

#[test]
fn section_given_as_a_value_is_an_error_naming_it() {
    let err = load_err(None, &[("VERDICT_SERVER", "x")]);
    assert_eq!(err.problems().len(), 1, "{err}");
    line_for(&err, "server");
}

// --- secrets --------------------------------------------------------------------------

#[test]
fn secrets_are_absent_from_debug_output_and_summary() {
    let s = load_ok(
        None,
        &[
            ("VERDICT_STORE", "mongodb"),
            ("VERDICT_MONGODB__URI", "mongodb://user:mongo-pass-123@db"),
            ("VERDICT_CACHE", "redis"),
            ("VERDICT_REDIS__URL", "redis://:redis-pass-456@cache"),
            ("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", "admin-key-789-abcdef"),
        ],
    );
    let debug = format!("{s:?} {s:#?}");
    let summary = s.redacted_summary();
    for secret in [
        "mongo-pass-123",
        "redis-pass-456",
        "admin-key-789-abcdef",
        "mongodb://",
        "redis://",
    ] {
        assert!(!debug.contains(secret), "Debug leaks {secret}: {debug}");
        assert!(
            !summary.contains(secret),
            "summary leaks {secret}: {summary}"
        );
    }
    assert!(debug.contains("REDACTED"));
}

#[test]
fn redacted_summary_is_one_line_with_backends_and_listen_address() {
    let s = load_ok(None, &[("VERDICT_SERVER__PORT", "9000")]);
    let summary = s.redacted_summary();
    assert_eq!(summary.lines().count(), 1);
    assert!(summary.contains("store=sqlite"), "{summary}");
    assert!(summary.contains("cache=memory"), "{summary}");
    assert!(summary.contains("verdict.db"), "{summary}");
    assert!(summary.contains("listen=127.0.0.1:9000"), "{summary}");
}

#[test]
fn job_schedules_are_cron_with_seconds() {
    let s = load_ok(None, &[]);
    assert!(s.jobs.enabled);
    assert_eq!(s.jobs.aggregate_schedule, "0 * * * * *");
    let err = load_err(
        None,
        &[
            ("VERDICT_JOBS__AGGREGATE_SCHEDULE", "* * * * *"),
            ("VERDICT_JOBS__EVALUATE_SCHEDULE", "every minute"),
        ],
    );
    assert!(line_for(&err, "jobs.aggregate_schedule").contains("6-field cron"));
    line_for(&err, "jobs.evaluate_schedule");
    let s = load_ok(
        None,
        &[("VERDICT_JOBS__EVALUATE_SCHEDULE", "*/5 * * * * *")],
    );
    assert_eq!(s.jobs.evaluate_schedule, "*/5 * * * * *");
}

#[test]
fn metrics_pushes_are_limited_to_at_most_a_day_apart() {
    let s = load_ok(None, &[]);
    assert_eq!(s.jobs.metrics_push_seconds, 10);
    let s = load_ok(None, &[("VERDICT_JOBS__METRICS_PUSH_SECONDS", "0")]);
    assert_eq!(s.jobs.metrics_push_interval(), std::time::Duration::ZERO);
    let err = load_err(None, &[("VERDICT_JOBS__METRICS_PUSH_SECONDS", "86401")]);
    assert!(line_for(&err, "jobs.metrics_push_seconds").contains("between 0 and 86400"));
}

#[test]
fn ticks_are_the_latest_occurrence_and_next_fires_follow() {
    use time::macros::datetime;
    let now = datetime!(2026-03-01 10:07:42.731 UTC);
    assert_eq!(
        crate::tick_of("* * * * * *", now),
        Some(datetime!(2026-03-01 10:07:42 UTC))
    );
    assert_eq!(
        crate::tick_of("0 * * * * *", now),
        Some(datetime!(2026-03-01 10:07:00 UTC))
    );
    assert_eq!(
        crate::tick_of("30 */5 * * * *", now),
        Some(datetime!(2026-03-01 10:05:30 UTC))
    );
    assert_eq!(
        crate::next_fire("0 * * * * *", now),
        Some(datetime!(2026-03-01 10:08:00 UTC))
    );
    assert_eq!(
        crate::next_fire("0 30 3 * * *", now),
        Some(datetime!(2026-03-02 03:30:00 UTC))
    );
    assert_eq!(crate::tick_of("not cron", now), None);
}

// --- [auth.jwt] -----------------------------------------------------------------------

#[test]
fn jwt_is_off_by_default_with_the_documented_defaults() {
    let jwt = load_ok(None, &[]).auth.jwt;
    assert!(!jwt.enabled());
    assert_eq!(jwt.hs256_secret.expose_secret(), "");
    assert_eq!(jwt.jwks_url, "");
    assert_eq!(jwt.jwks_file, PathBuf::new());
    assert_eq!(jwt.issuer, "");
    assert_eq!(jwt.audience, "");
    assert_eq!(jwt.leeway_seconds, 30);
    assert_eq!(jwt.jwks_timeout_seconds, 5);
    assert_eq!(jwt.jwks_min_refresh_seconds, 60);
    assert_eq!(jwt.jwks_max_age_seconds, 3600);
    assert_eq!(jwt.claims.subject, "sub");
    assert_eq!(jwt.claims.organization, "org");
    assert_eq!(jwt.claims.environments, "env");
    assert_eq!(jwt.claims.roles, "roles");
}

#[test]
fn jwt_settings_nest_in_files_and_the_environment() {
    let s = load_ok(
        Some(
            "[auth.jwt]\njwks_url = \"https://idp.example/jwks.json\"\n\
             [auth.jwt.claims]\nroles = \"realm_access.roles\"\n",
        ),
        &[
            ("VERDICT_AUTH__JWT__AUDIENCE", "verdict"),
            ("VERDICT_AUTH__JWT__CLAIMS__SUBJECT", "email"),
            ("VERDICT_AUTH__JWT__JWKS_MIN_REFRESH_SECONDS", "5"),
        ],
    );
    let jwt = s.auth.jwt;
    assert!(jwt.enabled());
    assert_eq!(jwt.jwks_url, "https://idp.example/jwks.json");
    assert_eq!(jwt.audience, "verdict");
    assert_eq!(jwt.claims.roles, "realm_access.roles");
    assert_eq!(jwt.claims.subject, "email");
    assert_eq!(jwt.jwks_min_refresh_seconds, 5);
    // The rest of `[auth]` is untouched.
    assert_eq!(s.auth.bootstrap_environment, "production");
}

#[test]
fn bad_jwt_settings_are_reported_together_naming_each_key() {
    let err = load_err(
        None,
        &[
            ("VERDICT_AUTH__JWT__HS256_SECRET", "too-short-secret"),
            ("VERDICT_AUTH__JWT__JWKS_URL", "ftp://idp.example/jwks.json"),
            ("VERDICT_AUTH__JWT__JWKS_FILE", "/etc/verdict/jwks.json"),
            ("VERDICT_AUTH__JWT__LEEWAY_SECONDS", "601"),
            ("VERDICT_AUTH__JWT__JWKS_TIMEOUT_SECONDS", "0"),
            ("VERDICT_AUTH__JWT__JWKS_MIN_REFRESH_SECONDS", "120"),
            ("VERDICT_AUTH__JWT__JWKS_MAX_AGE_SECONDS", "60"),
            ("VERDICT_AUTH__JWT__CLAIMS__SUBJECT", " "),
        ],
    );
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    let mut keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "auth.jwt.claims.subject",
            "auth.jwt.hs256_secret",
            "auth.jwt.jwks_file",
            "auth.jwt.jwks_max_age_seconds",
            "auth.jwt.jwks_timeout_seconds",
            "auth.jwt.jwks_url",
            "auth.jwt.leeway_seconds",
        ],
        "{err}"
    );
    assert!(
        line_for(&err, "auth.jwt.jwks_file").contains("not both"),
        "{err}"
    );
    assert!(!err.to_string().contains("too-short-secret"), "{err}");
}

#[test]
fn jwt_boundaries_are_accepted() {
    let jwt = load_ok(
        None,
        &[
            ("VERDICT_AUTH__JWT__HS256_SECRET", &"s".repeat(32)),
            ("VERDICT_AUTH__JWT__JWKS_URL", "http://127.0.0.1:8081/jwks"),
            ("VERDICT_AUTH__JWT__LEEWAY_SECONDS", "600"),
            ("VERDICT_AUTH__JWT__JWKS_MIN_REFRESH_SECONDS", "1"),
            ("VERDICT_AUTH__JWT__JWKS_MAX_AGE_SECONDS", "1"),
        ],
    )
    .auth
    .jwt;
    assert!(jwt.enabled());
    let err = load_err(
        None,
        &[("VERDICT_AUTH__JWT__HS256_SECRET", &"s".repeat(31))],
    );
    assert_invalid_only(&err, "auth.jwt.hs256_secret");
    let err = load_err(None, &[("VERDICT_AUTH__JWT__JWKS_URL", "https://")]);
    assert_invalid_only(&err, "auth.jwt.jwks_url");
}

#[test]
fn the_jwt_secret_is_never_printed() {
    let secret = "jwt-secret-0123456789-0123456789-abc";
    let s = load_ok(None, &[("VERDICT_AUTH__JWT__HS256_SECRET", secret)]);
    let debug = format!("{s:?} {s:#?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(!s.redacted_summary().contains(secret));
    let err = load_err(
        Some("[auth.jwt]\nhs256_secret = 1234567890123456789\n"),
        &[],
    );
    let line = line_for(&err, "auth.jwt.hs256_secret");
    assert!(!line.contains("1234567890123456789"), "{line}");
}

#[test]
fn custom_roles_come_from_files_and_the_environment_and_bad_ones_are_named() {
    let s = load_ok(
        Some("[auth.roles]\nanalyst = [\"experiments:read\", \"results:read\"]\n"),
        &[(
            "VERDICT_AUTH__ROLES__RELEASER",
            "experiments:read, experiments:decide",
        )],
    );
    assert_eq!(
        s.auth.roles["analyst"],
        ["experiments:read", "results:read"]
    );
    assert_eq!(
        s.auth.roles["releaser"],
        ["experiments:read", "experiments:decide"]
    );

    let err = load_err(
        Some("[auth.roles]\nadmin = [\"results:read\"]\ntypo = [\"result:read\"]\n"),
        &[],
    );
    let mut keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["auth.roles.admin", "auth.roles.typo"], "{err:?}");
}

#[test]
fn a_request_timeout_not_longer_than_the_job_wait_is_rejected() {
    let err = load_err(
        None,
        &[
            ("VERDICT_SERVER__REQUEST_TIMEOUT_SECONDS", "30"),
            ("VERDICT_JOBS__HTTP_WAIT_SECONDS", "30"),
        ],
    );
    assert_invalid_only(&err, "server.request_timeout_seconds");
    let s = load_ok(
        None,
        &[
            ("VERDICT_SERVER__REQUEST_TIMEOUT_SECONDS", "31"),
            ("VERDICT_JOBS__HTTP_WAIT_SECONDS", "30"),
        ],
    );
    assert_eq!(
        s.server.request_timeout(),
        std::time::Duration::from_secs(31)
    );
}

#[test]
fn a_zero_header_read_timeout_is_rejected() {
    let err = load_err(
        None,
        &[("VERDICT_SERVER__HEADER_READ_TIMEOUT_SECONDS", "0")],
    );
    assert_invalid_only(&err, "server.header_read_timeout_seconds");
}

#[test]
fn zero_connections_per_peer_means_unlimited_and_is_accepted() {
    let s = load_ok(None, &[("VERDICT_SERVER__MAX_CONNECTIONS_PER_PEER", "0")]);
    assert_eq!(s.server.max_connections_per_peer, 0);
}

#[test]
fn the_assignment_cache_takes_a_memory_budget_in_mib_and_refuses_zero() {
    let s = load_ok(None, &[("VERDICT_SERVER__ASSIGNMENT_CACHE_MB", "8")]);
    assert_eq!(s.server.assignment_cache_bytes(), 8 * 1024 * 1024);
    let err = load_err(None, &[("VERDICT_SERVER__ASSIGNMENT_CACHE_MB", "0")]);
    assert_invalid_only(&err, "server.assignment_cache_mb");
}

// --- publish --------------------------------------------------------------------------

#[test]
fn publish_targets_are_off_by_default_and_an_s3_endpoint_is_checked() {
    let s = load_ok(None, &[]);
    assert!(s.publish.directory.as_os_str().is_empty());
    assert!(s.publish.s3_bucket.is_empty());
    assert_eq!(s.jobs.publish_schedule, "45 * * * * *");

    let err = load_err(
        None,
        &[
            ("VERDICT_PUBLISH__S3_BUCKET", "b"),
            ("VERDICT_PUBLISH__S3_ENDPOINT", "http://127.0.0.1:9000"),
        ],
    );
    assert_invalid_only(&err, "publish.s3_endpoint");
    load_ok(
        None,
        &[
            ("VERDICT_PUBLISH__S3_BUCKET", "b"),
            ("VERDICT_PUBLISH__S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("VERDICT_PUBLISH__S3_ALLOW_HTTP", "true"),
        ],
    );
    let err = load_err(
        None,
        &[("VERDICT_PUBLISH__S3_ACCESS_KEY_ID", "AKIA-secret-id")],
    );
    assert_invalid_only(&err, "publish.s3_access_key_id");
    assert!(!err.to_string().contains("AKIA-secret-id"), "{err}");
    let err = load_err(None, &[("VERDICT_PUBLISH__TIMEOUT_SECONDS", "0")]);
    assert_invalid_only(&err, "publish.timeout_seconds");
}

// --- console --------------------------------------------------------------------------

#[test]
fn console_sessions_need_a_long_secret_when_one_is_given_and_a_bounded_lifetime() {
    let s = load_ok(None, &[]);
    assert!(s.console.session_secret.expose_secret().is_empty());
    assert_eq!(s.console.session_hours, 12);
    assert!(!s.console.secure_cookie);

    let err = load_err(
        None,
        &[("VERDICT_CONSOLE__SESSION_SECRET", "too-short-secret")],
    );
    assert_invalid_only(&err, "console.session_secret");
    assert!(!err.to_string().contains("too-short-secret"), "{err}");
    let long = "a-console-session-secret-of-40-bytes-long";
    let s = load_ok(None, &[("VERDICT_CONSOLE__SESSION_SECRET", long)]);
    assert_eq!(s.console.session_secret.expose_secret(), long);
    assert!(!format!("{s:?}").contains(long), "the secret is redacted");
    for hours in ["0", "169"] {
        let err = load_err(None, &[("VERDICT_CONSOLE__SESSION_HOURS", hours)]);
        assert_invalid_only(&err, "console.session_hours");
    }
}
