//! `[console]`: the admin console served under `/admin`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::Problem;

/// Shortest `session_secret` accepted, in bytes.
pub const MIN_SESSION_SECRET_BYTES: usize = 32;
/// Longest session allowed, in hours (a week).
const MAX_SESSION_HOURS: u64 = 168;

/// `[console]`: how console sign-ins are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Signs session cookies, so every replica with the same secret accepts them and a
    /// restart keeps them. Empty: derived from `auth.bootstrap_admin_key` when that is set,
    /// else a random secret made at start (sessions then end when the process does).
    pub session_secret: SecretString,
    /// How long a sign-in lasts, in hours (it also ends when its key is revoked).
    pub session_hours: u64,
    /// Mark the session cookie `Secure` on every answer (it is already when the request
    /// came through a proxy that says `X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
}

/// The `[console]` start-up rules.
pub(crate) fn validate(c: &ConsoleSettings, problems: &mut Vec<Problem>) {
    let secret = c.session_secret.expose_secret();
    if !secret.is_empty() && secret.len() < MIN_SESSION_SECRET_BYTES {
        problems.push(Problem::new(
            "console.session_secret",
            format!(
                "must be empty or at least {MIN_SESSION_SECRET_BYTES} bytes (got {})",
                secret.len()
            ),
        ));
    }
    if !(1..=MAX_SESSION_HOURS).contains(&c.session_hours) {
        problems.push(Problem::new(
            "console.session_hours",
            format!(
                "must be between 1 and {MAX_SESSION_HOURS} (got {})",
                c.session_hours
            ),
        ));
    }
}
