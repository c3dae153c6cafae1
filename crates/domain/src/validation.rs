//! Validation results that list every problem, not only the first.

use serde::Serialize;

/// One bad field: where it is (a dotted path such as `variants[1].weight`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Every problem found in one input. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// True when some problem concerns `field` exactly.
    pub fn mentions(&self, field: &str) -> bool {
        self.0.iter().any(|p| p.field == field)
    }

    /// `Ok(value)` when nothing was found, otherwise every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.field, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Longest key accepted for experiments, variants, environments, organizations, audiences.
pub const MAX_KEY_LEN: usize = 128;

/// Keys are what people type into URLs and SDK calls, so they are restricted to a
/// URL-safe alphabet: ASCII letters, digits, `_`, `-`, `.`, starting with a letter or digit.
pub fn check_key(problems: &mut Problems, field: &str, key: &str) {
    if key.is_empty() {
        problems.push(field, "must not be empty");
        return;
    }
    if key.len() > MAX_KEY_LEN {
        problems.push(field, format!("must be at most {MAX_KEY_LEN} characters"));
        return;
    }
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !first_ok || !rest_ok {
        problems.push(
            field,
            "must start with a letter or digit and contain only letters, digits, '_', '-' or '.'",
        );
    }
}

/// True when `key` passes [`check_key`].
pub fn is_valid_key(key: &str) -> bool {
    let mut p = Problems::new();
    check_key(&mut p, "key", key);
    p.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_accept_url_safe_names_and_refuse_the_rest() {
        for ok in ["checkout", "new-button_v2", "a.b", "X1"] {
            assert!(is_valid_key(ok), "{ok}");
        }
        for bad in ["", "-lead", "has space", "ünï", "a/b", &"k".repeat(129)] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn problems_render_one_clause_per_field() {
        let mut p = Problems::new();
        p.push("a", "x");
        p.push("b", "y");
        assert_eq!(p.to_string(), "a: x; b: y");
        assert!(p.mentions("b"));
    }
}
