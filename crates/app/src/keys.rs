//! API keys: create (the plaintext shown once), list, revoke; the first-run admin key.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use verdict_config::ExposeSecret;
use verdict_domain::validation::check_key;
use verdict_domain::{ApiKey, KeyScope, Problems};
use verdict_store::PageRequest;

use crate::auth::{Caller, generate_key};
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};
use crate::{App, now};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<KeyScope>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
}

/// A new API key: the stored key plus its plaintext, shown in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The plaintext key (`vk_` + 48 hex characters). Never shown again.
    pub key: String,
}

impl NewApiKey {
    fn check(&self, environment: &str) -> Result<(), AppError> {
        let mut p = Problems::new();
        if self.name.trim().is_empty() || self.name.len() > 200 {
            p.push("name", "must be 1 to 200 characters");
        }
        if self.scopes.is_empty() {
            p.push("scopes", "give at least one of admin, client, internal");
        }
        check_key(&mut p, "environment", environment);
        if let Some(org) = &self.organization {
            check_key(&mut p, "organization", org);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(AppError::validation(p))
        }
    }
}

/// A stored key for `plaintext` (only its hash is kept).
fn key_for(
    plaintext: &str,
    hash: String,
    name: String,
    scopes: Vec<KeyScope>,
    environment: String,
    organization: Option<String>,
) -> ApiKey {
    ApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name,
        prefix: plaintext[..10].to_owned(),
        hash,
        scopes,
        environment,
        organization,
        created_at: now(),
        revoked_at: None,
    }
}

impl App {
    /// Create a key; `environment` defaults to the caller's. The plaintext is in the
    /// answer and nowhere else, ever.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        body: NewApiKey,
    ) -> Result<CreatedApiKey, AppError> {
        caller.require(KeyScope::Admin)?;
        let environment = body
            .environment
            .clone()
            .unwrap_or_else(|| caller.key.environment.clone());
        body.check(&environment)?;
        let (plaintext, hash) = generate_key();
        let key = key_for(
            &plaintext,
            hash,
            body.name,
            body.scopes,
            environment,
            body.organization,
        );
        self.0.store.create_api_key(&key).await?;
        Ok(CreatedApiKey {
            api_key: key,
            key: plaintext,
        })
    }

    /// A page of keys, revoked ones included (never a plaintext).
    pub async fn list_api_keys(
        &self,
        caller: &Caller,
        page: PageParams,
    ) -> Result<Paginated<ApiKey>, AppError> {
        caller.require(KeyScope::Admin)?;
        let page = page.to_request()?;
        Ok(Paginated::of(self.0.store.list_api_keys(page).await?, page))
    }

    /// Revoke a key: kept for the record, refused from now on (at once through this
    /// process; within the key cache's few seconds through others).
    pub async fn revoke_api_key(&self, caller: &Caller, id: &str) -> Result<(), AppError> {
        caller.require(KeyScope::Admin)?;
        if !self.0.store.revoke_api_key(id, now()).await? {
            return Err(AppError::new(
                ErrorCode::ApiKeyNotFound,
                format!("no API key '{id}'"),
            ));
        }
        self.0.keys.forget_id(id);
        Ok(())
    }

    /// On a fresh install with no bootstrap key configured and no API key stored, create an
    /// admin key so that a first run can be used at once. Returns its plaintext (to be shown
    /// once, by the caller, to the operator only); `None` when keys already exist or one is
    /// configured.
    pub async fn first_run_admin_key(&self) -> Result<Option<String>, AppError> {
        let settings = &self.0.settings;
        if !settings.auth.bootstrap_admin_key.expose_secret().is_empty() {
            return Ok(None);
        }
        let one = PageRequest {
            page: 1,
            page_size: 1,
        };
        if self.0.store.list_api_keys(one).await?.total > 0 {
            return Ok(None);
        }
        let (plaintext, hash) = generate_key();
        let key = key_for(
            &plaintext,
            hash,
            "first-run admin key".into(),
            vec![KeyScope::Admin],
            settings.auth.bootstrap_environment.clone(),
            None,
        );
        self.0.store.create_api_key(&key).await?;
        Ok(Some(plaintext))
    }
}
