//! [`EnvironmentStore`] on SQLite: table `environments` (key and JSON document; `rowid` is
//! the creation order).

use async_trait::async_trait;
use verdict_domain::Environment;

use super::{SqliteStore, encode, get_doc, insert_doc, page_of};
use crate::Result;
use crate::environments::EnvironmentStore;
use crate::model::{Page, PageRequest};

#[async_trait]
impl EnvironmentStore for SqliteStore {
    async fn create_environment(&self, environment: &Environment) -> Result<()> {
        let env = environment.clone();
        let doc = encode(&env)?;
        self.write(move |c| {
            insert_doc(
                c,
                "INSERT INTO environments (key, doc) VALUES (?1, ?2)",
                &[&env.key, &doc],
                &format!("environment '{}'", env.key),
            )
        })
        .await
    }

    async fn get_environment(&self, key: &str) -> Result<Option<Environment>> {
        let key = key.to_owned();
        self.read_point(move |c| {
            get_doc(
                c,
                "SELECT doc FROM environments WHERE key = ?1",
                &[&key],
                "reading an environment",
            )
        })
        .await
    }

    async fn list_environments(&self, page: PageRequest) -> Result<Page<Environment>> {
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM environments",
                "SELECT doc FROM environments ORDER BY rowid LIMIT ?1 OFFSET ?2",
                &[],
                page,
                "listing environments",
            )
        })
        .await
    }
}
