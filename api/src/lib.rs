//! The HTTP surface of Verdict.
//!
//! This crate owns routing, request ids, the error body every client sees, and the
//! server's lifecycle ([`Application::build`] binds, [`Application::run_until_stopped`]
//! serves until a shutdown signal). Handlers only extract input, call the domain or the
//! store, and map the result; they hold no business logic and never touch a database
//! driver: storage is an `Arc<dyn Store>` in [`AppState`].
//!
//! # Layout
//! - [`error`]: [`ApiError`] and the one table mapping each stable error `code` to a status.
//! - [`extract`]: JSON / query extractors answering bad input with our error body;
//!   pagination.
//! - [`auth`]: API keys (`Authorization: Bearer`), scopes, the bootstrap admin key.
//! - [`rate_limit`]: per-key token buckets for ingestion.
//! - [`routes`]: `/v1` resources (admin, experiments, assignments, events, results).
//! - [`health`]: `/healthz` (alive) and `/readyz` (store reachable).
//! - [`openapi`]: the OpenAPI document (`/openapi.json`), generated from the handlers'
//!   annotations, and its rendering (`/docs`).
//! - [`startup`]: [`Application`], [`AppState`] and the router with its middleware.

pub mod auth;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod snapshots;
pub mod startup;

pub use error::{ApiError, ErrorCode};
pub use startup::{AppState, Application, router};
