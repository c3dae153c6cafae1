//! [`PublicationStore`] on MongoDB: collection `publications` (one document per version:
//! `environment`, `organization` (null for the global scope), `version`, `hash`, the JSON
//! record `doc` and the `body`; unique on scope and version) and `publish_pending` (one
//! document per scope to retry).

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, doc};
use time::OffsetDateTime;
use verdict_domain::{PendingPublish, Publication, Scope};

use super::{MongoStore, bdate, collect, db_err, doc_field, encode, get_date, get_str, opt_str};
use crate::model::{Page, PageRequest};
use crate::publications::{NewPublication, PublicationStore};
use crate::{Result, StoreError};

const WHAT: &str = "`publications`";

pub(super) fn scope_filter(scope: &Scope) -> Document {
    doc! {
        "environment": &scope.environment,
        "organization": scope.organization.as_deref().map_or(Bson::Null, Bson::from),
    }
}

/// Concurrent publishers of one scope race on the unique (scope, version) index; the loser
/// reads the winner's version and tries again (after a pause growing by a millisecond a
/// time), this many times: more than any number of replicas publishing one scope at once.
const RECORD_ATTEMPTS: u64 = 64;

#[async_trait]
impl PublicationStore for MongoStore {
    async fn record_publication(&self, new: &NewPublication) -> Result<(Publication, bool)> {
        for attempt in 0..RECORD_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(attempt)).await;
            }
            let latest = self.latest_publication(&new.scope).await?;
            if let Some(p) = &latest
                && p.hash == new.hash
            {
                return Ok((p.clone(), false));
            }
            let publication = Publication {
                environment: new.scope.environment.clone(),
                organization: new.scope.organization.clone(),
                version: latest.map_or(1, |p| p.version + 1),
                hash: new.hash.clone(),
                size: new.body.len() as u64,
                trigger: new.trigger.clone(),
                actor: new.actor.clone(),
                published_at: new.at,
            };
            let mut d = scope_filter(&new.scope);
            d.insert("version", publication.version as i64);
            d.insert("hash", &publication.hash);
            d.insert("doc", encode(&publication)?);
            d.insert("body", &new.body);
            match self.coll("publications").insert_one(d).await {
                Ok(_) => return Ok((publication, true)),
                Err(e) if super::is_duplicate(&e) => {}
                Err(e) => return Err(db_err("recording a publication")(e)),
            }
        }
        Err(StoreError::Unavailable {
            context: "recording a publication: other publishers kept taking the next version"
                .into(),
            source: None,
        })
    }

    async fn latest_publication(&self, scope: &Scope) -> Result<Option<Publication>> {
        const DOING: &str = "reading the latest publication";
        self.coll("publications")
            .find_one(scope_filter(scope))
            .sort(doc! {"version": -1})
            .projection(doc! {"body": 0})
            .await
            .map_err(db_err(DOING))?
            .map(|d| doc_field(&d, WHAT, DOING))
            .transpose()
    }

    async fn list_publications(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> Result<Page<Publication>> {
        const DOING: &str = "listing publications";
        let c = self.coll("publications");
        let filter = scope_filter(scope);
        let total = c
            .count_documents(filter.clone())
            .await
            .map_err(db_err(DOING))?;
        let docs = collect(
            c.find(filter)
                .sort(doc! {"version": -1})
                .projection(doc! {"body": 0})
                .skip(page.offset())
                .limit(page.limit() as i64)
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        let items = docs
            .iter()
            .map(|d| doc_field(d, WHAT, DOING))
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    async fn get_publication(
        &self,
        scope: &Scope,
        version: Option<u64>,
    ) -> Result<Option<(Publication, String)>> {
        const DOING: &str = "reading a publication";
        let mut filter = scope_filter(scope);
        if let Some(v) = version {
            filter.insert("version", v.min(i64::MAX as u64) as i64);
        }
        let found = self
            .coll("publications")
            .find_one(filter)
            .sort(doc! {"version": -1})
            .await
            .map_err(db_err(DOING))?;
        found
            .map(|d| {
                Ok((
                    doc_field(&d, WHAT, DOING)?,
                    get_str(&d, "body", WHAT)?.to_owned(),
                ))
            })
            .transpose()
    }

    async fn publication_scopes(&self, environment: Option<&str>) -> Result<Vec<Scope>> {
        const DOING: &str = "listing published scopes";
        let filter = environment.map_or_else(Document::new, |e| doc! {"environment": e});
        let mut scopes = Vec::new();
        for coll in ["publications", "publish_pending"] {
            let docs = collect(
                self.coll(coll)
                    .aggregate(vec![
                        doc! {"$match": filter.clone()},
                        doc! {"$group": {"_id": {
                            "environment": "$environment",
                            "organization": "$organization",
                        }}},
                    ])
                    .await
                    .map_err(db_err(DOING))?,
                DOING,
            )
            .await?;
            for d in docs {
                let id = d
                    .get_document("_id")
                    .map_err(|_| StoreError::corrupt(format!("{DOING}: a group without _id")))?;
                scopes.push(Scope::new(
                    get_str(id, "environment", WHAT)?,
                    opt_str(id, "organization", WHAT)?.map(str::to_owned),
                ));
            }
        }
        scopes.sort_by(|a, b| {
            (&a.environment, &a.organization).cmp(&(&b.environment, &b.organization))
        });
        scopes.dedup();
        Ok(scopes)
    }

    async fn mark_publish_pending(
        &self,
        scope: &Scope,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        self.coll("publish_pending")
            .update_one(
                scope_filter(scope),
                doc! {"$set": {"error": error, "failed_at": bdate(at)}},
            )
            .upsert(true)
            .await
            .map_err(db_err("recording a failed publish"))?;
        Ok(())
    }

    async fn clear_publish_pending(
        &self,
        scope: &Scope,
        compiled_at: OffsetDateTime,
    ) -> Result<()> {
        let mut filter = scope_filter(scope);
        filter.insert("failed_at", doc! {"$lte": bdate(compiled_at)});
        self.coll("publish_pending")
            .delete_one(filter)
            .await
            .map_err(db_err("clearing a failed publish"))?;
        Ok(())
    }

    async fn pending_publishes(&self) -> Result<Vec<PendingPublish>> {
        const DOING: &str = "listing failed publishes";
        let docs = collect(
            self.coll("publish_pending")
                .find(Document::new())
                .sort(doc! {"environment": 1, "organization": 1})
                .await
                .map_err(db_err(DOING))?,
            DOING,
        )
        .await?;
        const PENDING: &str = "`publish_pending`";
        docs.iter()
            .map(|d| {
                Ok(PendingPublish {
                    scope: Scope::new(
                        get_str(d, "environment", PENDING)?,
                        opt_str(d, "organization", PENDING)?.map(str::to_owned),
                    ),
                    error: get_str(d, "error", PENDING)?.to_owned(),
                    failed_at: get_date(d, "failed_at", PENDING)?,
                })
            })
            .collect()
    }
}
