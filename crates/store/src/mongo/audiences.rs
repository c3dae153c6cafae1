//! [`AudienceStore`] on MongoDB: collection `audiences`, unique on (environment, key).

use async_trait::async_trait;
use mongodb::bson::doc;
use verdict_domain::Audience;

use super::{MongoStore, collect, db_err, encode, get_str};
use crate::Result;
use crate::audiences::AudienceStore;
use crate::error::StoreError;
use crate::model::{AudienceDeletion, Page, PageRequest};

#[async_trait]
impl AudienceStore for MongoStore {
    async fn create_audience(&self, audience: &Audience) -> Result<()> {
        self.insert_record(
            "audiences",
            doc! {
                "environment": &audience.environment,
                "key": &audience.key,
                "doc": encode(audience)?,
            },
            format!(
                "audience '{}' in environment '{}'",
                audience.key, audience.environment
            ),
        )
        .await
    }

    async fn get_audience(&self, environment: &str, key: &str) -> Result<Option<Audience>> {
        self.find_doc(
            "audiences",
            doc! {"environment": environment, "key": key},
            "reading an audience",
        )
        .await
    }

    async fn list_audiences(&self, environment: &str, page: PageRequest) -> Result<Page<Audience>> {
        self.page_of(
            "audiences",
            doc! {"environment": environment},
            page,
            "listing audiences",
        )
        .await
    }

    async fn update_audience(&self, audience: &Audience) -> Result<Audience> {
        let filter = doc! {"environment": &audience.environment, "key": &audience.key};
        let current: Audience = self
            .find_doc("audiences", filter.clone(), "reading an audience")
            .await?
            .ok_or(StoreError::NotFound)?;
        let next = Audience {
            created_at: current.created_at,
            ..audience.clone()
        };
        let res = self
            .coll("audiences")
            .update_one(filter, doc! {"$set": {"doc": encode(&next)?}})
            .await
            .map_err(db_err("updating an audience"))?;
        if res.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(next)
    }

    /// Check, then delete: not one atomic step on MongoDB without a transaction. An
    /// experiment activated between the check and the delete keeps running with a deleted
    /// audience (the window is one round trip).
    async fn delete_audience(&self, environment: &str, key: &str) -> Result<AudienceDeletion> {
        let users = collect(
            self.coll("experiments")
                .find(doc! {"environment": environment, "audience": key, "status": "running"})
                .sort(doc! {"key": 1})
                .projection(doc! {"key": 1})
                .await
                .map_err(db_err("checking an audience's use"))?,
            "checking an audience's use",
        )
        .await?;
        if !users.is_empty() {
            let keys = users
                .iter()
                .map(|d| get_str(d, "key", "`experiments`").map(str::to_owned))
                .collect::<Result<_>>()?;
            return Ok(AudienceDeletion::InUse(keys));
        }
        let res = self
            .coll("audiences")
            .delete_one(doc! {"environment": environment, "key": key})
            .await
            .map_err(db_err("deleting an audience"))?;
        Ok(if res.deleted_count == 1 {
            AudienceDeletion::Deleted
        } else {
            AudienceDeletion::NotFound
        })
    }
}
