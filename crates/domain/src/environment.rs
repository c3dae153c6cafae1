//! Environments (`production`, `staging`, …): the first level of scoping.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::validation::{MAX_KEY_LEN, Problems, check_key};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Environment {
    pub fn check(&self) -> Result<(), Problems> {
        let mut p = Problems::new();
        check_key(&mut p, "key", &self.key);
        if self.name.chars().count() > MAX_KEY_LEN * 2 {
            p.push("name", "must be at most 256 characters");
        }
        p.into_result(())
    }
}
