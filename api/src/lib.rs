//! The HTTP adapter of Verdict (axum): routes, extractors, the error body, the OpenAPI
//! document and the server's lifecycle.
//!
//! Handlers only extract input, call one use-case of `verdict-app` ([`verdict_app::App`]),
//! and map the answer: no business rule lives here, and nothing here reaches the store, the
//! cache or the job runner. [`error`] maps each stable error code to its HTTP status in one
//! exhaustive table.
//!
//! # Layout
//! - [`error`]: [`ApiError`] (an [`verdict_app::AppError`] as an HTTP response) and the
//!   code → status table.
//! - [`extract`]: JSON / query extractors answering bad input with our error body; the
//!   [`verdict_app::Caller`] of a request.
//! - [`rights`]: the right each route declares in its annotation.
//! - [`authorize`]: the middleware that authenticates the caller and checks the route's
//!   right before the request is read.
//! - [`routes`]: one module per resource, each with its `routes()`.
//! - [`openapi`]: the OpenAPI document (`/openapi.json`), generated from the handlers'
//!   annotations plus the responses every operation shares, and its rendering (`/docs`).
//! - [`state`]: [`AppState`], what handlers are given.
//! - [`startup`]: the router with its middleware (the request time limit among them), the
//!   OpenAPI document, [`Application`].
//! - `serve`: the connection loop [`Application`] runs: HTTP/1 with a header-read timeout,
//!   a cap on connections per peer address, graceful stop.

pub mod authorize;
pub mod console;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod rights;
pub mod routes;
mod serve;
pub mod session;
pub mod startup;
pub mod state;

pub use error::ApiError;
pub use startup::{AppState, Application, router};
