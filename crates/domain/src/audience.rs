//! Audiences: reusable targeting rule sets, one namespace per environment.
//!
//! An experiment that names an audience requires both the audience's rules and its own.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::targeting::Targeting;
use crate::validation::{Problems, check_key};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Audience {
    pub environment: String,
    pub key: String,
    #[serde(default)]
    pub name: String,
    pub rules: Targeting,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Audience {
    pub fn check(&self) -> Result<(), Problems> {
        let mut p = Problems::new();
        check_key(&mut p, "environment", &self.environment);
        check_key(&mut p, "key", &self.key);
        self.rules.check(&mut p, "rules");
        p.into_result(())
    }
}
