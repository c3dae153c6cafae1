//! `/v1` routes, one module per resource. Handlers extract, call one function of the same
//! module (which holds the orchestration and can be called without HTTP), and map the result.

pub mod admin;
pub mod assignments;
pub mod events;
pub mod experiments;
pub mod internal;
pub mod results;
pub mod stream;
pub mod webhooks;
pub mod ws;

use time::OffsetDateTime;

/// Now, at the millisecond precision stores keep.
pub(crate) fn now() -> OffsetDateTime {
    verdict_store::model::truncate_to_millis(OffsetDateTime::now_utc())
}
