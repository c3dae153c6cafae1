//! Verdict's webhook delivery (SPEC §7, Standard Webhooks): how a message is signed, what to
//! do after each attempt, which targets a delivery may reach (the pure part), and the
//! dispatcher that delivers the store's outbox (the IO part).
//!
//! A state change writes `verdict_domain::OutboxMessage`s with it; the [`dispatcher`] takes
//! each message, and for each subscribed endpoint:
//! 1. checks the endpoint's URL against the addresses its host resolves to
//!    ([`check_target`]), and connects only to those addresses;
//! 2. POSTs the message's body with the [`headers`] of the attempt: the message id (stable
//!    across retries, so receivers deduplicate), the time *of the attempt*, and one signature
//!    per live secret (two while a secret is being rotated);
//! 3. asks [`RetrySchedule::classify`] what the outcome means: delivered, retry after a
//!    delay, give up, or give up and disable the endpoint.
//!
//! The pure rules ([`signing`], [`retry`], [`ssrf`]) are their own crate,
//! `verdict-webhooks-core` (`webhooks/core/`), with no IO and no clock or randomness of
//! their own; they are re-exported here. This crate is the IO around them.
//!
//! # Layout
//! - [`target`] (IO): [`check_url`] resolves a URL's host and applies the guard (endpoint
//!   create/update); [`target::GuardedResolver`] applies it inside the HTTP client at every
//!   delivery, so the addresses checked are the addresses connected to.
//! - [`dispatcher`] (IO): [`Dispatcher::run_once`]`(now)` fans the outbox out to endpoints,
//!   claims due deliveries with a lease, sends, records every attempt, schedules retries and
//!   disables endpoints; [`Dispatcher::run_for`] loops it.
//! - [`job`] (IO): [`DeliveryJob`], the dispatcher as the continuous `webhooks` job.

pub mod dispatcher;
pub mod job;
pub mod target;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use dispatcher::{DispatchReport, Dispatcher, DispatcherConfig};
pub use job::DeliveryJob;
pub use target::check_url;

pub use verdict_webhooks_core::{
    AttemptOutcome, Decision, FailReason, MAX_RETRY_AFTER, RetrySchedule, Secret, SecretError,
    TargetError, apply_jitter, check_target, headers, is_forbidden, parse_retry_after, retry, sign,
    signature_header, signing, ssrf,
};
