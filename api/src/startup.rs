//! Building and running the HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use verdict_config::{ExposeSecret, Settings};
use verdict_domain::Environment;
use verdict_store::{DynStore, StoreError};

use crate::auth::{Bootstrap, KeyCache};
use crate::error::{ApiError, ErrorCode};
use crate::health;
use crate::rate_limit::RateLimiter;
use crate::routes::assignments::ExperimentCache;
use crate::routes::{admin, assignments, events, experiments, results};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What handlers share: cheap clones of `Arc`s.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: DynStore,
    pub settings: Arc<Settings>,
    pub bootstrap: Option<Arc<Bootstrap>>,
    pub keys: Arc<KeyCache>,
    pub rate: Arc<RateLimiter>,
    pub experiments: Arc<ExperimentCache>,
}

impl AppState {
    pub fn new(store: DynStore, settings: Arc<Settings>) -> Self {
        let bootstrap = Bootstrap::new(
            settings.auth.bootstrap_admin_key.expose_secret(),
            &settings.auth.bootstrap_environment,
        )
        .map(Arc::new);
        let rate = RateLimiter::new(
            settings.ingest.rate_limit_per_second,
            settings.ingest.rate_limit_burst,
        );
        Self {
            store,
            settings,
            bootstrap,
            keys: Arc::default(),
            rate: Arc::new(rate),
            experiments: Arc::default(),
        }
    }
}

/// Drops cached experiment definitions after every successful write through this process,
/// so a client never reads its own write stale.
async fn invalidate_on_write(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    let write = !req.method().is_safe()
        && path.starts_with("/v1/experiments/")
        && !path.ends_with("/events")
        && !path.ends_with("/assignment");
    let response = next.run(req).await;
    if write && response.status().is_success() {
        state.experiments.clear();
    }
    response
}

/// The `/v1` routes.
fn v1() -> Router<AppState> {
    Router::new()
        .route("/api-keys", post(admin::create_key).get(admin::list_keys))
        .route("/api-keys/{id}", axum::routing::delete(admin::revoke_key))
        .route(
            "/environments",
            post(admin::create_environment).get(admin::list_environments),
        )
        .route("/environments/{env}", get(admin::get_environment))
        .route(
            "/environments/{env}/audiences",
            post(admin::create_audience).get(admin::list_audiences),
        )
        .route(
            "/environments/{env}/audiences/{key}",
            get(admin::get_audience)
                .put(admin::update_audience)
                .delete(admin::delete_audience),
        )
        .route(
            "/experiments",
            post(experiments::create).get(experiments::list),
        )
        .route(
            "/experiments/{key}",
            get(experiments::get).patch(experiments::update),
        )
        .route(
            "/experiments/{key}/variants",
            put(experiments::put_variants),
        )
        .route("/experiments/{key}/status", post(experiments::set_status))
        .route("/experiments/{key}/activate", post(experiments::activate))
        .route(
            "/experiments/{key}/winner",
            get(results::winner).post(experiments::override_winner),
        )
        .route(
            "/experiments/{key}/forced/{subject}",
            put(experiments::put_forced).delete(experiments::delete_forced),
        )
        .route("/experiments/{key}/audit", get(experiments::audit))
        .route(
            "/experiments/{key}/assignment",
            get(assignments::get_assignment).post(assignments::post_assignment),
        )
        .route("/assignments", post(assignments::assign_all))
        .route("/events", post(events::post_events))
        .route(
            "/experiments/{key}/events",
            post(events::post_experiment_events),
        )
        .route("/experiments/{key}/results", get(results::results))
}

/// The router with every route and middleware, ready to serve `state`.
pub fn router(state: AppState) -> Router {
    let body_limit =
        usize::try_from(state.settings.server.request_body_limit_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest("/v1", v1())
        .fallback(|| async { ApiError::new(ErrorCode::RouteNotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), invalidate_on_write))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        // Outermost first: assign an id, log the request with it, echo it back.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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
}

impl Application {
    /// Bind the configured address (port 0 picks a free port, as tests do).
    pub async fn build(settings: Arc<Settings>, store: DynStore) -> anyhow::Result<Self> {
        ensure_environment(&store, &settings.auth.bootstrap_environment).await?;
        let addr = settings.server.listen_address();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let router = router(AppState::new(store, settings));
        Ok(Self { listener, router })
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
