//! Where published versions are written besides the store: a directory and an
//! S3-compatible bucket, both through [`object_store`], in one layout.
//!
//! Under `<prefix><environment>/global/` (an organization's scope:
//! `<prefix><environment>/orgs/<organization>/`):
//! - `snapshots/<version>.json`: the version's snapshot, never rewritten;
//! - `latest.json`: the newest version's snapshot;
//! - `version.json`: the newest version's record (`version`, `hash`, `size`,
//!   `published_at`, …), written last, so a client polling it finds both others in place.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use verdict_config::{ExposeSecret, PublishSettings};
use verdict_domain::{Publication, Scope};

/// One place versions are written to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `directory` or `s3`, in errors and logs.
    pub name: &'static str,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    timeout: Duration,
}

/// The targets `settings` configure (none by default).
pub fn from_settings(settings: &PublishSettings) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    if !settings.directory.as_os_str().is_empty() {
        std::fs::create_dir_all(&settings.directory).with_context(|| {
            format!(
                "publish.directory: cannot create {}",
                settings.directory.display()
            )
        })?;
        let store =
            LocalFileSystem::new_with_prefix(&settings.directory).context("publish.directory")?;
        targets.push(Target {
            name: "directory",
            store: Arc::new(store),
            prefix: String::new(),
            timeout: settings.timeout(),
        });
    }
    if !settings.s3_bucket.is_empty() {
        // Client options first: setting them replaces the whole set, `allow_http` included.
        let mut builder = AmazonS3Builder::from_env()
            .with_client_options(ClientOptions::new().with_timeout(settings.timeout()))
            .with_bucket_name(&settings.s3_bucket)
            .with_region(&settings.s3_region)
            .with_allow_http(settings.s3_allow_http)
            // Retried within the write's own time limit: a mutation waits for its publish.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: settings.timeout(),
                ..RetryConfig::default()
            });
        if !settings.s3_endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.s3_endpoint);
        }
        let key_id = settings.s3_access_key_id.expose_secret();
        if !key_id.is_empty() {
            builder = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(settings.s3_secret_access_key.expose_secret());
        }
        targets.push(Target {
            name: "s3",
            store: Arc::new(builder.build().context("publish.s3_bucket")?),
            prefix: settings.s3_prefix.clone(),
            timeout: settings.timeout(),
        });
    }
    Ok(targets)
}

/// The folder of `scope`'s objects, relative to a target's root.
#[must_use]
pub fn scope_folder(scope: &Scope) -> String {
    match &scope.organization {
        None => format!("{}/global", scope.environment),
        Some(org) => format!("{}/orgs/{org}", scope.environment),
    }
}

impl Target {
    /// Write `publication` with its snapshot `body`: the versioned object, `latest.json`,
    /// then `version.json`. Each write is bounded by `publish.timeout_seconds`.
    pub async fn write(&self, publication: &Publication, body: &[u8]) -> anyhow::Result<()> {
        let folder = format!("{}{}", self.prefix, scope_folder(&publication.scope()));
        let record = serde_json::to_vec(publication)?;
        let body = PutPayload::from(body.to_vec());
        for (name, payload) in [
            (
                format!("snapshots/{}.json", publication.version),
                body.clone(),
            ),
            ("latest.json".to_owned(), body),
            ("version.json".to_owned(), PutPayload::from(record)),
        ] {
            let path = Path::parse(format!("{folder}/{name}"))
                .with_context(|| format!("object key {folder}/{name}"))?;
            tokio::time::timeout(self.timeout, self.store.put(&path, payload))
                .await
                .map_err(|_| anyhow::anyhow!("timed out after {:?}", self.timeout))?
                .with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }
}
