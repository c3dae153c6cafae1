//! Why a token was refused: a stable code (for the API's error body) and a reason.

use std::fmt;

/// A refused token: [`JwtErrorCode`] says which rule it broke, `message` says how.
///
/// Messages name claims, key ids and algorithms, never the token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JwtError {
    pub code: JwtErrorCode,
    pub message: String,
}

impl JwtError {
    pub fn new(code: JwtErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The rule a token broke. Every code but [`JwtErrorCode::KeysUnavailable`] is the caller's
/// fault (401); that one means the keys to check the token could not be had (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtErrorCode {
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// The signature does not verify with the key.
    BadSignature,
    /// `iss` is not the configured issuer (or is missing).
    WrongIssuer,
    /// `aud` does not contain the configured audience (or is missing).
    WrongAudience,
    /// The header's `alg` is not one the verifying key allows (`none` never is).
    AlgorithmNotAllowed,
    /// The key set (fetched successfully) has no key with the token's `kid`.
    UnknownKey,
    /// Not a well-formed JWT: bad base64, bad JSON, a claim of the wrong type.
    Malformed,
    /// A required claim (`exp`, the subject, ...) is absent.
    MissingClaim,
    /// The key set could not be fetched and no cached key fits the token.
    KeysUnavailable,
}

impl JwtErrorCode {
    /// The stable code for error bodies, e.g. `token_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::BadSignature => "token_bad_signature",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::WrongAudience => "token_wrong_audience",
            Self::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            Self::UnknownKey => "token_unknown_key",
            Self::Malformed => "token_malformed",
            Self::MissingClaim => "token_missing_claim",
            Self::KeysUnavailable => "token_keys_unavailable",
        }
    }

    /// `true` when the token could not be checked for want of keys (a 503, worth a retry);
    /// every other code is a refusal of the token itself (a 401).
    pub fn is_unavailable(self) -> bool {
        matches!(self, Self::KeysUnavailable)
    }
}

impl fmt::Display for JwtErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `jsonwebtoken` error as ours. Signature checks run before claim checks, so a forged
/// token is reported as a bad signature whatever its claims say.
pub(crate) fn from_library(err: &jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind as K;
    let (code, message) = match err.kind() {
        K::ExpiredSignature => (
            JwtErrorCode::Expired,
            "the token has expired (exp)".to_owned(),
        ),
        K::ImmatureSignature => (
            JwtErrorCode::NotYetValid,
            "the token is not valid yet (nbf)".to_owned(),
        ),
        K::InvalidSignature => (
            JwtErrorCode::BadSignature,
            "the signature does not verify".to_owned(),
        ),
        K::InvalidIssuer => (
            JwtErrorCode::WrongIssuer,
            "the issuer (iss) is not the expected one".to_owned(),
        ),
        K::InvalidAudience => (
            JwtErrorCode::WrongAudience,
            "the audience (aud) does not include the expected one".to_owned(),
        ),
        K::InvalidAlgorithm | K::MissingAlgorithm | K::UnsupportedAlgorithm => (
            JwtErrorCode::AlgorithmNotAllowed,
            "the algorithm does not fit the key".to_owned(),
        ),
        K::MissingRequiredClaim(claim) => (
            JwtErrorCode::MissingClaim,
            format!("the token has no `{claim}` claim"),
        ),
        K::InvalidClaimFormat(claim) => (
            JwtErrorCode::Malformed,
            format!("the `{claim}` claim has the wrong type"),
        ),
        // A signature of the wrong length or encoding for the key does not verify either.
        K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => (
            JwtErrorCode::BadSignature,
            format!("the signature does not verify ({err})"),
        ),
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => (
            JwtErrorCode::Malformed,
            format!("not a well-formed JWT ({err})"),
        ),
        _ => (
            JwtErrorCode::BadSignature,
            format!("the token could not be verified ({err})"),
        ),
    };
    JwtError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_keys_are_an_unavailability() {
        let all = [
            JwtErrorCode::Expired,
            JwtErrorCode::NotYetValid,
            JwtErrorCode::BadSignature,
            JwtErrorCode::WrongIssuer,
            JwtErrorCode::WrongAudience,
            JwtErrorCode::AlgorithmNotAllowed,
            JwtErrorCode::UnknownKey,
            JwtErrorCode::Malformed,
            JwtErrorCode::MissingClaim,
            JwtErrorCode::KeysUnavailable,
        ];
        let unavailable: Vec<_> = all.iter().filter(|c| c.is_unavailable()).collect();
        assert_eq!(unavailable, [&JwtErrorCode::KeysUnavailable]);
        let codes: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes.len(), all.len(), "codes are distinct");
        assert!(codes.iter().all(|c| c.starts_with("token_")));
    }
}
