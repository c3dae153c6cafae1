//! Errors a caller of [`crate::Cache`] can act on. Either way the answer is the same: read
//! the store instead. The two kinds differ in what an operator should look at.

/// Boxed cause kept for logs; never shown to API clients.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend did not answer in time, refused the connection, dropped it, or answered
    /// with an error. Retrying later may succeed; a write that failed this way may or may
    /// not have been applied.
    #[error("cache unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// A stored value (or a published message) could not be decoded.
    #[error("corrupt cache value at {key}")]
    Corrupt {
        key: String,
        #[source]
        source: Cause,
    },
}

impl CacheError {
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        CacheError::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn timed_out(context: impl Into<String>) -> Self {
        CacheError::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    pub fn corrupt(key: impl Into<String>, source: impl Into<Cause>) -> Self {
        CacheError::Corrupt {
            key: key.into(),
            source: source.into(),
        }
    }

    /// True when retrying later may succeed (the backend was unreachable or too slow).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CacheError::Unavailable { .. })
    }
}
