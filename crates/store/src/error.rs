//! Errors a caller of [`crate::Store`] can act on.

/// Boxed cause kept for logs; never shown to API clients.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. an experiment key already exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An optimistic update found another version stored.
    #[error("version conflict: expected version {expected}, stored version is {actual}")]
    VersionConflict { expected: u64, actual: u64 },
    /// The thing to update does not exist.
    #[error("not found")]
    NotFound,
    /// A fenced write of a job run whose lease was granted to a newer holder since: the
    /// run must stop; nothing was written.
    #[error("lease of job {job} lost: fencing token {token} is no longer the newest")]
    Fenced { job: String, token: u64 },
    /// The backend cannot be reached or is overloaded; retrying later may succeed.
    /// Nothing was written.
    #[error("store unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else: a bug, corrupt data, an unexpected driver error.
    #[error("store failure: {context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    pub fn internal(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        StoreError::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn corrupt(context: impl Into<String>) -> Self {
        StoreError::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// True for errors worth retrying (the API answers 503 with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
