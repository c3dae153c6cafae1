//! Typed, layered, validated settings for Verdict.
//!
//! This crate owns:
//!
//! - **Typed settings**: [`Settings`] and its sections, one struct per `[section]` of
//!   `config/default.toml`, with enums for closed choices ([`StoreKind`], [`CacheKind`],
//!   [`LogFormat`]) and [`secrecy::SecretString`] for secrets.
//! - **Layering**: built-in defaults (`config/default.toml`, embedded with `include_str!`)
//!   < an optional `--config <path>` TOML file (an error if given but missing) < environment
//!   variables `VERDICT_<KEY>` with `__` for nesting (`VERDICT_SERVER__PORT=9000`).
//!   Variables starting with `VERDICT_TEST_` belong to the test harness and are ignored.
//!   Unknown keys, in a file or in the environment, are errors: a typo never silently does
//!   nothing.
//! - **Validation** at start-up: every broken rule is reported at once, each as a
//!   [`Problem`] naming its key; [`ConfigError`]'s `Display` prints one `<key>: <message>`
//!   line per problem. Parse errors (wrong type, unknown key, bad TOML, missing file) use the
//!   same shape and say which layer the value came from.
//!
//! It must not:
//!
//! - be bypassed: no other crate reads `VERDICT_*` variables; they get a [`Settings`].
//!   Within this crate the process environment is read only by [`Settings::load`]; tests
//!   inject variables through [`Settings::load_from`].
//! - print secrets: `mongodb.uri`, `redis.url`, `auth.bootstrap_admin_key`,
//!   `console.session_secret`, the S3 credentials and
//!   `auth.jwt.hs256_secret` are `SecretString`s, redacted in `Debug`, never quoted in error
//!   messages, and left out of [`Settings::redacted_summary`].
//!
//! # Layout
//!
//! - `config/default.toml`: every key with its default, allowed values and overriding env
//!   variable; the base layer and the configuration reference.
//! - `src/settings.rs`: the typed tree ([`Settings`] and sections) and derived accessors
//!   ([`Settings::sqlite_path`], [`Settings::redacted_summary`], durations).
//! - `src/load.rs`: layering, the `VERDICT_*` provider, figment error rendering.
//! - `src/validate.rs`: the start-up rules.
//! - `src/error.rs`: [`ConfigError`] and [`Problem`].
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), verdict_config::ConfigError> {
//! let settings = verdict_config::Settings::load(None)?;
//! println!("starting: {}", settings.redacted_summary());
//! # Ok(())
//! # }
//! ```

mod console;
mod error;
mod load;
mod publish;
mod settings;
mod validate;
mod webhooks;

use std::path::Path;

pub use console::ConsoleSettings;
pub use error::{ConfigError, Problem};
pub use publish::PublishSettings;
pub use secrecy::{ExposeSecret, SecretString};
pub use settings::{
    AuthSettings, CacheKind, IngestSettings, JobsSettings, JwtClaimNames, JwtSettings, LogFormat,
    LogSettings, MongodbSettings, RedisSettings, RetentionSettings, ServerSettings, Settings,
    SqliteSettings, StoreKind,
};
pub use validate::{next_fire, parse_schedule, tick_of};
pub use webhooks::WebhooksSettings;

/// The built-in defaults file (`config/default.toml`), which is also the config reference.
pub const DEFAULT_CONFIG_TOML: &str = load::DEFAULTS_TOML;

impl Settings {
    /// Loads defaults < `config_file` < process environment (`VERDICT_*`), then validates.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Load`] if the file is missing or malformed or a key is unknown or of the
    /// wrong type; [`ConfigError::Invalid`] if values break a start-up rule. Either way every
    /// problem is listed, each naming its key.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env = std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        load::load(config_file, env)
    }

    /// Like [`Settings::load`], but with the environment given as `(name, value)` pairs
    /// instead of read from the process, so tests need not touch the real environment.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`].
    pub fn load_from(
        config_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        load::load(config_file, env)
    }
}

#[cfg(test)]
mod tests;
