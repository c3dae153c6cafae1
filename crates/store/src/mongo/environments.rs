//! [`EnvironmentStore`] on MongoDB: collection `environments` (`_id` = key, a creation
//! `order`, the JSON record).

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use verdict_domain::Environment;

use super::{MongoStore, encode};
use crate::Result;
use crate::environments::EnvironmentStore;
use crate::model::{Page, PageRequest};

#[async_trait]
impl EnvironmentStore for MongoStore {
    async fn create_environment(&self, environment: &Environment) -> Result<()> {
        self.insert_record(
            "environments",
            doc! {"_id": &environment.key, "doc": encode(environment)?},
            format!("environment '{}'", environment.key),
        )
        .await
    }

    async fn get_environment(&self, key: &str) -> Result<Option<Environment>> {
        self.find_doc("environments", doc! {"_id": key}, "reading an environment")
            .await
    }

    async fn list_environments(&self, page: PageRequest) -> Result<Page<Environment>> {
        self.page_of(
            "environments",
            Document::new(),
            page,
            "listing environments",
        )
        .await
    }
}
