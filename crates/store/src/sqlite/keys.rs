//! [`KeyStore`] on SQLite: table `api_keys` (id, unique hash, JSON document without the
//! hash, which is given back from its column on read).

use async_trait::async_trait;
use rusqlite::params;
use time::OffsetDateTime;
use verdict_domain::ApiKey;

use super::{SqliteStore, begin, commit, encode, get_doc, insert_doc, internal, page_of};
use crate::Result;
use crate::keys::KeyStore;
use crate::model::{Page, PageRequest};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let k = key.clone();
        // The hash is not part of the serialized record (it never leaves the store in API
        // answers), so the document gets it back from its column on read.
        let doc = encode(&k)?;
        self.write(move |c| {
            insert_doc(
                c,
                "INSERT INTO api_keys (id, hash, doc) VALUES (?1, ?2, ?3)",
                &[&k.id, &k.hash, &doc],
                "an API key with this id or secret",
            )
        })
        .await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        let hash = hash.to_owned();
        self.read_point(move |c| {
            let found: Option<ApiKey> = get_doc(
                c,
                "SELECT doc FROM api_keys WHERE hash = ?1",
                &[&hash],
                "reading an API key",
            )?;
            Ok(found.map(|k| ApiKey { hash, ..k }))
        })
        .await
    }

    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>> {
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM api_keys",
                "SELECT doc FROM api_keys ORDER BY rowid LIMIT ?1 OFFSET ?2",
                &[],
                page,
                "listing API keys",
            )
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            let tx = begin(c)?;
            let Some(mut key): Option<ApiKey> = get_doc(
                &tx,
                "SELECT doc FROM api_keys WHERE id = ?1",
                &[&id],
                "reading an API key",
            )?
            else {
                return Ok(false);
            };
            if key.revoked_at.is_none() {
                key.revoked_at = Some(at);
            }
            tx.execute(
                "UPDATE api_keys SET doc = ?2 WHERE id = ?1",
                params![id, encode(&key)?],
            )
            .map_err(internal("revoking an API key"))?;
            commit(tx)?;
            Ok(true)
        })
        .await
    }
}
