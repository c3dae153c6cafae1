//! Building and running the HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_cache::{DynCache, MemoryCache, RedisCache};
use verdict_config::{CacheKind, ExposeSecret, Settings, StoreKind};
use verdict_domain::Environment;
use verdict_jobs::Jobs;
use verdict_metrics::Metrics;
use verdict_store::{DynStore, MongoStore, SqliteStore, StoreError};

use crate::auth::{Bootstrap, KeyCache};
use crate::error::{ApiError, ErrorCode};
use crate::rate_limit::RateLimiter;
use crate::routes::assignments::{AssignmentCache, ExperimentCache};
use crate::routes::{
    admin, assignments, events, experiments, internal, results, stream, webhooks, ws,
};
use crate::snapshots::Snapshots;
use crate::{health, openapi};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What handlers share. One `Arc`: every request clones it several times (extractors and
/// middleware), so a clone is one reference count.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub store: DynStore,
    /// Winner snapshots (the configured cache, behind a resilient wrapper).
    pub snapshots: Snapshots,
    pub settings: Arc<Settings>,
    pub bootstrap: Option<Arc<Bootstrap>>,
    pub keys: KeyCache,
    pub rate: RateLimiter,
    pub experiments: Arc<ExperimentCache>,
    /// Stored assignments of repeat subjects (never stale: assignments never change).
    pub assignments: AssignmentCache,
    /// Job runs (internal API) and this process's metrics (`jobs.metrics()`).
    pub jobs: Jobs,
}

impl AppState {
    /// Must be called inside a Tokio runtime (it subscribes to the cache's change stream).
    pub fn new(store: DynStore, cache: DynCache, settings: Arc<Settings>) -> Self {
        let bootstrap = Bootstrap::new(
            settings.auth.bootstrap_admin_key.expose_secret(),
            &settings.auth.bootstrap_environment,
        )
        .map(Arc::new);
        let rate = RateLimiter::new(
            settings.ingest.rate_limit_per_second,
            settings.ingest.rate_limit_burst,
        );
        let jobs = Jobs::new(
            store.clone(),
            cache.clone(),
            settings.clone(),
            Metrics::new(),
        );
        let snapshots = Snapshots::new(cache);
        let experiments: Arc<ExperimentCache> = Arc::default();
        snapshots.forget_on_change(experiments.clone());
        Self(Arc::new(Shared {
            store,
            snapshots,
            settings,
            bootstrap,
            keys: KeyCache::default(),
            rate,
            experiments,
            assignments: AssignmentCache::default(),
            jobs,
        }))
    }
}

/// After every request: count it by matched route (never the raw path), method and status;
/// and after a successful write under `/v1/experiments/` (not events or assignments) drop
/// the cached experiment definitions, so a client never reads its own write stale. One
/// middleware for both: each layer costs every request a boxed service and a clone.
async fn after_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // A reference-counted copy of the route template, not a new String.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let method = req.method().clone();
    let path = req.uri().path();
    let write = !method.is_safe()
        && path.starts_with("/v1/experiments/")
        && !path.ends_with("/events")
        && !path.ends_with("/assignment");
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    if write && status.is_success() {
        state.experiments.clear();
    }
    state.jobs.metrics().request(
        route.as_ref().map_or("unmatched", |p| p.as_str()),
        method.as_str(),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The `/v1` routes. Each `routes!` call is one path: its handlers (one per method) are
/// routed and their `#[utoipa::path]` operations enter the OpenAPI document together.
/// Their paths carry the `/v1` prefix themselves (not nested: a nested route would
/// rebuild every request's URI without the prefix).
fn v1(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(admin::create_key, admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::create_environment, admin::list_environments))
        .routes(routes!(admin::get_environment))
        .routes(routes!(admin::create_audience, admin::list_audiences))
        .routes(routes!(
            admin::get_audience,
            admin::update_audience,
            admin::delete_audience
        ))
        .routes(routes!(experiments::create, experiments::list))
        .routes(routes!(experiments::get, experiments::update))
        .routes(routes!(experiments::put_variants))
        .routes(routes!(experiments::set_status))
        .routes(routes!(experiments::activate))
        .routes(routes!(results::winner, experiments::override_winner))
        .routes(routes!(experiments::put_forced, experiments::delete_forced))
        .routes(routes!(experiments::audit))
        .routes(routes!(
            assignments::get_assignment,
            assignments::post_assignment
        ))
        .routes(routes!(assignments::assign_all))
        .routes(routes!(events::post_events))
        .routes(routes!(events::post_experiment_events))
        .routes(routes!(results::results))
        .routes(routes!(results::timeseries))
        .routes(routes!(stream::stream))
        .routes(routes!(ws::ws))
        .routes(routes!(webhooks::create_endpoint, webhooks::list_endpoints))
        .routes(routes!(
            webhooks::get_endpoint,
            webhooks::update_endpoint,
            webhooks::delete_endpoint
        ))
        .routes(routes!(webhooks::enable_endpoint))
        .routes(routes!(webhooks::disable_endpoint))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_messages))
        .routes(routes!(webhooks::list_attempts))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(webhooks::recover))
        .routes(routes!(internal::run_job))
        .routes(routes!(internal::run_aggregate_alias))
        .routes(routes!(internal::run_retention_alias))
        .routes(routes!(internal::list_jobs))
        .routes(routes!(internal::list_runs))
        .routes(routes!(internal::get_run))
}

/// Every route the server has, each with its OpenAPI operation. [`router`] serves the router
/// half, [`crate::openapi::document`] is the document half: one list, so the document names
/// exactly the routes served. Register routes only with `.routes(routes!(…))` (never
/// `.route`, which would route without documenting).
pub fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs));
    v1(router)
}

/// The router with every route and middleware, ready to serve `state`.
///
/// Only `after_request` (which needs the matched route) wraps each route and the
/// fallbacks; the other layers wrap the routed whole once. A layer on a router wraps every
/// route's service, and a request clones its route's whole stack of boxed services (one
/// allocation per layer and method): paid per request.
pub fn router(state: AppState) -> Router {
    let body_limit =
        usize::try_from(state.settings.server.request_body_limit_bytes).unwrap_or(usize::MAX);
    let (routes, _document) = routes().split_for_parts();
    let routed = routes
        .fallback(|| async { ApiError::new(ErrorCode::RouteNotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            after_request,
        ))
        .with_state(state);
    let outer = tower::ServiceBuilder::new()
        // Outermost first: assign an id, log the request with it, echo it back.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(DefaultBodyLimit::max(body_limit))
        .service(routed);
    Router::new().fallback_service(outer)
}

/// Open the store `settings` select: the SQLite file under the data dir (created on first
/// use), or the MongoDB database (`mongodb.uri`, `mongodb.database`; indexes created).
pub async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    match settings.store {
        StoreKind::Sqlite => {
            let path = settings.sqlite_path();
            let store = SqliteStore::open(&path, settings.sqlite.busy_timeout_ms)
                .with_context(|| format!("opening the SQLite store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreKind::Mongodb => {
            let store = MongoStore::connect_with_timeout(
                settings.mongodb.uri.expose_secret(),
                &settings.mongodb.database,
                Some(settings.mongodb.connect_timeout()),
            )
            .await
            .with_context(|| {
                format!(
                    "connecting to MongoDB (database {})",
                    settings.mongodb.database
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Open the cache `settings` select: in-process (`memory`), or Redis (`redis.url`,
/// `redis.key_prefix`). Connecting never waits for Redis: when it is down, reads fall back
/// to the store and writes are retried.
pub fn open_cache(settings: &Settings) -> anyhow::Result<DynCache> {
    Ok(match settings.cache {
        CacheKind::Memory => Arc::new(MemoryCache::new()),
        CacheKind::Redis => Arc::new(
            RedisCache::connect(
                settings.redis.url.expose_secret(),
                &settings.redis.key_prefix,
            )
            .context("configuring the Redis cache")?,
        ),
    })
}

/// Make sure the bootstrap environment exists, so a fresh install can create experiments.
async fn ensure_environment(store: &DynStore, key: &str) -> anyhow::Result<()> {
    if store.get_environment(key).await?.is_some() {
        return Ok(());
    }
    let env = Environment {
        key: key.to_owned(),
        name: key.to_owned(),
        description: "created at start-up (auth.bootstrap_environment)".into(),
        created_at: crate::routes::now(),
    };
    match store.create_environment(&env).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// On a fresh install with no bootstrap key configured and no API key stored, create an
/// admin key so that a first run can be used at once. Returns its plaintext (to be shown
/// once); `None` when keys already exist or one is configured.
pub async fn first_run_admin_key(
    store: &DynStore,
    settings: &Settings,
) -> anyhow::Result<Option<String>> {
    if !settings.auth.bootstrap_admin_key.expose_secret().is_empty() {
        return Ok(None);
    }
    let existing = store
        .list_api_keys(verdict_store::PageRequest {
            page: 1,
            page_size: 1,
        })
        .await?;
    if existing.total > 0 {
        return Ok(None);
    }
    let (plaintext, hash) = crate::auth::generate_key();
    let key = verdict_domain::ApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name: "first-run admin key".into(),
        prefix: plaintext[..10].to_owned(),
        hash,
        scopes: vec![verdict_domain::KeyScope::Admin],
        environment: settings.auth.bootstrap_environment.clone(),
        organization: None,
        created_at: crate::routes::now(),
        revoked_at: None,
    };
    store.create_api_key(&key).await?;
    Ok(Some(plaintext))
}

/// A bound, not yet serving, HTTP server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    jobs: Jobs,
}

impl Application {
    /// Bind the configured address (port 0 picks a free port, as tests do).
    pub async fn build(
        settings: Arc<Settings>,
        store: DynStore,
        cache: DynCache,
    ) -> anyhow::Result<Self> {
        ensure_environment(&store, &settings.auth.bootstrap_environment).await?;
        let addr = settings.server.listen_address();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let state = AppState::new(store, cache, settings);
        let jobs = state.jobs.clone();
        let router = router(state);
        Ok(Self {
            listener,
            router,
            jobs,
        })
    }

    /// The job runner this server's internal API uses; the scheduler of the same process
    /// shares it (one owner id, one shutdown).
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serve until `shutdown` resolves, then stop accepting and let in-flight requests end.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
