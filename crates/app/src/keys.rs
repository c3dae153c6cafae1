//! API keys: create (the plaintext shown once), list, revoke; the first-run admin key.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use verdict_config::ExposeSecret;
use verdict_domain::validation::check_key;
use verdict_domain::{ApiKey, Problems, RoleBook};
use verdict_store::PageRequest;

use crate::auth::{Caller, ScopeParams, generate_key};
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};
use crate::{App, now};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    /// Role names: built-in (`viewer`, `experimenter`, `operator`, `admin`, `client`,
    /// `internal`) or configured in `[auth.roles]`. `scopes` is accepted as another name for
    /// this field (the original scopes are the roles of the same names).
    #[serde(alias = "scopes")]
    pub roles: Vec<String>,
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
    fn check(&self, environment: &str, book: &RoleBook) -> Result<(), AppError> {
        let mut p = Problems::new();
        if self.name.trim().is_empty() || self.name.len() > 200 {
            p.push("name", "must be 1 to 200 characters");
        }
        if self.roles.is_empty() {
            p.push(
                "roles",
                format!("give at least one of {}", book.names().join(", ")),
            );
        }
        for (i, role) in self.roles.iter().enumerate() {
            if book.rights_of(role).is_none() {
                p.push(
                    format!("roles[{i}]"),
                    format!("unknown role '{role}' (known: {})", book.names().join(", ")),
                );
            }
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
    roles: Vec<String>,
    environment: String,
    organization: Option<String>,
) -> ApiKey {
    ApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name,
        prefix: plaintext[..10].to_owned(),
        hash,
        roles,
        environment,
        organization,
        created_at: now(),
        revoked_at: None,
    }
}

impl App {
    /// Create a key; `environment` and `organization` default to the caller's (naming
    /// others needs `scope:any`). A caller grants only rights it holds itself: 403
    /// `forbidden` naming the first it lacks. The plaintext is in the answer and nowhere
    /// else, ever.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        body: NewApiKey,
    ) -> Result<CreatedApiKey, AppError> {
        let book = &self.0.roles;
        let environment = body
            .environment
            .clone()
            .unwrap_or_else(|| caller.environment().to_owned());
        body.check(&environment, book)?;
        let scope = caller.scope(&ScopeParams {
            environment: Some(environment),
            organization: body.organization.clone(),
        })?;
        let granted = book.resolve(body.roles.iter().map(String::as_str));
        if let Some(lacking) = granted.iter().find(|r| !caller.holds(*r)) {
            return Err(crate::auth::missing_right(lacking).with_message(format!(
                "a key may only be given rights its creator holds; this caller lacks \
                 '{lacking}'"
            )));
        }
        let (plaintext, hash) = generate_key();
        let key = key_for(
            &plaintext,
            hash,
            body.name,
            body.roles,
            scope.environment,
            scope.organization,
        );
        self.0.store.create_api_key(&key).await?;
        self.audited(
            caller,
            &format!("api_key:{}", key.id),
            "api_key.created",
            serde_json::json!({"name": key.name, "roles": key.roles,
                "environment": key.environment, "organization": key.organization}),
        )
        .await;
        Ok(CreatedApiKey {
            api_key: key,
            key: plaintext,
        })
    }

    /// A page of keys, revoked ones included (never a plaintext).
    pub async fn list_api_keys(&self, page: PageParams) -> Result<Paginated<ApiKey>, AppError> {
        let page = page.to_request()?;
        Ok(Paginated::of(self.0.store.list_api_keys(page).await?, page))
    }

    /// Revoke a key: kept for the record, refused from now on (at once through this
    /// process; within the key cache's few seconds through others).
    pub async fn revoke_api_key(&self, caller: &Caller, id: &str) -> Result<(), AppError> {
        if !self.0.store.revoke_api_key(id, now()).await? {
            return Err(AppError::new(
                ErrorCode::ApiKeyNotFound,
                format!("no API key '{id}'"),
            ));
        }
        self.0.keys.forget_id(id);
        self.audited(
            caller,
            &format!("api_key:{id}"),
            "api_key.revoked",
            serde_json::json!({}),
        )
        .await;
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
            vec!["admin".to_owned()],
            settings.auth.bootstrap_environment.clone(),
            None,
        );
        self.0.store.create_api_key(&key).await?;
        Ok(Some(plaintext))
    }
}
