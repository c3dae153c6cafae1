//! The routes, one module per resource, each adding its routes with `routes!` (which
//! documents them too) in its `routes()`.

pub mod assignments;
pub mod audit;
pub mod docs;
pub mod environments;
pub mod events;
pub mod experiments;
pub mod health;
pub mod internal;
pub mod keys;
pub mod ofrep;
pub mod results;
pub mod sdk;
pub mod snapshots;
pub mod stream;
pub mod webhooks;
pub mod ws;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every resource's routes added to `router`. Their paths carry the `/v1` prefix themselves
/// (not nested: a nested route would rebuild every request's URI without the prefix).
pub fn all(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let resources: [fn(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>; 16] = [
        health::routes,
        docs::routes,
        keys::routes,
        audit::routes,
        environments::routes,
        experiments::routes,
        assignments::routes,
        sdk::routes,
        snapshots::routes,
        ofrep::routes,
        events::routes,
        results::routes,
        stream::routes,
        ws::routes,
        webhooks::routes,
        internal::routes,
    ];
    resources
        .into_iter()
        .fold(router, |router, add| add(router))
}
