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
    /// Signs and checks the console's sign-ins.
    pub sessions: Arc<crate::session::Sessions>,
}

/// The OpenAPI document as served.
pub struct DocPages {
    /// `/openapi.json`.
    pub json: String,
    /// `/docs`: an HTML page rendering it (Swagger UI).
    pub html: String,
    /// What Swagger UI's files under `/docs/` are served with.
    pub swagger: Arc<utoipa_swagger_ui::Config<'static>>,
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl std::fmt::Debug for DocPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocPages")
            .field("json", &format_args!("{} bytes", self.json.len()))
            .field("html", &format_args!("{} bytes", self.html.len()))
            .finish_non_exhaustive()
    }
}
