//! Errors a caller of the store traits can act on.
//!
//! Each message says what the store was doing. A wrapped cause (a driver error, a decoding
//! error, a panic) is kept as the error's [`source`](std::error::Error::source), never
//! copied into the message: logs print the whole chain by walking `source()`, and API
//! answers, which show no store internals, cannot leak driver text by accident.

/// Boxed cause kept for logs; never shown to API clients.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. an experiment key already exists). An expected
    /// answer rather than a failure: its message is written for API clients and carries no
    /// driver cause.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An optimistic update found another version stored.
    #[error("version conflict: expected version {expected}, stored version is {actual}")]
    VersionConflict { expected: u64, actual: u64 },
    /// The thing to update does not exist.
    #[error("not found: the record to change does not exist")]
    NotFound,
    /// A fenced write of a job run whose lease was granted to a newer holder since: the
    /// run must stop; nothing was written.
    #[error("lease of job {job} lost: fencing token {token} is no longer the newest")]
    Fenced { job: String, token: u64 },
    /// The backend cannot be reached (network, busy database, election); retrying later
    /// may succeed. Nothing was written.
    #[error("store unavailable while {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// Too many writes are already waiting for the SQLite writer: this one was refused at
    /// once, before anything was written. Retrying later may succeed (the API answers 503
    /// with `Retry-After`).
    #[error(
        "store overloaded: {capacity} writes are already waiting for the SQLite writer; \
         this one was refused"
    )]
    Overloaded { capacity: usize },
    /// Anything else: a bug, corrupt data, an unexpected driver error.
    #[error("store failure while {context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    /// An unexpected failure while doing `context`, caused by `source`.
    pub fn internal(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        StoreError::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Stored data that cannot be what the store wrote (a missing or mistyped field), or a
    /// broken invariant, found while doing `context`.
    pub fn corrupt(context: impl Into<String>) -> Self {
        StoreError::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// The backend was unreachable while doing `context`, because of `source`.
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// True for errors worth retrying (the API answers 503 with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Overloaded { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_message_names_the_operation_and_the_cause_stays_a_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer reset");
        let e = StoreError::unavailable("reading experiment", io);
        assert_eq!(e.to_string(), "store unavailable while reading experiment");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("peer reset")
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn overloaded_is_retryable_and_internal_is_not() {
        assert!(StoreError::Overloaded { capacity: 4 }.is_retryable());
        assert!(!StoreError::corrupt("decoding stored experiment").is_retryable());
        assert!(!StoreError::NotFound.is_retryable());
    }
}
