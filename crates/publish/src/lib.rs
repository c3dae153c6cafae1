//! Config snapshots: what SDKs that evaluate experiments locally load, compiled, versioned
//! and published.
//!
//! A scope's snapshot is the GrowthBook SDK payload of its live experiments
//! ([`verdict_domain::growthbook`]), so any GrowthBook SDK can load a published version
//! as is. [`compile()`] turns the live experiments (with their audiences' rules inlined) into
//! those bytes; `GET /api/features/…` serves the same function's output. [`Publisher`]
//! compiles a scope, records the bytes in the store as the scope's next version when they
//! changed ([`verdict_store::PublicationStore`]), and writes each new version to the
//! configured [`targets`] (a directory, an S3-compatible bucket). A publish that fails
//! leaves the scope pending; [`PublishJob`] retries pending scopes and publishes every scope
//! whose snapshot changed without a request (a winner the evaluation job decided, a
//! scheduled start or end).
//!
//! # Layout
//! - [`mod@compile`]: live experiments → [`Rendered`] bytes with their hash and `ETag`.
//! - [`targets`]: where versions are written besides the store, and the object layout.
//! - [`publisher`]: [`Publisher`], one scope's publish, and which scopes a change touches.
//! - [`job`]: [`PublishJob`], the `publish` job.

pub mod compile;
pub mod job;
pub mod publisher;
pub mod targets;

pub use compile::{Rendered, compile, scope_experiments};
pub use job::{PublishJob, PublishReport};
pub use publisher::{PublishError, Published, Publisher};
