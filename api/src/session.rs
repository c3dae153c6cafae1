//! Console sign-ins: a cookie that names the API key (by its SHA-256, never the key itself)
//! or carries the JWT bearer token signed in with, and when the sign-in ends, signed with
//! HMAC-SHA256 under the session secret; and the CSRF token each form carries, derived from
//! the same secret and the session.
//!
//! Nothing is kept on the server: any replica with the same secret accepts the cookie, a
//! restart keeps it, and each request authenticates the key or token again (as an API call
//! with it would), so revoking the key ends the sign-in within the key cache's few seconds,
//! and a token's sign-in ends when the token expires.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use verdict_config::ConsoleSettings;
use verdict_config::ExposeSecret;

/// The session cookie's name.
pub const COOKIE: &str = "verdict_session";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Version tag of the cookie's format for an API key's session.
const FORMAT: &str = "v1";
/// Version tag of the cookie's format for a token's session.
const TOKEN_FORMAT: &str = "t1";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    secret: [u8; 32],
    lifetime: time::Duration,
    /// `Secure` on every cookie.
    always_secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// What a session signs in with.
#[derive(Clone, PartialEq, Eq)]
pub enum Signer {
    /// An API key, by the SHA-256 of its plaintext.
    Key([u8; 32]),
    /// A JWT bearer token, verified again on each request (so it ends when the token
    /// expires, whatever the session's own end).
    Token(String),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(digest) => write!(f, "Key({})", hex::encode(digest)),
            Self::Token(_) => f.write_str("Token(…)"),
        }
    }
}

/// The longest token a session cookie carries (browsers keep cookies up to about 4 KB).
pub const MAX_TOKEN_LEN: usize = 3_500;

/// A valid session: who signed in and when the sign-in ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub signer: Signer,
    pub expires_at: i64,
    /// The cookie's value, which the CSRF token is bound to.
    value: String,
}

impl Sessions {
    /// The secret: `console.session_secret`; else derived from the bootstrap admin key (so
    /// replicas sharing the configuration agree); else random for this process.
    pub fn new(settings: &ConsoleSettings, bootstrap_admin_key: &str) -> Self {
        let configured = settings.session_secret.expose_secret();
        let secret: [u8; 32] = if !configured.is_empty() {
            Sha256::digest(configured.as_bytes()).into()
        } else if !bootstrap_admin_key.is_empty() {
            let mut mac = HmacSha256::new_from_slice(bootstrap_admin_key.as_bytes())
                .expect("HMAC takes a key of any length");
            mac.update(b"verdict console session secret");
            mac.finalize().into_bytes().into()
        } else {
            tracing::warn!(
                "console.session_secret and auth.bootstrap_admin_key are empty: console \
                 sign-ins end when this process does and other replicas do not accept them"
            );
            let mut random = [0u8; 32];
            rand::rng().fill_bytes(&mut random);
            random
        };
        let hours = i64::try_from(settings.session_hours).unwrap_or(1);
        Self {
            secret,
            lifetime: time::Duration::hours(hours),
            always_secure: settings.secure_cookie,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(part);
            mac.update(b"|");
        }
        mac
    }

    /// A new session for `signer`, from `now`. Cookie values: `v1.<hex digest>.<end>.<tag>`
    /// for a key, `t1.<end>.<token>.<tag>` for a token (a JWT's own dots stay inside).
    pub fn issue(&self, signer: Signer, now: OffsetDateTime) -> Session {
        self.issue_ending(signer, now, None)
    }

    /// [`Sessions::issue`], ending at `not_after` (Unix seconds) if that is sooner: a token's
    /// sign-in ends when the token expires.
    pub fn issue_ending(
        &self,
        signer: Signer,
        now: OffsetDateTime,
        not_after: Option<i64>,
    ) -> Session {
        let lifetime_end = (now + self.lifetime).unix_timestamp();
        let expires_at = not_after.map_or(lifetime_end, |end| end.min(lifetime_end));
        let payload = match &signer {
            Signer::Key(digest) => format!("{FORMAT}.{}.{expires_at}", hex::encode(digest)),
            Signer::Token(token) => format!("{TOKEN_FORMAT}.{expires_at}.{token}"),
        };
        let tag = self.mac(&[b"session", payload.as_bytes()]).finalize();
        Session {
            signer,
            expires_at,
            value: format!("{payload}.{}", hex::encode(tag.into_bytes())),
        }
    }

    /// The session a cookie value holds, if its signature checks and it has not ended.
    pub fn check(&self, value: &str, now: OffsetDateTime) -> Option<Session> {
        let (payload, tag) = value.rsplit_once('.')?;
        let tag = hex::decode(tag).ok()?;
        self.mac(&[b"session", payload.as_bytes()])
            .verify_slice(&tag)
            .ok()?;
        let (signer, expires_at) = match payload.split_once('.')? {
            (FORMAT, rest) => {
                let (digest, expires_at) = rest.split_once('.')?;
                let digest: [u8; 32] = hex::decode(digest).ok()?.try_into().ok()?;
                (Signer::Key(digest), expires_at)
            }
            (TOKEN_FORMAT, rest) => {
                let (expires_at, token) = rest.split_once('.')?;
                (Signer::Token(token.to_owned()), expires_at)
            }
            _ => return None,
        };
        let expires_at: i64 = expires_at.parse().ok()?;
        (now.unix_timestamp() < expires_at).then(|| Session {
            signer,
            expires_at,
            value: value.to_owned(),
        })
    }

    /// The CSRF token of `session`'s forms.
    pub fn csrf(&self, session: &Session) -> String {
        hex::encode(
            self.mac(&[b"csrf", session.value.as_bytes()])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `token` is `session`'s CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: &Session, token: &str) -> bool {
        hex::decode(token).is_ok_and(|tag| {
            self.mac(&[b"csrf", session.value.as_bytes()])
                .verify_slice(&tag)
                .is_ok()
        })
    }

    /// The `Set-Cookie` value that stores `session` (`secure`: the request came over TLS).
    pub fn cookie(&self, session: &Session, secure: bool, now: OffsetDateTime) -> String {
        let max_age = (session.expires_at - now.unix_timestamp()).max(0);
        format!(
            "{COOKIE}={}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            session.value,
            self.secure_attribute(secure)
        )
    }

    /// The `Set-Cookie` value that ends the session in the browser.
    pub fn removal(&self, secure: bool) -> String {
        format!(
            "{COOKIE}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict{}",
            self.secure_attribute(secure)
        )
    }

    fn secure_attribute(&self, secure: bool) -> &'static str {
        if secure || self.always_secure {
            "; Secure"
        } else {
            ""
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sessions(secret: &str) -> Sessions {
        Sessions::new(
            &ConsoleSettings {
                session_secret: secret.to_owned().into(),
                session_hours: 12,
                secure_cookie: false,
            },
            "",
        )
    }

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    #[test]
    fn a_session_checks_until_it_ends_and_only_under_its_secret() {
        let s = sessions("a secret of at least thirty-two bytes!!");
        let issued = s.issue(Signer::Key([7; 32]), NOW);
        let checked = s.check(&issued.value, NOW + time::Duration::hours(11));
        assert_eq!(checked.map(|c| c.signer), Some(Signer::Key([7; 32])));
        assert_eq!(
            s.check(&issued.value, NOW + time::Duration::hours(12)),
            None
        );
        let other = sessions("another secret of at least thirty-two bytes");
        assert_eq!(other.check(&issued.value, NOW), None);
    }

    #[test]
    fn a_token_session_carries_its_token() {
        let s = sessions("a secret of at least thirty-two bytes!!");
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlcmluIn0.c2lnbmF0dXJl".to_owned();
        let issued = s.issue(Signer::Token(token.clone()), NOW);
        let checked = s.check(&issued.value, NOW).expect("a valid session");
        assert_eq!(checked.signer, Signer::Token(token.clone()));
        // A token expiring within the session's lifetime ends it.
        let end = (NOW + time::Duration::minutes(10)).unix_timestamp();
        let short = s.issue_ending(Signer::Token(token.clone()), NOW, Some(end));
        assert_eq!(short.expires_at, end);
        assert!(
            s.check(&short.value, NOW + time::Duration::minutes(9))
                .is_some()
        );
        assert_eq!(
            s.check(&short.value, NOW + time::Duration::minutes(10)),
            None
        );
        let late = (NOW + time::Duration::days(30)).unix_timestamp();
        let capped = s.issue_ending(Signer::Token(token.clone()), NOW, Some(late));
        assert_eq!(capped.expires_at, issued.expires_at);
        let edited = issued.value.replacen("c2lnbmF0dXJl", "c2lnbmF0dXJm", 1);
        assert_ne!(edited, issued.value);
        assert_eq!(s.check(&edited, NOW), None);
        assert_eq!(
            s.check(&issued.value, NOW + time::Duration::hours(12)),
            None
        );
    }

    #[test]
    fn an_edited_cookie_is_refused() {
        let s = sessions("a secret of at least thirty-two bytes!!");
        let issued = s.issue(Signer::Key([7; 32]), NOW);
        // A later end, or another key, with the old signature.
        let later = issued.value.replacen(
            &issued.expires_at.to_string(),
            &(issued.expires_at + 3_600).to_string(),
            1,
        );
        let other_key = issued
            .value
            .replacen(&hex::encode([7u8; 32]), &hex::encode([8u8; 32]), 1);
        for forged in [
            later,
            other_key,
            format!("{}x", issued.value),
            String::new(),
        ] {
            assert_eq!(s.check(&forged, NOW), None, "{forged}");
        }
    }

    #[test]
    fn a_csrf_token_belongs_to_its_session() {
        let s = sessions("a secret of at least thirty-two bytes!!");
        let one = s.issue(Signer::Key([1; 32]), NOW);
        let two = s.issue(Signer::Key([2; 32]), NOW);
        let token = s.csrf(&one);
        assert!(s.csrf_matches(&one, &token));
        assert!(!s.csrf_matches(&two, &token));
        assert!(!s.csrf_matches(&one, "00"));
        assert!(!s.csrf_matches(&one, "not hex"));
    }

    #[test]
    fn replicas_sharing_the_bootstrap_key_agree_without_a_configured_secret() {
        let settings = ConsoleSettings {
            session_secret: String::new().into(),
            session_hours: 1,
            secure_cookie: false,
        };
        let a = Sessions::new(&settings, "vk_bootstrap");
        let b = Sessions::new(&settings, "vk_bootstrap");
        let c = Sessions::new(&settings, "vk_other");
        let issued = a.issue(Signer::Key([3; 32]), NOW);
        assert!(b.check(&issued.value, NOW).is_some());
        assert!(c.check(&issued.value, NOW).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_tls() {
        let s = sessions("a secret of at least thirty-two bytes!!");
        let issued = s.issue(Signer::Key([1; 32]), NOW);
        let plain = s.cookie(&issued, false, NOW);
        assert!(plain.contains("HttpOnly; SameSite=Strict"), "{plain}");
        assert!(plain.contains("Max-Age=43200"), "{plain}");
        assert!(!plain.contains("Secure"), "{plain}");
        assert!(s.cookie(&issued, true, NOW).ends_with("; Secure"));
    }
}
