//! Standard Webhooks signatures: endpoint secrets (`whsec_<base64>`) and the three headers
//! every delivery carries.
//!
//! The signed content is `"{msg_id}.{timestamp}.{body}"`, HMAC-SHA256 with the decoded secret,
//! sent as `v1,<base64>`. During a secret rotation an endpoint holds two secrets and a
//! delivery carries one signature per secret, space-separated, so receivers verify with
//! either.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of an endpoint secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest key bytes a secret may hold (the Standard Webhooks minimum).
pub const MIN_SECRET_BYTES: usize = 24;
/// The most key bytes a secret may hold (the Standard Webhooks maximum).
pub const MAX_SECRET_BYTES: usize = 64;

/// Header carrying the message id, stable across retries so receivers can deduplicate.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the Unix time (seconds) of the attempt.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Why a text or byte string is not an endpoint secret. The messages never contain the
/// secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must start with `whsec_`")]
    MissingPrefix,
    #[error("a webhook secret must be `whsec_` followed by standard base64")]
    InvalidBase64,
    #[error("a webhook secret must hold 24 to 64 bytes, this one holds {len}")]
    InvalidLength { len: usize },
}

/// An endpoint's signing key. Its `Debug` output never shows the key; the only way to see
/// it is [`Secret::expose`], meant for the single time it is shown to the endpoint's owner
/// and for storage.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Parses `whsec_<standard base64>` holding 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        Self::from_key(key)
    }

    /// A secret holding `random_bytes` as its key. The caller draws them from a
    /// cryptographically secure generator (this crate never draws randomness itself, so that
    /// it stays pure); 24 to 64 bytes, 32 recommended.
    pub fn generate(random_bytes: &[u8]) -> Result<Self, SecretError> {
        Self::from_key(random_bytes.to_vec())
    }

    fn from_key(key: Vec<u8>) -> Result<Self, SecretError> {
        if (MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            Ok(Secret { key })
        } else {
            Err(SecretError::InvalidLength { len: key.len() })
        }
    }

    /// The text form, `whsec_<base64>`. Named so that every use stands out in review.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::parse(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_[redacted])")
    }
}

/// The signature of one message with one secret: `v1,<base64 HMAC-SHA256 of
/// "{msg_id}.{timestamp}.{body}">`.
///
/// `timestamp` is the Unix time in seconds *of the attempt*, not of the message's creation:
/// receivers reject timestamps more than a few minutes old, and a retry may come hours later.
/// `body` is signed exactly as given, so it must be the exact bytes sent.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.key)
        .expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` value: one [`sign`] per secret, in the given order,
/// space-separated. During a rotation pass both the new and the old secret. An empty
/// `secrets` gives an empty value, which no receiver accepts.
pub fn signature_header(secrets: &[&Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three Standard Webhooks headers of one attempt, as (name, value) pairs:
/// `webhook-id`, `webhook-timestamp`, `webhook-signature` (see [`signature_header`]).
pub fn headers(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (HEADER_ID, msg_id.to_owned()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (
            HEADER_SIGNATURE,
            signature_header(secrets, msg_id, timestamp, body),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use standardwebhooks::Webhook;

    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TIMESTAMP: i64 = 1_649_367_553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn secret(text: &str) -> Secret {
        Secret::parse(text).expect("valid secret")
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn header_map(pairs: [(&'static str, String); 3]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn signing_the_spec_test_vector_gives_the_spec_signature() {
        assert_eq!(
            sign(&secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn the_reference_implementation_verifies_a_message_we_signed() {
        let ts = now();
        let body =
            br#"{"type":"experiment.winner_changed","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let headers = header_map(headers(
            &[&secret(SPEC_SECRET)],
            "msg_abc_v3_winner",
            ts,
            body,
        ));
        Webhook::new(SPEC_SECRET)
            .expect("reference accepts the secret")
            .verify(body, &headers)
            .expect("reference verifies our signature");
    }

    #[test]
    fn during_rotation_each_secret_verifies_the_same_delivery() {
        let old = secret(SPEC_SECRET);
        let new = Secret::generate(&[7u8; 32]).expect("32 bytes");
        let ts = now();
        let pairs = headers(&[&new, &old], "msg_rot", ts, SPEC_BODY);
        let value = &pairs[2].1;
        let parts: Vec<&str> = value.split(' ').collect();
        assert_eq!(parts.len(), 2, "one signature per secret: {value}");
        assert_eq!(parts[0], sign(&new, "msg_rot", ts, SPEC_BODY));
        assert_eq!(parts[1], sign(&old, "msg_rot", ts, SPEC_BODY));

        let map = header_map(pairs);
        for s in [&new, &old] {
            Webhook::new(&s.expose())
                .expect("reference accepts the secret")
                .verify(SPEC_BODY, &map)
                .expect("each secret verifies the rotation header");
        }
        let stranger = Secret::generate(&[9u8; 32]).expect("32 bytes");
        assert!(
            Webhook::new(&stranger.expose())
                .expect("reference accepts the secret")
                .verify(SPEC_BODY, &map)
                .is_err(),
            "a third secret must not verify"
        );
    }

    #[test]
    fn a_tampered_body_fails_reference_verification() {
        let ts = now();
        let map = header_map(headers(&[&secret(SPEC_SECRET)], SPEC_ID, ts, SPEC_BODY));
        let tampered = br#"{"email":"evil@example.com","username":"test_user"}"#;
        let wh = Webhook::new(SPEC_SECRET).expect("reference accepts the secret");
        wh.verify(SPEC_BODY, &map).expect("the original verifies");
        assert!(wh.verify(tampered, &map).is_err());
    }

    #[test]
    fn headers_are_id_timestamp_and_signature_in_that_order() {
        let s = secret(SPEC_SECRET);
        let pairs = headers(&[&s], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(pairs[0], ("webhook-id", SPEC_ID.to_owned()));
        assert_eq!(pairs[1], ("webhook-timestamp", "1649367553".to_owned()));
        assert_eq!(
            pairs[2],
            (
                "webhook-signature",
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=".to_owned()
            )
        );
    }

    #[test]
    fn a_signature_header_without_secrets_is_empty() {
        assert_eq!(
            signature_header(&[], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            ""
        );
    }

    #[test]
    fn a_generated_secret_round_trips_through_its_text_form() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let generated = Secret::generate(&bytes).expect("32 bytes");
        let text = generated.expose();
        assert!(text.starts_with("whsec_"));
        let parsed: Secret = text.parse().expect("round trip");
        assert_eq!(parsed.expose(), text);
        assert_eq!(
            sign(&parsed, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            sign(&generated, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
        );
    }

    #[test]
    fn secrets_must_hold_24_to_64_bytes() {
        assert!(Secret::generate(&[1; 24]).is_ok());
        assert!(Secret::generate(&[1; 64]).is_ok());
        assert_eq!(
            Secret::generate(&[1; 23]).unwrap_err(),
            SecretError::InvalidLength { len: 23 }
        );
        assert_eq!(
            Secret::generate(&[1; 65]).unwrap_err(),
            SecretError::InvalidLength { len: 65 }
        );
        let short = format!("whsec_{}", STANDARD.encode([1u8; 16]));
        assert_eq!(
            Secret::parse(&short).unwrap_err(),
            SecretError::InvalidLength { len: 16 }
        );
    }

    #[test]
    fn malformed_secret_text_is_rejected_with_a_clear_error() {
        assert_eq!(
            Secret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            Secret::parse("whsec_not base64!").unwrap_err(),
            SecretError::InvalidBase64
        );
        assert_eq!(Secret::parse("").unwrap_err(), SecretError::MissingPrefix);
        let message = Secret::parse("whsec_not base64!").unwrap_err().to_string();
        assert!(message.contains("whsec_"), "{message}");
        assert!(!message.contains("not base64!"), "{message}");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let s = secret(SPEC_SECRET);
        let debug = format!("{s:?}");
        assert!(!debug.contains("C2FVsBQIhrscChlQIMV"), "{debug}");
        assert!(!debug.contains(&s.expose()), "{debug}");
        assert_eq!(debug, "Secret(whsec_[redacted])");
    }
}
