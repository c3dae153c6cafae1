//! Environment / organization scoping.
//!
//! An experiment key is unique within (environment, organization). An absent organization
//! means a global experiment of that environment.

use serde::{Deserialize, Serialize};

use crate::validation::{Problems, check_key};

/// The default environment of keys and requests that name none.
pub const DEFAULT_ENVIRONMENT: &str = "production";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Scope {
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

impl Scope {
    pub fn new(environment: impl Into<String>, organization: Option<String>) -> Self {
        Self {
            environment: environment.into(),
            organization,
        }
    }

    /// The global scope of `environment`.
    pub fn global(environment: impl Into<String>) -> Self {
        Self::new(environment, None)
    }

    pub fn check(&self, problems: &mut Problems) {
        check_key(problems, "environment", &self.environment);
        if let Some(org) = &self.organization {
            check_key(problems, "organization", org);
        }
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::global(DEFAULT_ENVIRONMENT)
    }
}
