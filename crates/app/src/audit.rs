//! The audit log of changes other than experiments' (which have their own, per experiment):
//! API keys, environments, audiences and webhook endpoints, each entry naming who (a key id
//! or a token's subject), what and when.

use serde::Deserialize;
use utoipa::IntoParams;
use verdict_domain::Right;
use verdict_store::AuditEntry;

use crate::App;
use crate::auth::Caller;
use crate::error::AppError;
use crate::pages::{PageParams, Paginated};

/// `GET /v1/audit`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Whose changes: `api_key:<id>`, `environment:<key>`, `audience:<env>/<key>`,
    /// `webhook_endpoint:<id>`, or `experiment:<id>` (an experiment's own log, which stays
    /// readable after it is deleted).
    pub subject: String,
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

/// The kinds of subject [`App::audit_log`] serves. An experiment's log is stored under its
/// bare id (and also served at `/v1/experiments/{key}/audit` while it exists).
const SUBJECT_KINDS: &[&str] = &[
    "api_key",
    "environment",
    "audience",
    "webhook_endpoint",
    "experiment",
];

impl App {
    /// A page of one subject's changes, newest first. These subjects belong to the whole
    /// deployment, so reading them also needs `scope:any`.
    pub async fn audit_log(
        &self,
        caller: &Caller,
        query: AuditQuery,
    ) -> Result<Paginated<AuditEntry>, AppError> {
        caller.require(Right::ScopeAny)?;
        let kind = query.subject.split_once(':').map(|(kind, _)| kind);
        if !kind.is_some_and(|k| SUBJECT_KINDS.contains(&k)) {
            return Err(AppError::invalid_query(
                "subject",
                format!(
                    "give <kind>:<id> with a kind among {}",
                    SUBJECT_KINDS.join(", ")
                ),
            ));
        }
        let page = PageParams {
            page: query.page,
            page_size: query.page_size,
        }
        .to_request()?;
        let subject = match query.subject.split_once(':') {
            Some(("experiment", id)) => id,
            _ => query.subject.as_str(),
        };
        Ok(Paginated::of(
            self.0.store.list_audit(subject, page).await?,
            page,
        ))
    }

    /// Record who changed `subject` (an API key, environment, audience or webhook endpoint;
    /// experiments record their own changes atomically with them). The change is made
    /// already: an entry that cannot be written is logged as an error, not answered as one
    /// (a retried create would make a second key or endpoint).
    pub(crate) async fn audited(
        &self,
        caller: &Caller,
        subject: &str,
        action: &str,
        details: serde_json::Value,
    ) {
        if let Err(e) = self
            .0
            .store
            .record_audit(subject, caller.actor(), action, &details)
            .await
        {
            tracing::error!(
                subject,
                action,
                actor = caller.actor(),
                error = %verdict_domain::ErrorChain(&e),
                "audit entry not recorded"
            );
        }
    }
}
