//! `[publish]`: where published config snapshots are written besides the store.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::Problem;

/// Longest time limit of one target write, in seconds.
const MAX_TIMEOUT_SECONDS: u64 = 300;

/// `[publish]`: the targets every published snapshot version is written to (the store always
/// holds them), as `snapshots/{version}.json`, `latest.json` and `version.json` under each
/// scope's prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    /// A directory to write snapshots into; empty: none.
    pub directory: PathBuf,
    /// An S3-compatible bucket to write snapshots into; empty: none.
    pub s3_bucket: String,
    /// The S3 endpoint URL; empty: AWS's endpoint of `s3_region`.
    pub s3_endpoint: String,
    pub s3_region: String,
    /// Credentials; both empty: taken from the usual AWS environment variables, profile
    /// or instance metadata.
    pub s3_access_key_id: SecretString,
    pub s3_secret_access_key: SecretString,
    /// Prepended to every object key (e.g. `verdict/`).
    pub s3_prefix: String,
    /// Allow an `http://` endpoint (test servers, closed networks).
    pub s3_allow_http: bool,
    /// Time limit of one write to a target, in seconds.
    pub timeout_seconds: u64,
}

impl PublishSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

/// The `[publish]` start-up rules.
pub(crate) fn validate(p: &PublishSettings, problems: &mut Vec<Problem>) {
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&p.timeout_seconds) {
        problems.push(Problem::new(
            "publish.timeout_seconds",
            format!(
                "must be between 1 and {MAX_TIMEOUT_SECONDS} (got {})",
                p.timeout_seconds
            ),
        ));
    }
    let endpoint = p.s3_endpoint.trim();
    let http = endpoint.starts_with("http://");
    if !(endpoint.is_empty() || http || endpoint.starts_with("https://")) {
        problems.push(Problem::new(
            "publish.s3_endpoint",
            "must start with https:// or http://",
        ));
    }
    if http && !p.s3_allow_http {
        problems.push(Problem::new(
            "publish.s3_endpoint",
            "is http://: set publish.s3_allow_http = true to allow it",
        ));
    }
    if !p.s3_bucket.is_empty() && p.s3_region.trim().is_empty() {
        problems.push(Problem::new("publish.s3_region", "must not be empty"));
    }
    let (id, secret) = (
        p.s3_access_key_id.expose_secret().is_empty(),
        p.s3_secret_access_key.expose_secret().is_empty(),
    );
    if id != secret {
        problems.push(Problem::new(
            "publish.s3_access_key_id",
            "give both publish.s3_access_key_id and publish.s3_secret_access_key, or neither",
        ));
    }
}
