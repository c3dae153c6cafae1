//! [`AudienceStore`]: reusable targeting rules per environment.

use async_trait::async_trait;
use verdict_domain::Audience;

use crate::Result;
use crate::model::{AudienceDeletion, Page, PageRequest};

/// Audiences, keyed by (environment, key), listed in creation order.
#[async_trait]
pub trait AudienceStore: Send + Sync + std::fmt::Debug {
    /// [`crate::StoreError::Conflict`] when (environment, key) exists.
    async fn create_audience(&self, audience: &Audience) -> Result<()>;
    async fn get_audience(&self, environment: &str, key: &str) -> Result<Option<Audience>>;
    async fn list_audiences(&self, environment: &str, page: PageRequest) -> Result<Page<Audience>>;
    /// Replace an audience's name and rules. [`crate::StoreError::NotFound`] when absent.
    async fn update_audience(&self, audience: &Audience) -> Result<Audience>;
    /// Delete unless a running experiment uses it; the check and the delete are atomic
    /// (on SQLite; see the MongoDB adapter for its window).
    async fn delete_audience(&self, environment: &str, key: &str) -> Result<AudienceDeletion>;
}
