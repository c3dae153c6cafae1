//! [`AssignmentStore`] on MongoDB: collections `assignments` and `forced_variants`, each
//! unique on (experiment_id, subject). Get-or-create is an upsert with `$setOnInsert`; a
//! concurrent upsert losing with E11000 reads what the winner stored.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::doc;
use serde_json::json;
use time::OffsetDateTime;
use verdict_domain::Assignment;

use super::{MongoStore, bdate, db_err, decode, get_date, get_str, is_duplicate};
use crate::Result;
use crate::assignments::AssignmentStore;
use crate::error::StoreError;
use crate::model::SubjectRecord;

impl MongoStore {
    async fn read_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        const WHAT: &str = "`assignments`";
        let Some(d) = self
            .coll("assignments")
            .find_one(doc! {"experiment_id": experiment_id, "subject": subject})
            .await
            .map_err(db_err("reading an assignment"))?
        else {
            return Ok(None);
        };
        Ok(Some(Assignment {
            experiment_id: experiment_id.to_owned(),
            subject: subject.to_owned(),
            variant: get_str(&d, "variant", WHAT)?.to_owned(),
            assigned_at: get_date(&d, "assigned_at", WHAT)?,
            context: match d.get_str("context") {
                Ok(c) => Some(decode(c, "reading an assignment's context")?),
                Err(_) => None,
            },
        }))
    }
}

#[async_trait]
impl AssignmentStore for MongoStore {
    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>> {
        self.read_assignment(experiment_id, subject).await
    }

    async fn get_or_create_assignment(
        &self,
        assignment: &Assignment,
    ) -> Result<(Assignment, bool)> {
        // Callers look for a stored assignment first: go straight to the upsert.
        let a = assignment;
        let res = self
            .coll("assignments")
            .update_one(
                doc! {"experiment_id": &a.experiment_id, "subject": &a.subject},
                {
                    let mut new = doc! {
                        "variant": &a.variant,
                        "assigned_at": bdate(a.assigned_at),
                    };
                    if let Some(context) = &a.context {
                        // As JSON text, like audit details: any attribute value round-trips.
                        new.insert(
                            "context",
                            serde_json::Value::Object(context.clone()).to_string(),
                        );
                    }
                    doc! {"$setOnInsert": new}
                },
            )
            .upsert(true)
            .await;
        let created = match res {
            Ok(r) => r.upserted_id.is_some(),
            // Two upserts raced on the unique index: the other one stored it.
            Err(e) if is_duplicate(&e) => false,
            Err(e) => return Err(db_err("storing an assignment")(e)),
        };
        if created {
            // As it reads back: stored to the millisecond.
            let stored = Assignment {
                assigned_at: crate::model::truncate_to_millis(a.assigned_at),
                ..a.clone()
            };
            return Ok((stored, true));
        }
        let stored = self
            .read_assignment(&a.experiment_id, &a.subject)
            .await?
            .ok_or_else(|| {
                StoreError::corrupt("storing an assignment, which vanished after its upsert")
            })?;
        Ok((stored, created))
    }

    async fn set_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
        variant: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let c = self.coll("forced_variants");
        let key = doc! {"experiment_id": experiment_id, "subject": subject};
        match variant {
            Some(v) => {
                let res = c
                    .update_one(key.clone(), doc! {"$set": {"variant": v}})
                    .upsert(true)
                    .await;
                match res {
                    Ok(_) => {}
                    // A concurrent upsert inserted it: set it on the stored document.
                    Err(e) if is_duplicate(&e) => {
                        c.update_one(key, doc! {"$set": {"variant": v}})
                            .await
                            .map_err(db_err("writing a forced variant"))?;
                    }
                    Err(e) => return Err(db_err("writing a forced variant")(e)),
                }
            }
            None => {
                c.delete_one(key)
                    .await
                    .map_err(db_err("clearing a forced variant"))?;
            }
        }
        self.audit(
            experiment_id,
            OffsetDateTime::now_utc(),
            actor,
            "forced_variant_set",
            &json!({"subject": subject, "variant": variant}),
        )
        .await
    }

    async fn get_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<String>> {
        let d = self
            .coll("forced_variants")
            .find_one(doc! {"experiment_id": experiment_id, "subject": subject})
            .await
            .map_err(db_err("reading a forced variant"))?;
        d.map(|d| get_str(&d, "variant", "`forced_variants`").map(str::to_owned))
            .transpose()
    }

    async fn has_forced_variants(&self, experiment_id: &str) -> Result<bool> {
        let found = self
            .coll("forced_variants")
            .find_one(doc! {"experiment_id": experiment_id})
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_err("looking for forced variants"))?;
        Ok(found.is_some())
    }

    async fn forced_variants(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut cursor = self
            .coll("forced_variants")
            .find(doc! {"experiment_id": experiment_id})
            .sort(doc! {"subject": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(db_err("listing forced variants"))?;
        let mut found = Vec::new();
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(db_err("listing forced variants"))?
        {
            let what = "`forced_variants`";
            found.push((
                get_str(&d, "subject", what)?.to_owned(),
                get_str(&d, "variant", what)?.to_owned(),
            ));
        }
        Ok(found)
    }

    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        let (forced, assignment) = futures::try_join!(
            self.get_forced_variant(experiment_id, subject),
            self.read_assignment(experiment_id, subject)
        )?;
        Ok(SubjectRecord { forced, assignment })
    }
}
