//! The pure parts of Verdict's webhook delivery (SPEC §7, Standard Webhooks): how a message
//! is signed, what to do after each attempt, and which targets a delivery may reach.
//!
//! A state change writes `verdict_domain::OutboxMessage`s with it; a dispatcher (not in this
//! crate) takes each message, and for each subscribed endpoint:
//! 1. checks the endpoint's URL against the addresses its host resolves to
//!    ([`check_target`]), and connects only to those addresses;
//! 2. POSTs the message's body with the [`headers`] of the attempt: the message id (stable
//!    across retries, so receivers deduplicate), the time *of the attempt*, and one signature
//!    per live secret (two while a secret is being rotated);
//! 3. asks [`RetrySchedule::classify`] what the outcome means: delivered, retry after a
//!    delay, give up, or give up and disable the endpoint.
//!
//! This crate does no IO, reads no clock and draws no randomness: the dispatcher passes the
//! time, the random bytes of a new secret and the jitter draw. So every rule here is tested
//! with plain unit tests, and the signatures are checked against the reference
//! `standardwebhooks` crate. It must not talk to the store, the network or DNS.
//!
//! # Layout
//! - [`signing`]: [`Secret`] (`whsec_<base64>`, 24 to 64 bytes, never printed by `Debug`),
//!   [`sign`], [`signature_header`] and [`headers`] (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`).
//! - [`retry`]: [`RetrySchedule`] (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), the
//!   [`AttemptOutcome`] → [`Decision`] rules, ±20 % jitter, `Retry-After`.
//! - [`ssrf`]: [`is_forbidden`] (private, loopback, link-local, reserved … addresses,
//!   IPv4-mapped IPv6 included) and [`check_target`].

pub mod retry;
pub mod signing;
pub mod ssrf;

pub use retry::{
    AttemptOutcome, Decision, FailReason, MAX_RETRY_AFTER, RetrySchedule, apply_jitter,
    parse_retry_after,
};
pub use signing::{Secret, SecretError, headers, sign, signature_header};
pub use ssrf::{TargetError, check_target, is_forbidden};
