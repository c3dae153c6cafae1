//! Environments and their audiences (reusable targeting rules).

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use verdict_domain::{Audience, Environment, Targeting};
use verdict_store::{AudienceDeletion, StoreError};

use crate::auth::Caller;
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};
use crate::publishing::Changed;
use crate::{App, now};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceInput {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    pub rules: Targeting,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceUpdate {
    #[serde(default)]
    pub name: Option<String>,
    pub rules: Targeting,
}

fn audience_not_found(env: &str, key: &str) -> AppError {
    AppError::new(
        ErrorCode::AudienceNotFound,
        format!("no audience '{key}' in '{env}'"),
    )
}

impl App {
    /// Create an environment; `name` defaults to `key`.
    pub async fn create_environment(
        &self,
        caller: &Caller,
        body: NewEnvironment,
    ) -> Result<Environment, AppError> {
        let env = Environment {
            name: body.name.unwrap_or_else(|| body.key.clone()),
            key: body.key,
            description: body.description,
            created_at: now(),
        };
        env.check().map_err(AppError::validation)?;
        match self.0.store.create_environment(&env).await {
            Ok(()) => {
                let subject = format!("environment:{}", env.key);
                let details = json!({"name": env.name});
                self.audited(caller, &subject, "environment.created", details)
                    .await;
                Ok(env)
            }
            Err(StoreError::Conflict(m)) => Err(AppError::new(ErrorCode::EnvironmentExists, m)),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_environments(
        &self,
        page: PageParams,
    ) -> Result<Paginated<Environment>, AppError> {
        let page = page.to_request()?;
        Ok(Paginated::of(
            self.0.store.list_environments(page).await?,
            page,
        ))
    }

    pub async fn environment(&self, caller: &Caller, key: &str) -> Result<Environment, AppError> {
        caller.require_environment(key)?;
        self.find_environment(key).await
    }

    pub(crate) async fn find_environment(&self, key: &str) -> Result<Environment, AppError> {
        self.0.store.get_environment(key).await?.ok_or_else(|| {
            AppError::new(
                ErrorCode::EnvironmentNotFound,
                format!("no environment '{key}'"),
            )
        })
    }

    /// Make sure the bootstrap environment exists, so a fresh install can create
    /// experiments at once.
    pub async fn ensure_bootstrap_environment(&self) -> Result<(), AppError> {
        let key = &self.0.settings.auth.bootstrap_environment;
        if self.0.store.get_environment(key).await?.is_some() {
            return Ok(());
        }
        let env = Environment {
            key: key.clone(),
            name: key.clone(),
            description: "created at start-up (auth.bootstrap_environment)".into(),
            created_at: now(),
        };
        match self.0.store.create_environment(&env).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Create an audience of environment `env`; `name` defaults to `key`.
    pub async fn create_audience(
        &self,
        caller: &Caller,
        env: &str,
        body: AudienceInput,
    ) -> Result<Audience, AppError> {
        caller.require_environment(env)?;
        self.find_environment(env).await?;
        let at = now();
        let audience = Audience {
            environment: env.to_owned(),
            name: body.name.unwrap_or_else(|| body.key.clone()),
            key: body.key,
            rules: body.rules,
            created_at: at,
            updated_at: at,
        };
        audience.check().map_err(AppError::validation)?;
        match self.0.store.create_audience(&audience).await {
            Ok(()) => {
                let subject = format!("audience:{env}/{}", audience.key);
                let details = json!({"rules": audience.rules});
                self.audited(caller, &subject, "audience.created", details)
                    .await;
                Ok(audience)
            }
            Err(StoreError::Conflict(m)) => Err(AppError::new(ErrorCode::AudienceExists, m)),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_audiences(
        &self,
        caller: &Caller,
        env: &str,
        page: PageParams,
    ) -> Result<Paginated<Audience>, AppError> {
        caller.require_environment(env)?;
        let page = page.to_request()?;
        self.find_environment(env).await?;
        Ok(Paginated::of(
            self.0.store.list_audiences(env, page).await?,
            page,
        ))
    }

    pub async fn audience(
        &self,
        caller: &Caller,
        env: &str,
        key: &str,
    ) -> Result<Audience, AppError> {
        caller.require_environment(env)?;
        self.0
            .store
            .get_audience(env, key)
            .await?
            .ok_or_else(|| audience_not_found(env, key))
    }

    /// Replace an audience's name and rules; subjects already assigned keep their variant.
    pub async fn update_audience(
        &self,
        caller: &Caller,
        env: &str,
        key: &str,
        body: AudienceUpdate,
    ) -> Result<Changed<Audience>, AppError> {
        let current = self.audience(caller, env, key).await?;
        let next = Audience {
            name: body.name.unwrap_or(current.name),
            rules: body.rules,
            updated_at: now(),
            ..current
        };
        next.check().map_err(AppError::validation)?;
        match self.0.store.update_audience(&next).await {
            Ok(a) => {
                let subject = format!("audience:{env}/{key}");
                let details = json!({"rules": a.rules});
                self.audited(caller, &subject, "audience.updated", details)
                    .await;
                let publish = self.publish_audience_change(env, key, caller.actor()).await;
                Ok(Changed { value: a, publish })
            }
            Err(StoreError::NotFound) => Err(audience_not_found(env, key)),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete an audience, refused while running experiments use it.
    pub async fn delete_audience(
        &self,
        caller: &Caller,
        env: &str,
        key: &str,
    ) -> Result<(), AppError> {
        caller.require_environment(env)?;
        match self.0.store.delete_audience(env, key).await? {
            AudienceDeletion::Deleted => {
                let subject = format!("audience:{env}/{key}");
                self.audited(caller, &subject, "audience.deleted", json!({}))
                    .await;
                Ok(())
            }
            AudienceDeletion::NotFound => Err(audience_not_found(env, key)),
            AudienceDeletion::InUse(users) => Err(AppError::new(
                ErrorCode::AudienceInUse,
                format!(
                    "running experiments use audience '{key}': {}",
                    users.join(", ")
                ),
            )
            .with_details(
                users
                    .into_iter()
                    .map(|u| json!({"experiment": u}))
                    .collect(),
            )),
        }
    }
}
