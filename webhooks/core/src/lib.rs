//! The pure rules of Verdict's webhook delivery (SPEC §7, Standard Webhooks): how a message
//! is signed, what to do after each attempt, which addresses a delivery may reach.
//!
//! Nothing here does IO, reads the clock or draws randomness: the dispatcher
//! (`verdict-webhooks`) passes the time, the random bytes of a new secret and the jitter
//! draw. So every rule is tested with plain unit tests, and the signatures are checked
//! against the reference `standardwebhooks` crate.
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
