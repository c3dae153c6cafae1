//! [`EnvironmentStore`]: the environments experiments and keys live in.

use async_trait::async_trait;
use verdict_domain::Environment;

use crate::Result;
use crate::model::{Page, PageRequest};

/// Environments (`production`, `staging`, …), listed in creation order.
#[async_trait]
pub trait EnvironmentStore: Send + Sync + std::fmt::Debug {
    /// [`crate::StoreError::Conflict`] when the key exists.
    async fn create_environment(&self, environment: &Environment) -> Result<()>;
    async fn get_environment(&self, key: &str) -> Result<Option<Environment>>;
    async fn list_environments(&self, page: PageRequest) -> Result<Page<Environment>>;
}
