//! The application layer of Verdict: the process state ([`App`]) and every use-case (assign,
//! ingest, create and edit experiments, transition, set a winner, keys, environments,
//! audiences, webhook endpoints, results, job runs), each a method of [`App`] that checks
//! the caller's rights, does the work through the stores and caches, and answers a typed
//! result or an [`AppError`].
//!
//! The HTTP API (`verdict-api`), and every other adapter (console, CLI), call these and
//! nothing below them: no adapter reaches the store, the cache or the job runner directly.
//! This crate does not know about HTTP (no status codes, no extractors) and opens no
//! backend: the binary opens the store and the cache and hands them to [`App::new`].
//!
//! # Layout
//! - [`error`]: [`AppError`] and the stable [`ErrorCode`]s.
//! - [`auth`]: [`Caller`] (who asks, and in which scope), API-key authentication.
//! - [`pages`]: pagination of lists; [`json`]: typed JSON input with errors naming the field.
//! - [`rate_limit`]: per-key token buckets for ingestion.
//! - [`experiments`]: create, read, list, edit (PATCH, variants), lifecycle, manual winner,
//!   QA overrides, audit.
//! - [`assignments`]: which variant a subject sees; the experiment and assignment caches.
//! - [`events`]: event ingestion (validation, attribution, per-item results, rate limit).
//! - [`results`]: winner snapshots, results with statistics, time series, change streams.
//! - [`history`]: the evaluation history (each arm's estimate, interval and P(best) over
//!   time).
//! - [`snapshots`]: the winner-snapshot cache as the read path uses it.
//! - [`sdk`]: the GrowthBook SDK payload, for SDKs that evaluate experiments locally.
//! - [`publishing`]: published config snapshots: publish, versions, the publish after a
//!   live-impacting change.
//! - [`keys`]: API keys (create, list, revoke; the first-run admin key).
//! - [`environments`]: environments and audiences.
//! - [`webhooks`]: webhook endpoints, secrets, the delivery log (of an endpoint, or of an
//!   experiment's messages).
//! - [`jobs`]: the job registry of this process and the internal job use-cases.
//! - [`health`]: readiness and the figures of a metrics scrape.

pub mod assignments;
pub mod audit;
pub mod auth;
pub mod environments;
pub mod error;
pub mod events;
pub mod experiments;
pub mod health;
pub mod history;
pub mod jobs;
pub mod json;
pub mod keys;
pub mod pages;
pub mod publishing;
pub mod rate_limit;
pub mod results;
pub mod sdk;
pub mod snapshots;
pub mod webhooks;

use std::sync::Arc;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use verdict_cache::DynCache;
use verdict_config::{ExposeSecret, Settings};
use verdict_jobs::Runner;
use verdict_metrics::Metrics;
use verdict_store::DynStore;

pub use auth::{Caller, ScopeParams};
pub use error::{AppError, ErrorCode};
pub use pages::{PageParams, Paginated};

use crate::assignments::{AssignmentCache, ExperimentCache};
use crate::auth::{Bootstrap, KeyCache};
use crate::rate_limit::RateLimiter;
use crate::snapshots::Snapshots;

/// The application: cheap to clone (one `Arc`), shared by every adapter of a process.
#[derive(Clone, Debug)]
pub struct App(Arc<Inner>);

/// The state behind [`App`].
#[derive(Debug)]
pub struct Inner {
    store: DynStore,
    snapshots: Snapshots,
    settings: Arc<Settings>,
    bootstrap: Option<Arc<Bootstrap>>,
    keys: KeyCache,
    /// Role names to rights: built-in and `[auth.roles]`.
    roles: verdict_domain::RoleBook,
    /// JWT bearer tokens, when `[auth.jwt]` configures them.
    tokens: Option<verdict_jwt::JwtVerifier>,
    rate: RateLimiter,
    experiments: Arc<ExperimentCache>,
    /// Rendered GrowthBook payloads, by scope.
    payloads: sdk::PayloadCache,
    /// Publishes config snapshots (the store, and the configured targets).
    publisher: verdict_publish::Publisher,
    /// Wakes snapshot streams after this process published.
    publications: publishing::PublicationSignal,
    /// Stored assignments of repeat subjects (never stale: assignments never change).
    assignments: AssignmentCache,
    runner: Runner,
    metrics: Metrics,
    stop: CancellationToken,
}

impl App {
    /// The application over `store` and `cache`, with the job runner of every job
    /// (`aggregate`, `evaluate`, `lifecycle`, `retention`, `webhooks`, `publish`). `stop` is the process's shutdown
    /// signal: jobs, push streams and the HTTP server all watch it. Subscribes to the cache's
    /// change stream and, when JWTs are configured, loads their key set.
    pub async fn new(
        store: DynStore,
        cache: DynCache,
        settings: Arc<Settings>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let publisher = verdict_publish::Publisher::new(store.clone(), &settings.publish)?;
        let runner = jobs::runner(&store, &cache, &settings, &metrics, &stop, &publisher)?;
        runner.keep_lags_fresh();
        let bootstrap = Bootstrap::new(
            settings.auth.bootstrap_admin_key.expose_secret(),
            &settings.auth.bootstrap_environment,
        )
        .map(Arc::new);
        let roles = verdict_domain::RoleBook::with_custom(&settings.auth.roles, "auth.roles")
            .map_err(|p| anyhow::anyhow!("auth.roles: {p}"))?;
        let tokens = verdict_jwt::JwtVerifier::new(&settings.auth.jwt)
            .await
            .map_err(|e| anyhow::anyhow!("auth.jwt: {e}"))?;
        let rate = RateLimiter::new(
            settings.ingest.rate_limit_per_second,
            settings.ingest.rate_limit_burst,
        );
        let snapshots = Snapshots::new(cache);
        let experiments: Arc<ExperimentCache> = Arc::default();
        snapshots.forget_on_change(experiments.clone());
        let assignments = AssignmentCache::with_budget(settings.server.assignment_cache_bytes());
        Ok(Self(Arc::new(Inner {
            store,
            snapshots,
            settings,
            bootstrap,
            keys: KeyCache::default(),
            roles,
            tokens,
            rate,
            experiments,
            payloads: sdk::PayloadCache::default(),
            publisher,
            publications: publishing::PublicationSignal::default(),
            assignments,
            runner,
            metrics,
            stop,
        })))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The job runner (the scheduler and the internal use-cases share it).
    pub fn runner(&self) -> &Runner {
        &self.0.runner
    }

    /// This process's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The process's shutdown signal.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.0.stop
    }

    /// The store backend's name (`sqlite`, `mongodb`), for logs.
    pub fn backend(&self) -> &'static str {
        self.0.store.backend()
    }
}

/// Now, at the millisecond precision stores keep.
pub(crate) fn now() -> OffsetDateTime {
    verdict_store::model::truncate_to_millis(OffsetDateTime::now_utc())
}
