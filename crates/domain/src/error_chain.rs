//! An error and its causes on one line, for run records, logs and attempt logs.

use std::fmt;

/// Displays an error followed by each of its causes (`source()`), `": "`-separated, skipping
/// a cause whose text the message already contains (many errors repeat their source).
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let part = s.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `error: cause: cause …` as a string.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    ErrorChain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("rolling up buckets")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("database is locked")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("store failure: database is locked")]
    struct Repeats(#[source] Inner);

    #[test]
    fn every_cause_is_named_once() {
        assert_eq!(
            error_chain(&Outer(Inner)),
            "rolling up buckets: database is locked"
        );
        assert_eq!(
            error_chain(&Repeats(Inner)),
            "store failure: database is locked"
        );
    }
}
