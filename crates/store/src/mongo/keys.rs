//! [`KeyStore`] on MongoDB: collection `api_keys` (`_id` = key id, unique `hash`, the JSON
//! record without the hash, a `revoked` flag so that only the first revocation stamps).

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use time::OffsetDateTime;
use verdict_domain::ApiKey;

use super::{MongoStore, db_err, encode};
use crate::Result;
use crate::keys::KeyStore;
use crate::model::{Page, PageRequest};

#[async_trait]
impl KeyStore for MongoStore {
    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        // The hash is not part of the serialized record; it lives in its own field.
        self.insert_record(
            "api_keys",
            doc! {"_id": &key.id, "hash": &key.hash, "doc": encode(key)?},
            "an API key with this id or secret".to_owned(),
        )
        .await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        let found: Option<ApiKey> = self
            .find_doc("api_keys", doc! {"hash": hash}, "reading an API key")
            .await?;
        Ok(found.map(|k| ApiKey {
            hash: hash.to_owned(),
            ..k
        }))
    }

    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>> {
        self.page_of("api_keys", Document::new(), page, "listing API keys")
            .await
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let Some(mut key): Option<ApiKey> = self
            .find_doc("api_keys", doc! {"_id": id}, "reading an API key")
            .await?
        else {
            return Ok(false);
        };
        if key.revoked_at.is_some() {
            return Ok(true);
        }
        key.revoked_at = Some(at);
        // Only the first revocation stamps the time.
        self.coll("api_keys")
            .update_one(
                doc! {"_id": id, "revoked": {"$ne": true}},
                doc! {"$set": {"doc": encode(&key)?, "revoked": true}},
            )
            .await
            .map_err(db_err("revoking an API key"))?;
        Ok(true)
    }
}
