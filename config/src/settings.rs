//! The typed settings tree. Field names are the config keys; see `default.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Every Verdict setting, after layering. Build it with [`Settings::load`].
///
/// `Debug` is safe to log: secret fields print as `[REDACTED]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for local state (the embedded store lives here by default).
    pub data_dir: PathBuf,
    /// Storage backend.
    pub store: StoreKind,
    /// Cache backend.
    pub cache: CacheKind,
    /// HTTP server.
    pub server: ServerSettings,
    /// Logging.
    pub log: LogSettings,
    /// Embedded SQLite store (used when `store = "sqlite"`).
    pub sqlite: SqliteSettings,
    /// MongoDB store (used when `store = "mongodb"`).
    pub mongodb: MongodbSettings,
    /// Redis cache (used when `cache = "redis"`).
    pub redis: RedisSettings,
    /// Bootstrap credentials.
    pub auth: AuthSettings,
    /// Event ingestion limits.
    pub ingest: IngestSettings,
    /// Scheduled jobs.
    pub jobs: JobsSettings,
    /// How long data is kept.
    pub retention: RetentionSettings,
    /// Webhook delivery.
    pub webhooks: crate::webhooks::WebhooksSettings,
    /// Where published config snapshots are written besides the store.
    pub publish: crate::publish::PublishSettings,
    /// The admin console's sign-ins.
    pub console: crate::console::ConsoleSettings,
}

/// `[jobs]`: what the scheduler runs and when (cron with seconds, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSettings {
    /// Run the scheduler in `verdict serve` (`--no-scheduler` overrides it to false).
    pub enabled: bool,
    /// When the aggregation job runs.
    pub aggregate_schedule: String,
    /// When the evaluation job runs.
    pub evaluate_schedule: String,
    /// When the retention job runs.
    pub retention_schedule: String,
    /// When the lifecycle job starts and completes experiments on their schedule.
    pub lifecycle_schedule: String,
    /// When the publish job re-publishes scopes whose snapshot changed without a request
    /// (a decision, a schedule) and retries failed publishes.
    pub publish_schedule: String,
    /// How long a job's lease lasts without renewal (renewed every third of it while the
    /// run goes on); a crashed holder's jobs resume on another replica after this.
    pub lease_seconds: u64,
    /// How long `POST /v1/internal/jobs/{job}/run` waits for the run before answering 202.
    pub http_wait_seconds: u64,
    /// Least seconds between two `metrics` pushes of one experiment to WebSocket
    /// subscribers, which follow aggregation runs that folded events (0: after every one).
    pub metrics_push_seconds: u64,
    /// This process's name in job leases and run records (before a process id and a
    /// random suffix); empty in the configuration means the host name (`HOSTNAME`).
    pub instance: String,
}

impl JobsSettings {
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_seconds)
    }

    pub fn http_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.http_wait_seconds)
    }

    pub fn metrics_push_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.metrics_push_seconds)
    }
}

/// `[retention]`: how long data is kept (experiments may override the first two).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days raw events are kept; never deleted before they are aggregated.
    pub raw_events_days: u32,
    /// Days hour and day buckets are kept.
    pub buckets_days: u32,
    /// Days finished job run records are kept.
    pub runs_days: u32,
    /// Days the attempt log of finished webhook deliveries is kept.
    pub webhook_attempts_days: u32,
    /// Config snapshot versions kept per scope (the newest; the latest always stays).
    pub snapshot_versions_kept: u32,
    /// Most rows one delete statement removes.
    pub batch_size: usize,
}

/// Which storage backend holds experiments, assignments and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite database under `data_dir`.
    Sqlite,
    /// External MongoDB (`mongodb.uri`).
    Mongodb,
}

/// Which cache backend serves hot lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// In-process cache.
    Memory,
    /// Shared Redis (`redis.url`).
    Redis,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`: the HTTP API listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Interface to bind.
    pub host: String,
    /// TCP port (1..=65535).
    pub port: u16,
    /// Largest accepted request body in bytes (>= 1024).
    pub request_body_limit_bytes: u64,
    /// Drain time for in-flight requests on shutdown (<= 3600).
    pub shutdown_grace_seconds: u64,
    /// Time limit of a whole request (headers, body, handler), except the push routes;
    /// longer than `jobs.http_wait_seconds`.
    pub request_timeout_seconds: u64,
    /// Time a client has to send a request's headers (1..=3600).
    pub header_read_timeout_seconds: u64,
    /// Most open connections from one peer IP address; 0 means unlimited.
    pub max_connections_per_peer: usize,
    /// Memory for the in-process cache of repeat subjects' assignments, in MiB (1..=65536).
    pub assignment_cache_mb: u64,
}

impl ServerSettings {
    /// `host:port`, suitable for binding (IPv6 hosts are bracketed).
    pub fn listen_address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `shutdown_grace_seconds` as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// `request_timeout_seconds` as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// `assignment_cache_mb` in bytes.
    pub fn assignment_cache_bytes(&self) -> u64 {
        self.assignment_cache_mb.saturating_mul(1024 * 1024)
    }

    /// `header_read_timeout_seconds` as a [`Duration`].
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }
}

/// `[log]`: log filter and format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// An `EnvFilter` directive string, e.g. `"info"` or `"warn,verdict_api=debug"`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// `[sqlite]`: the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    /// Database file; empty means `<data_dir>/verdict.db` (use [`Settings::sqlite_path`]).
    pub path: PathBuf,
    /// Lock wait in milliseconds (<= 600000).
    pub busy_timeout_ms: u64,
}

impl SqliteSettings {
    /// `busy_timeout_ms` as a [`Duration`].
    pub fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }
}

/// `[mongodb]`: the external store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongodbSettings {
    /// Connection string (secret: may contain credentials).
    pub uri: SecretString,
    /// Database name.
    pub database: String,
    /// Connection timeout in milliseconds.
    pub connect_timeout_ms: u64,
}

impl MongodbSettings {
    /// `connect_timeout_ms` as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// `[redis]`: the shared cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL (secret: may contain a password).
    pub url: SecretString,
    /// Prefix for every key Verdict writes.
    pub key_prefix: String,
}

/// `[auth]`: bootstrap credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Admin API key created at start-up; empty means none (secret).
    pub bootstrap_admin_key: SecretString,
    /// Environment the bootstrap key belongs to.
    pub bootstrap_environment: String,
    /// Custom roles: role name → the rights it grants (`[auth.roles]`), beside the
    /// built-in `viewer`, `experimenter`, `operator`, `admin`, `client`, `internal`.
    /// In the environment a role's rights are one comma-separated value
    /// (`VERDICT_AUTH__ROLES__ANALYST=results:read,experiments:read`).
    #[serde(default, deserialize_with = "role_map")]
    pub roles: BTreeMap<String, Vec<String>>,
    /// JWT bearer tokens (`[auth.jwt]`); off unless a secret or a key set is configured.
    pub jwt: JwtSettings,
}

/// `[auth.roles]`: each role's rights as a list, or as one comma-separated text.
fn role_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rights {
        List(Vec<String>),
        Text(String),
    }
    let raw = BTreeMap::<String, Rights>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(role, rights)| {
            let rights = match rights {
                Rights::List(list) => list,
                Rights::Text(text) => text
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            (role, rights)
        })
        .collect())
}

/// `[auth.jwt]`: verification of JWT bearer tokens, beside API keys.
///
/// Off when `hs256_secret`, `jwks_url` and `jwks_file` are all empty. Empty strings mean
/// "not set" (TOML has no null).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Shared secret for HS256 tokens; empty means HS256 is refused (secret).
    pub hs256_secret: SecretString,
    /// JWKS endpoint (http or https) whose keys verify RS*/PS*/ES*/EdDSA tokens.
    pub jwks_url: String,
    /// JWKS file read at start-up, instead of `jwks_url`.
    pub jwks_file: PathBuf,
    /// Required `iss`; empty means not checked.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences); empty means not checked.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Time limit of one JWKS fetch, in seconds.
    pub jwks_timeout_seconds: u64,
    /// Least time between two JWKS fetches caused by tokens with an unknown `kid`, in seconds.
    pub jwks_min_refresh_seconds: u64,
    /// A fetched key set older than this is fetched again, in seconds.
    pub jwks_max_age_seconds: u64,
    /// Which claims carry the caller's identity.
    pub claims: JwtClaimNames,
}

impl JwtSettings {
    /// `true` when a secret, a JWKS URL or a JWKS file is configured.
    pub fn enabled(&self) -> bool {
        !self.hs256_secret.expose_secret().is_empty()
            || !self.jwks_url.trim().is_empty()
            || !self.jwks_file.as_os_str().is_empty()
    }

    pub fn jwks_timeout(&self) -> Duration {
        Duration::from_secs(self.jwks_timeout_seconds)
    }

    pub fn jwks_min_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_min_refresh_seconds)
    }

    pub fn jwks_max_age(&self) -> Duration {
        Duration::from_secs(self.jwks_max_age_seconds)
    }
}

/// `[auth.jwt.claims]`: claim names, each a top-level name or a dotted path into nested
/// objects (`realm_access.roles`). A name present as-is at the top level wins over the path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtClaimNames {
    /// The caller's identity (required in every token).
    pub subject: String,
    /// The caller's organization (optional).
    pub organization: String,
    /// Environments the caller may act in: a string or an array of strings.
    pub environments: String,
    /// The caller's roles: a string or an array of strings.
    pub roles: String,
}

/// `[ingest]`: event ingestion limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Most events per ingest request (1..=1000).
    pub max_batch: usize,
    /// Sustained events per second per API key; 0 disables rate limiting.
    pub rate_limit_per_second: u32,
    /// Token bucket capacity; >= `rate_limit_per_second` when limiting is on.
    pub rate_limit_burst: u32,
    /// Largest accepted `|value|` of an event (finite, > 0); a larger one is rejected.
    pub max_abs_value: f64,
}

impl IngestSettings {
    /// `true` when `rate_limit_per_second > 0`.
    pub fn rate_limit_enabled(&self) -> bool {
        self.rate_limit_per_second > 0
    }
}

impl Settings {
    /// The SQLite database file: `sqlite.path`, or `<data_dir>/verdict.db` when that is empty.
    pub fn sqlite_path(&self) -> PathBuf {
        if self.sqlite.path.as_os_str().is_empty() {
            self.data_dir.join("verdict.db")
        } else {
            self.sqlite.path.clone()
        }
    }

    /// The HTTP listen address, `host:port`.
    pub fn listen_address(&self) -> String {
        self.server.listen_address()
    }

    /// One line for the start-up log: backends, where data lives, listen address.
    /// Never contains secrets (no URIs, URLs or keys).
    pub fn redacted_summary(&self) -> String {
        let store = match self.store {
            StoreKind::Sqlite => {
                format!("store=sqlite sqlite_path={}", self.sqlite_path().display())
            }
            StoreKind::Mongodb => {
                format!("store=mongodb mongodb_database={}", self.mongodb.database)
            }
        };
        let cache = match self.cache {
            CacheKind::Memory => "cache=memory".to_owned(),
            CacheKind::Redis => format!("cache=redis redis_key_prefix={}", self.redis.key_prefix),
        };
        format!(
            "{store} {cache} data_dir={} listen={}",
            self.data_dir.display(),
            self.listen_address()
        )
    }
}
