//! Which key may verify a token, and with which algorithm (pure).
//!
//! The header's `alg` is only a claim by whoever made the token: it selects a key source
//! (HS256 the secret, everything else the key set) and must then be one of the algorithms
//! that *key* allows. So `alg: none` is never accepted, and an HS256 token cannot be checked
//! against an RSA public key used as an HMAC secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::Value;

use crate::error::{JwtError, JwtErrorCode};

/// `true` for three dot-separated base64url segments, the first two non-empty (an unsigned
/// token has an empty third one: it is a JWT, to be refused as such). API keys (`vk_...`)
/// have no dots.
pub fn looks_like_jwt(token: &str) -> bool {
    // Checked on every request's credential: no allocation (an API key has no dot).
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut segments = token.split('.');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(header), Some(payload), Some(signature), None) => {
            !header.is_empty()
                && !payload.is_empty()
                && base64url(header)
                && base64url(payload)
                && base64url(signature)
        }
        _ => false,
    }
}

/// The parts of a token's header that choose its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

/// Reads the (unverified) header of a token that [`looks_like_jwt`].
pub(crate) fn parse_header(token: &str) -> Result<Header, JwtError> {
    let malformed = |why: &str| JwtError::new(JwtErrorCode::Malformed, why.to_owned());
    let encoded = token
        .split('.')
        .next()
        .ok_or_else(|| malformed("not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed("the header is not base64url"))?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|_| malformed("the header is not JSON"))?;
    let Value::Object(header) = header else {
        return Err(malformed("the header is not a JSON object"));
    };
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => return Err(malformed("the header's `alg` is not a string")),
        None => return Err(malformed("the header has no `alg`")),
    };
    let kid = match header.get("kid") {
        Some(Value::String(kid)) => Some(kid.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(malformed("the header's `kid` is not a string")),
    };
    Ok(Header { alg, kid })
}

/// Where the key for a token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// HS256 with the configured secret.
    Secret,
    /// A key from the key set that allows this algorithm.
    KeySet(Algorithm),
}

/// Chooses the key source for the header's `alg`, given what is configured.
pub(crate) fn route(alg: &str, has_secret: bool, has_key_set: bool) -> Result<Route, JwtError> {
    let refuse = |message: String| JwtError::new(JwtErrorCode::AlgorithmNotAllowed, message);
    if alg.eq_ignore_ascii_case("none") {
        return Err(refuse("unsigned tokens (alg none) are refused".to_owned()));
    }
    let algorithm: Algorithm = alg
        .parse()
        .map_err(|_| refuse(format!("algorithm `{alg}` is not supported")))?;
    match algorithm {
        Algorithm::HS256 if has_secret => Ok(Route::Secret),
        Algorithm::HS256 => Err(refuse(
            "HS256 tokens are refused: no shared secret is configured".to_owned(),
        )),
        Algorithm::HS384 | Algorithm::HS512 => Err(refuse(format!(
            "{alg} tokens are refused: only HS256 is accepted with the shared secret"
        ))),
        asymmetric if has_key_set => Ok(Route::KeySet(asymmetric)),
        _ => Err(refuse(format!(
            "{alg} tokens are refused: no key set (JWKS) is configured"
        ))),
    }
}

/// The algorithms a key from a key set verifies: its own `alg` if it has one (which must fit
/// its type), else every algorithm of its type. Keys that cannot verify signatures here
/// (encryption keys, symmetric keys, unsupported curves) are refused with the reason.
pub(crate) fn jwk_algorithms(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("not a signing key (use is not \"sig\")".to_owned());
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported elliptic curve".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("unsupported OKP curve (only Ed25519)".to_owned()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric key (HS256 verifies only with the shared secret)".to_owned());
        }
        _ => return Err("unsupported key type".to_owned()),
    };
    match jwk.common.key_algorithm {
        None => Ok(by_type),
        Some(declared) => {
            let declared = Algorithm::try_from(declared)
                .map_err(|_| format!("unsupported algorithm {declared}"))?;
            if by_type.contains(&declared) {
                Ok(vec![declared])
            } else {
                Err(format!("algorithm {declared:?} does not fit the key type"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).expect("a JWK")
    }

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn jwt_shapes_are_recognised_and_api_keys_are_not() {
        assert!(looks_like_jwt(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"
        ));
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));
        for not_jwt in [
            "vk_0123456789abcdef0123456789abcdef0123456789abcdef",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a.b+/.c",
            "a.b.c=",
            "",
        ] {
            assert!(!looks_like_jwt(not_jwt), "{not_jwt}");
        }
    }

    #[test]
    fn headers_give_alg_and_kid_and_bad_ones_are_malformed() {
        let encode = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!("{}.e30.", encode(json!({"alg": "RS256", "kid": "k1"})));
        assert_eq!(
            parse_header(&token).expect("parses"),
            Header {
                alg: "RS256".into(),
                kid: Some("k1".into())
            }
        );
        for bad in [
            "%%%.e30.".to_owned(),
            format!("{}.e30.", URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.e30.", encode(json!(["alg"]))),
            format!("{}.e30.", encode(json!({"typ": "JWT"}))),
            format!("{}.e30.", encode(json!({"alg": 1}))),
            format!("{}.e30.", encode(json!({"alg": "RS256", "kid": 7}))),
        ] {
            let err = parse_header(&bad).expect_err("malformed");
            assert_eq!(err.code, JwtErrorCode::Malformed, "{bad}");
        }
    }

    #[test]
    fn hs256_goes_to_the_secret_and_everything_else_to_the_key_set() {
        assert_eq!(route("HS256", true, true), Ok(Route::Secret));
        assert_eq!(
            route("RS256", true, true),
            Ok(Route::KeySet(Algorithm::RS256))
        );
        assert_eq!(
            route("ES256", false, true),
            Ok(Route::KeySet(Algorithm::ES256))
        );
        assert_eq!(
            route("EdDSA", false, true),
            Ok(Route::KeySet(Algorithm::EdDSA))
        );
    }

    #[test]
    fn algorithms_without_their_kind_of_key_are_refused() {
        for (alg, secret, key_set) in [
            ("none", true, true),
            ("NONE", true, true),
            ("HS256", false, true),
            ("HS384", true, true),
            ("HS512", true, true),
            ("RS256", true, false),
            ("EdDSA", true, false),
            ("XS999", true, true),
        ] {
            let err = route(alg, secret, key_set).expect_err(alg);
            assert_eq!(err.code, JwtErrorCode::AlgorithmNotAllowed, "{alg}");
        }
    }

    #[test]
    fn a_key_allows_the_algorithms_of_its_type_or_only_its_declared_one() {
        let rsa = jwk(json!({"kty": "RSA", "n": RSA_N, "e": "AQAB"}));
        assert!(
            jwk_algorithms(&rsa)
                .expect("rsa")
                .contains(&Algorithm::PS256)
        );
        let rsa_rs256 = jwk(json!({"kty": "RSA", "alg": "RS256", "n": RSA_N, "e": "AQAB"}));
        assert_eq!(jwk_algorithms(&rsa_rs256), Ok(vec![Algorithm::RS256]));
        let ec = jwk(json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}));
        assert_eq!(jwk_algorithms(&ec), Ok(vec![Algorithm::ES256]));
        let ed = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}));
        assert_eq!(jwk_algorithms(&ed), Ok(vec![Algorithm::EdDSA]));
    }

    #[test]
    fn keys_that_cannot_sign_here_are_refused_with_the_reason() {
        for (key, reason) in [
            (json!({"kty": "oct", "k": "c2VjcmV0"}), "symmetric"),
            (
                json!({"kty": "RSA", "use": "enc", "n": RSA_N, "e": "AQAB"}),
                "not a signing key",
            ),
            (
                json!({"kty": "RSA", "alg": "ES256", "n": RSA_N, "e": "AQAB"}),
                "does not fit",
            ),
            (
                json!({"kty": "RSA", "alg": "HS256", "n": RSA_N, "e": "AQAB"}),
                "does not fit",
            ),
            (
                json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
                "curve",
            ),
        ] {
            let err = jwk_algorithms(&jwk(key.clone())).expect_err("refused");
            assert!(err.contains(reason), "{key}: {err}");
        }
    }
}
