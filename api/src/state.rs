//! [`AppState`]: what every handler is given.

use std::sync::Arc;

use verdict_app::App;

/// The application, and the API document pages this server serves. One `Arc` inside the
/// application: every request clones the state several times (extractors and middleware), so
/// a clone is two reference counts.
#[derive(Clone, Debug)]
pub struct AppState {
    pub app: App,
    /// `/openapi.json` and `/docs`, rendered once when the router is built.
    pub docs: Arc<DocPages>,
    /// The right each route requires, read from the same document.
    pub rights: Arc<crate::rights::RouteRights>,
}

/// The OpenAPI document as served.
#[derive(Debug)]
pub struct DocPages {
    /// `/openapi.json`.
    pub json: String,
    /// `/docs`: an HTML page rendering it.
    pub html: String,
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}
