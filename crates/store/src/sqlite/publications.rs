//! [`PublicationStore`] on SQLite: tables `publications` (one row per version, with its
//! record and body) and `publish_pending` (scopes to retry). The global scope's
//! organization is stored as `''`.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;
use verdict_domain::{PendingPublish, Publication, Scope};

use super::{SqliteStore, begin, commit, decode, encode, get_doc, internal, page_of};
use crate::Result;
use crate::model::{Page, PageRequest, from_millis, to_millis};
use crate::publications::{NewPublication, PublicationStore};

/// The stored organization of a scope (`''` for the global one).
fn org(scope: &Scope) -> String {
    scope.organization.clone().unwrap_or_default()
}

fn scope_of(environment: String, organization: String) -> Scope {
    Scope::new(environment, Some(organization).filter(|o| !o.is_empty()))
}

#[async_trait]
impl PublicationStore for SqliteStore {
    async fn record_publication(&self, new: &NewPublication) -> Result<(Publication, bool)> {
        let new = new.clone();
        self.write(move |c| {
            let tx = begin(c)?;
            let (env, org) = (new.scope.environment.clone(), org(&new.scope));
            let latest: Option<(i64, String, String)> = tx
                .query_row(
                    "SELECT version, hash, doc FROM publications
                     WHERE environment = ?1 AND organization = ?2
                     ORDER BY version DESC LIMIT 1",
                    params![env, org],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(internal("reading the latest publication"))?;
            if let Some((_, hash, doc)) = &latest
                && *hash == new.hash
            {
                return Ok((decode(doc, "reading the latest publication")?, false));
            }
            let publication = Publication {
                environment: env.clone(),
                organization: new.scope.organization.clone(),
                version: latest.map_or(1, |(v, _, _)| v as u64 + 1),
                hash: new.hash.clone(),
                size: new.body.len() as u64,
                trigger: new.trigger.clone(),
                actor: new.actor.clone(),
                published_at: new.at,
            };
            tx.execute(
                "INSERT INTO publications (environment, organization, version, hash, doc, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    env,
                    org,
                    publication.version as i64,
                    publication.hash,
                    encode(&publication)?,
                    new.body
                ],
            )
            .map_err(internal("recording a publication"))?;
            commit(tx)?;
            Ok((publication, true))
        })
        .await
    }

    async fn list_publications(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> Result<Page<Publication>> {
        let (env, org) = (scope.environment.clone(), org(scope));
        self.read(move |c| {
            page_of(
                c,
                "SELECT COUNT(*) FROM publications WHERE environment = ?1 AND organization = ?2",
                "SELECT doc FROM publications WHERE environment = ?1 AND organization = ?2
                 ORDER BY version DESC LIMIT ?3 OFFSET ?4",
                &[&env, &org],
                page,
                "listing publications",
            )
        })
        .await
    }

    async fn latest_publication(&self, scope: &Scope) -> Result<Option<Publication>> {
        let (env, org) = (scope.environment.clone(), org(scope));
        self.read_point(move |c| {
            get_doc(
                c,
                "SELECT doc FROM publications WHERE environment = ?1 AND organization = ?2
                 ORDER BY version DESC LIMIT 1",
                &[&env, &org],
                "reading the latest publication",
            )
        })
        .await
    }

    async fn get_publication(
        &self,
        scope: &Scope,
        version: Option<u64>,
    ) -> Result<Option<(Publication, String)>> {
        let (env, org) = (scope.environment.clone(), org(scope));
        // -1 asks for the latest.
        let version = version.map_or(-1, |v| v.min(i64::MAX as u64) as i64);
        self.read_point(move |c| {
            let found: Option<(String, String)> = c
                .query_row(
                    "SELECT doc, body FROM publications
                     WHERE environment = ?1 AND organization = ?2 AND (?3 = -1 OR version = ?3)
                     ORDER BY version DESC LIMIT 1",
                    params![env, org, version],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(internal("reading a publication"))?;
            found
                .map(|(doc, body)| Ok((decode(&doc, "reading a publication")?, body)))
                .transpose()
        })
        .await
    }

    async fn publication_scopes(&self, environment: Option<&str>) -> Result<Vec<Scope>> {
        let env = environment.map(str::to_owned);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT environment, organization FROM publications
                     WHERE ?1 IS NULL OR environment = ?1
                     GROUP BY environment, organization
                     UNION
                     SELECT environment, organization FROM publish_pending
                     WHERE ?1 IS NULL OR environment = ?1
                     ORDER BY 1, 2",
                )
                .map_err(internal("listing published scopes"))?;
            st.query_map([&env], |r| Ok(scope_of(r.get(0)?, r.get(1)?)))
                .map_err(internal("listing published scopes"))?
                .collect::<std::result::Result<_, _>>()
                .map_err(internal("listing published scopes"))
        })
        .await
    }

    async fn mark_publish_pending(
        &self,
        scope: &Scope,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        let (env, org, error) = (scope.environment.clone(), org(scope), error.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO publish_pending (environment, organization, error, failed_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (environment, organization)
                 DO UPDATE SET error = excluded.error,
                     failed_at = MAX(failed_at, excluded.failed_at)",
                params![env, org, error, to_millis(at)],
            )
            .map_err(internal("recording a failed publish"))?;
            Ok(())
        })
        .await
    }

    async fn clear_publish_pending(
        &self,
        scope: &Scope,
        compiled_at: OffsetDateTime,
    ) -> Result<()> {
        let (env, org) = (scope.environment.clone(), org(scope));
        self.write(move |c| {
            c.execute(
                "DELETE FROM publish_pending
                 WHERE environment = ?1 AND organization = ?2 AND failed_at <= ?3",
                params![env, org, to_millis(compiled_at)],
            )
            .map_err(internal("clearing a failed publish"))?;
            Ok(())
        })
        .await
    }

    async fn pending_publishes(&self) -> Result<Vec<PendingPublish>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT environment, organization, error, failed_at FROM publish_pending
                     ORDER BY environment, organization",
                )
                .map_err(internal("listing failed publishes"))?;
            st.query_map([], |r| {
                Ok(PendingPublish {
                    scope: scope_of(r.get(0)?, r.get(1)?),
                    error: r.get(2)?,
                    failed_at: from_millis(r.get(3)?),
                })
            })
            .map_err(internal("listing failed publishes"))?
            .collect::<std::result::Result<_, _>>()
            .map_err(internal("listing failed publishes"))
        })
        .await
    }
}
