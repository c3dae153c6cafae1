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
//! The pure modules ([`signing`], [`retry`], [`ssrf`]) do no IO, read no clock and draw no
//! randomness: the dispatcher passes the time, the random bytes of a new secret and the
//! jitter draw. So every rule is tested with plain unit tests, and the signatures are
//! checked against the reference `standardwebhooks` crate. They must not talk to the store,
//! the network or DNS; only [`target`] and [`dispatcher`] do.
//!
//! # Layout
//! - [`signing`]: [`Secret`] (`whsec_<base64>`, 24 to 64 bytes, never printed by `Debug`),
//!   [`sign`], [`signature_header`] and [`headers`] (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`).
//! - [`retry`]: [`RetrySchedule`] (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), the
//!   [`AttemptOutcome`] → [`Decision`] rules, ±20 % jitter, `Retry-After`.
//! - [`ssrf`]: [`is_forbidden`] (private, loopback, link-local, reserved … addresses,
//!   IPv4-mapped IPv6 included) and [`check_target`].
//! - [`target`] (IO): [`check_url`] resolves a URL's host and applies the guard (endpoint
//!   create/update); [`target::GuardedResolver`] applies it inside the HTTP client at every
//!   delivery, so the addresses checked are the addresses connected to.
//! - [`dispatcher`] (IO): [`Dispatcher::run_once`]`(now)` fans the outbox out to endpoints,
//!   claims due deliveries with a lease, sends, records every attempt, schedules retries and
//!   disables endpoints; [`Dispatcher::run_for`] loops it.
//! - [`job`] (IO): [`DeliveryJob`], the dispatcher as the continuous `webhooks` job.

pub mod dispatcher;
pub mod job;
pub mod retry;
pub mod signing;
pub mod ssrf;
pub mod target;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use dispatcher::{DispatchReport, Dispatcher, DispatcherConfig};
pub use job::DeliveryJob;
pub use target::check_url;

pub use retry::{
    AttemptOutcome, Decision, FailReason, MAX_RETRY_AFTER, RetrySchedule, apply_jitter,
    parse_retry_after,
};
pub use signing::{Secret, SecretError, headers, sign, signature_header};
pub use ssrf::{TargetError, check_target, is_forbidden};
