//! [`KeyStore`]: API keys (only their SHA-256 is stored).

use async_trait::async_trait;
use time::OffsetDateTime;
use verdict_domain::ApiKey;

use crate::Result;
use crate::model::{Page, PageRequest};

/// API keys, listed in creation order.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// [`crate::StoreError::Conflict`] when the id or the hash exists.
    async fn create_api_key(&self, key: &ApiKey) -> Result<()>;
    /// The key whose SHA-256 (hex) is `hash`, revoked or not.
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>>;
    /// Mark a key revoked (the first revocation's time is kept); `false` when there is no
    /// such key.
    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool>;
}
