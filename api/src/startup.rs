//! The router, its middleware, and the server's lifecycle.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use verdict_app::{App, ErrorCode};
use verdict_config::ExposeSecret;

use crate::authorize::authorize;
use crate::error::ApiError;
use crate::openapi;
use crate::rights::RouteRights;
pub use crate::state::AppState;
use crate::state::DocPages;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Around every request: apply the request time limit (`server.request_timeout_seconds`,
/// except on the push routes), then count the request by matched route (never the raw
/// path), method and status. The limit covers reading the body and the handler; a request
/// over it is answered 408 `request_timeout` (and, its body unread, the connection closes).
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
    let started = std::time::Instant::now();
    let push = route
        .as_ref()
        .is_some_and(|p| openapi::PUSH_ROUTES.contains(&p.as_str()));
    let response = if push {
        next.run(req).await
    } else {
        let limit = state.settings().server.request_timeout();
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request took longer than {} s (server.request_timeout_seconds)",
                    limit.as_secs()
                ),
            )
            .into_response(),
        }
    };
    state.metrics().request(
        route.as_ref().map_or("unmatched", |p| p.as_str()),
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Every route the server has, each with its OpenAPI operation. [`router`] serves the router
/// half, [`document`] is the document half: one list, so the document names exactly the
/// routes served. Register routes only with `.routes(routes!(…))` (never `.route`, which
/// would route without documenting).
pub fn routes() -> OpenApiRouter<AppState> {
    crate::routes::all(OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()))
}

/// The complete OpenAPI document: the frame, every routed operation, the shared responses.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    openapi::add_shared_responses(&mut doc);
    doc
}

/// The router with every route and middleware, ready to serve `state`.
///
/// Only `authorize` and `after_request` (which need the matched route) wrap each route
/// (and `after_request` the fallbacks too); the other layers wrap the routed whole once. A layer on a router wraps every
/// route's service, and a request clones its route's whole stack of boxed services (one
/// allocation per layer and method): paid per request.
pub fn router(app: App) -> Router {
    let doc = document();
    let rights = RouteRights::of(&doc)
        .unwrap_or_else(|problems| panic!("routes declare unusable rights: {problems:#?}"));
    let sessions = Arc::new(crate::session::Sessions::new(
        &app.settings().console,
        app.settings().auth.bootstrap_admin_key.expose_secret(),
    ));
    let state = AppState {
        app,
        docs: Arc::new(DocPages::of(&doc)),
        rights: Arc::new(rights),
        sessions,
    };
    let body_limit =
        usize::try_from(state.settings().server.request_body_limit_bytes).unwrap_or(usize::MAX);
    let (routes, _document) = routes().split_for_parts();
    let routed = routes
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::new(ErrorCode::RouteNotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        // Inner to outer: check the route's right before any extractor reads the request;
        // count every request, refused ones too.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
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
            // A credential in the path (GrowthBook's client key) is never logged.
            let path = crate::routes::sdk::loggable_path(req.uri().path());
            tracing::info_span!("request", method = %req.method(), path = %path, request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(DefaultBodyLimit::max(body_limit))
        .service(routed);
    Router::new().fallback_service(outer)
}

/// A bound, not yet serving, HTTP server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    app: App,
}

impl Application {
    /// Bind the configured address (port 0 picks a free port, as tests do) and make sure
    /// the bootstrap environment exists.
    pub async fn build(app: App) -> anyhow::Result<Self> {
        app.ensure_bootstrap_environment()
            .await
            .map_err(|e| anyhow::anyhow!("preparing the store: {e}"))?;
        let addr = app.settings().server.listen_address();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let router = router(app.clone());
        Ok(Self {
            listener,
            router,
            app,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serve until the application's shutdown signal, then stop accepting and let in-flight
    /// requests end (push streams end on the same signal). Connections get
    /// `server.header_read_timeout_seconds` to send their headers, and one peer address at
    /// most `server.max_connections_per_peer` open connections (see `serve.rs`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let server = &self.app.settings().server;
        let limits = crate::serve::Limits {
            header_read_timeout: server.header_read_timeout(),
            max_connections_per_peer: server.max_connections_per_peer,
        };
        let stop = self.app.stop_token().clone();
        crate::serve::serve(self.listener, self.router, limits, stop).await
    }
}
