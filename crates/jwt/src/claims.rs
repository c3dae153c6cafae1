//! Reading the caller's identity out of a verified token's claims (pure).

use serde_json::{Map, Value};
use verdict_config::JwtClaimNames;

use crate::error::{JwtError, JwtErrorCode};

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The caller's identity (the `claims.subject` claim; never empty).
    pub subject: String,
    /// The caller's organization (`claims.organization`), if the token names one.
    pub organization: Option<String>,
    /// Environments the caller may act in (`claims.environments`); empty if absent.
    pub environments: Vec<String>,
    /// The caller's roles (`claims.roles`); empty if absent.
    pub roles: Vec<String>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: Option<i64>,
}

/// Maps a token's claims (a JSON object) to [`TokenClaims`] with the configured names.
pub(crate) fn map_claims(claims: &Value, names: &JwtClaimNames) -> Result<TokenClaims, JwtError> {
    let Value::Object(claims) = claims else {
        return Err(JwtError::new(
            JwtErrorCode::Malformed,
            "the token's payload is not a JSON object",
        ));
    };
    let subject = match lookup(claims, &names.subject) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        // Some issuers put a numeric user id in the subject claim.
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(JwtError::new(
                JwtErrorCode::MissingClaim,
                format!("the token has no subject (claim `{}`)", names.subject),
            ));
        }
        Some(_) => return Err(wrong_type(&names.subject, "a string")),
    };
    let organization = match lookup(claims, &names.organization) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(wrong_type(&names.organization, "a string")),
    };
    let environments = string_or_list(claims, &names.environments)?;
    let roles = string_or_list(claims, &names.roles)?;
    let expires_at = claims.get("exp").and_then(Value::as_i64);
    Ok(TokenClaims {
        subject,
        organization,
        environments,
        roles,
        expires_at,
    })
}

/// The claim `name`: a top-level claim of exactly that name, else the dotted path through
/// nested objects (`realm_access.roles`). Names such as `https://example.com/roles` (dots
/// in a namespaced claim) are found by the first rule.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim that may be one string or an array of strings; absent is empty.
fn string_or_list(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, JwtError> {
    match lookup(claims, name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(wrong_type(name, "a string or an array of strings")),
            })
            .collect(),
        Some(_) => Err(wrong_type(name, "a string or an array of strings")),
    }
}

fn wrong_type(name: &str, expected: &str) -> JwtError {
    JwtError::new(
        JwtErrorCode::Malformed,
        format!("claim `{name}` must be {expected}"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(subject: &str, organization: &str, environments: &str, roles: &str) -> JwtClaimNames {
        JwtClaimNames {
            subject: subject.into(),
            organization: organization.into(),
            environments: environments.into(),
            roles: roles.into(),
        }
    }

    fn defaults() -> JwtClaimNames {
        names("sub", "org", "env", "roles")
    }

    #[test]
    fn default_names_read_sub_org_env_and_roles() {
        let claims = json!({
            "sub": "user-1", "org": "acme", "env": ["staging", "production"],
            "roles": ["editor"], "exp": 1_900_000_000
        });
        let mapped = map_claims(&claims, &defaults()).expect("maps");
        assert_eq!(
            mapped,
            TokenClaims {
                subject: "user-1".into(),
                organization: Some("acme".into()),
                environments: vec!["staging".into(), "production".into()],
                roles: vec!["editor".into()],
                expires_at: Some(1_900_000_000),
            }
        );
    }

    #[test]
    fn a_single_string_is_a_list_of_one_and_absent_lists_are_empty() {
        let mapped =
            map_claims(&json!({"sub": "u", "env": "production"}), &defaults()).expect("maps");
        assert_eq!(mapped.environments, ["production"]);
        assert!(mapped.roles.is_empty());
        assert_eq!(mapped.organization, None);
        assert_eq!(mapped.expires_at, None);
    }

    #[test]
    fn dotted_names_walk_nested_objects() {
        let claims = json!({
            "preferred_username": "ada",
            "realm_access": {"roles": ["admin", "viewer"]},
            "tenant": {"id": "org-9"},
        });
        let mapped = map_claims(
            &claims,
            &names(
                "preferred_username",
                "tenant.id",
                "env",
                "realm_access.roles",
            ),
        )
        .expect("maps");
        assert_eq!(mapped.subject, "ada");
        assert_eq!(mapped.organization.as_deref(), Some("org-9"));
        assert_eq!(mapped.roles, ["admin", "viewer"]);
    }

    #[test]
    fn a_claim_whose_name_has_dots_is_found_as_is_before_the_path() {
        let claims = json!({
            "sub": "u",
            "https://verdict.example/roles": ["owner"],
            "https://verdict": {"example/roles": ["not this"]},
        });
        let mapped = map_claims(
            &claims,
            &names("sub", "org", "env", "https://verdict.example/roles"),
        )
        .expect("maps");
        assert_eq!(mapped.roles, ["owner"]);
    }

    #[test]
    fn a_missing_or_empty_subject_is_a_missing_claim() {
        for claims in [
            json!({"roles": ["x"]}),
            json!({"sub": ""}),
            json!({"sub": null}),
        ] {
            let err = map_claims(&claims, &defaults()).expect_err("no subject");
            assert_eq!(err.code, JwtErrorCode::MissingClaim, "{claims}");
            assert!(err.message.contains("`sub`"), "{}", err.message);
        }
        let err = map_claims(
            &json!({"sub": "u"}),
            &names("user.id", "org", "env", "roles"),
        )
        .expect_err("path absent");
        assert_eq!(err.code, JwtErrorCode::MissingClaim);
    }

    #[test]
    fn a_numeric_subject_is_read_as_text() {
        let mapped = map_claims(&json!({"sub": 42}), &defaults()).expect("maps");
        assert_eq!(mapped.subject, "42");
    }

    #[test]
    fn claims_of_the_wrong_type_are_malformed_naming_the_claim() {
        for (claims, claim) in [
            (json!({"sub": "u", "roles": [1, 2]}), "roles"),
            (json!({"sub": "u", "env": {"a": 1}}), "env"),
            (json!({"sub": "u", "org": ["a"]}), "org"),
            (json!({"sub": {"id": 1}}), "sub"),
        ] {
            let err = map_claims(&claims, &defaults()).expect_err("wrong type");
            assert_eq!(err.code, JwtErrorCode::Malformed, "{claims}");
            assert!(
                err.message.contains(&format!("`{claim}`")),
                "{}",
                err.message
            );
        }
        let err = map_claims(&json!(["sub"]), &defaults()).expect_err("not an object");
        assert_eq!(err.code, JwtErrorCode::Malformed);
    }
}
