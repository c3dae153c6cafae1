//! [`AudienceStore`] on SQLite: table `audiences` (environment, key, JSON document). A
//! delete checks for running experiments using the audience in its own transaction.

use async_trait::async_trait;
use rusqlite::params;
use verdict_domain::Audience;

use super::{SqliteStore, begin, commit, encode, get_doc, insert_doc, internal, page_of};
use crate::Result;
use crate::audiences::AudienceStore;
use crate::error::StoreError;
use crate::model::{AudienceDeletion, Page, PageRequest};

#[async_trait]
impl AudienceStore for SqliteStore {
    async fn create_audience(&self, audience: &Audience) -> Result<()> {
        let a = audience.clone();
        let doc = encode(&a)?;
        self.write(move |c| {
            insert_doc(
                c,
                "INSERT INTO audiences (environment, key, doc) VALUES (?1, ?2, ?3)",
                &[&a.environment, &a.key, &doc],
                &format!("audience '{}' in environment '{}'", a.key, a.environment),
            )
        })
        .await
    }

    async fn get_audience(&self, environment: &str, key: &str) -> Result<Option<Audience>> {
        let (env, key) = (environment.to_owned(), key.to_owned());
        self.read_point(move |c| {
            get_doc(
                c,
                "SELECT doc FROM audiences WHERE environment = ?1 AND key = ?2",
                &[&env, &key],
                "reading an audience",
            )
        })
        .await
    }

    async fn list_audiences(&self, environment: &str, page: PageRequest) -> Result<Page<Audience>> {
        let env = environment.to_owned();
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM audiences WHERE environment = ?1",
                "SELECT doc FROM audiences WHERE environment = ?1 ORDER BY rowid LIMIT ?2 OFFSET ?3",
                &[&env],
                page,
                "listing audiences",
            )
        })
        .await
    }

    async fn update_audience(&self, audience: &Audience) -> Result<Audience> {
        let a = audience.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let current: Audience = get_doc(
                &tx,
                "SELECT doc FROM audiences WHERE environment = ?1 AND key = ?2",
                &[&a.environment, &a.key],
                "reading an audience",
            )?
            .ok_or(StoreError::NotFound)?;
            let next = Audience {
                created_at: current.created_at,
                ..a
            };
            tx.execute(
                "UPDATE audiences SET doc = ?3 WHERE environment = ?1 AND key = ?2",
                params![next.environment, next.key, encode(&next)?],
            )
            .map_err(internal("updating an audience"))?;
            commit(tx)?;
            Ok(next)
        })
        .await
    }

    async fn delete_audience(&self, environment: &str, key: &str) -> Result<AudienceDeletion> {
        let (env, key) = (environment.to_owned(), key.to_owned());
        self.write(move |c| {
            let tx = begin(c)?;
            let users = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT key FROM experiments
                         WHERE environment = ?1 AND audience = ?2 AND status = 'running'
                         ORDER BY key",
                    )
                    .map_err(internal("checking an audience's use"))?;
                stmt.query_map(params![env, key], |r| r.get::<_, String>(0))
                    .map_err(internal("checking an audience's use"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal("checking an audience's use"))?
            };
            if !users.is_empty() {
                return Ok(AudienceDeletion::InUse(users));
            }
            let n = tx
                .execute(
                    "DELETE FROM audiences WHERE environment = ?1 AND key = ?2",
                    params![env, key],
                )
                .map_err(internal("deleting an audience"))?;
            commit(tx)?;
            Ok(if n == 1 {
                AudienceDeletion::Deleted
            } else {
                AudienceDeletion::NotFound
            })
        })
        .await
    }
}
