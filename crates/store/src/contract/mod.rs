//! The contract every [`Store`](crate::Store) adapter must pass, written once.
//!
//! Each public `async fn` is one test taking a fresh, empty store. An adapter's test file
//! instantiates all of them with [`store_contract_suite!`](crate::store_contract_suite),
//! giving it a factory that returns a [`TestStore`] (an isolated database per call).
//!
//! # Layout
//! One file per aggregate, each testing its trait: `experiments`, `assignments`, `events`,
//! `rollups`, `jobs`, `webhooks`, `environments`, `audiences`, `keys`, `publications`. This file holds the
//! macro, [`TestStore`] and the fixtures several of them share; every test is re-exported
//! here, where the macro names it.

mod assignments;
mod audiences;
mod environments;
mod events;
mod experiments;
mod jobs;
mod keys;
mod publications;
mod rollups;
mod webhooks;

use std::any::Any;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_domain::experiment::Provided;
use verdict_domain::{Assignment, Experiment, ExperimentInput, NewEvent, Scope};

use crate::DynStore;

pub use assignments::*;
pub use audiences::*;
pub use environments::*;
pub use events::*;
pub use experiments::*;
pub use jobs::*;
pub use keys::*;
pub use publications::*;
pub use rollups::*;
pub use webhooks::*;

/// A store for one test and whatever keeps its backing database alive (a temp dir, a
/// database to drop); dropping it releases both.
pub struct TestStore {
    pub store: DynStore,
    pub guard: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore")
            .field("store", &self.store)
            .finish()
    }
}

/// Instantiate every contract test for an adapter. `$factory` is an `async fn() -> TestStore`.
#[macro_export]
macro_rules! store_contract_suite {
    ($factory:path) => {
        $crate::store_contract_suite!(@tests $factory;
            // experiments
            experiment_round_trips_by_key_and_by_id,
            experiment_keys_are_unique_within_environment_and_organization,
            experiments_list_with_filters_and_pagination,
            changes_of_other_subjects_are_audited,
            listing_all_experiments_reads_every_page,
            update_succeeds_on_the_current_version_and_conflicts_on_a_stale_one,
            status_compare_and_set_applies_only_from_the_expected_status,
            fifty_concurrent_activations_produce_exactly_one_transition,
            a_winner_is_recorded_with_completion_and_audit,
            changes_write_their_outbox_messages_exactly_once,
            threshold_states_are_compared_and_set_with_their_announcements,
            // assignments
            assignment_get_or_create_keeps_the_first_assignment,
            fifty_concurrent_get_or_create_calls_return_one_identical_assignment,
            forced_variants_are_set_replaced_and_cleared,
            an_exposed_assignment_stores_its_exposure_once_at_the_stored_time,
            // events
            a_batch_with_duplicate_event_ids_stores_each_once_and_reports_duplicates,
            events_are_attributed_to_the_stored_assignment_or_rejected,
            events_are_scanned_in_ingestion_order_from_a_watermark,
            event_ids_are_scoped_to_their_experiment,
            concurrent_batches_with_overlapping_ids_store_each_event_once,
            variant_counts_count_subjects_and_only_events_after_assignment,
            variant_counts_apply_an_exposure_event_and_a_window,
            // rollups
            rollup_matches_raw_counts_and_running_it_again_changes_nothing,
            rollup_in_small_steps_equals_one_step_and_folds_late_events,
            capping_bounds_each_subjects_total_before_the_sums,
            subject_value_quantiles_are_nearest_rank_over_subjects_with_events,
            overflowed_totals_are_recomputed_from_raw_events_without_values_beyond_the_bound,
            overflowed_totals_stay_when_retention_deleted_raw_events,
            evaluation_state_round_trips,
            evaluation_history_keeps_the_latest_points_oldest_first,
            evaluation_history_expires_in_batches_and_is_purged_with_its_experiment,
            segment_counts_group_every_subject_by_its_segment,
            // jobs
            leases_grant_one_holder_at_a_time_with_increasing_tokens,
            concurrent_lease_requests_grant_exactly_one,
            a_scheduled_tick_is_granted_once,
            a_stale_holders_fenced_write_is_rejected,
            run_records_round_trip_and_list_newest_first,
            retention_deletes_only_aggregated_old_events_in_bounded_batches,
            a_deleted_experiments_data_is_purged_in_bounded_batches,
            // webhooks
            old_attempts_of_finished_deliveries_are_deleted_in_batches,
            webhook_endpoints_round_trip_update_disable_rotate_and_delete,
            fan_out_creates_one_delivery_per_subscribed_endpoint_once,
            concurrent_claims_never_return_the_same_delivery,
            completions_apply_only_while_the_claim_holds_the_lease,
            the_delivery_log_filters_redelivers_and_recovers,
            an_experiments_deliveries_are_listed_newest_first_across_endpoints,
            endpoint_health_keeps_the_first_failure_until_a_success,
            // environments, audiences, API keys
            environments_are_unique_and_listed_in_creation_order,
            an_audience_used_by_a_running_experiment_cannot_be_deleted,
            api_keys_are_found_by_hash_listed_and_revoked,
            // published config snapshots
            publications_are_numbered_per_scope_and_skip_unchanged_bodies,
            concurrent_publishers_number_versions_without_gaps,
            a_failed_publish_is_pending_until_a_later_compile_covers_it,
            old_versions_are_deleted_keeping_each_scopes_newest_in_bounded_batches,
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let test_store = $factory().await;
                $crate::contract::$name(test_store.store.clone()).await;
                drop(test_store);
            }
        )*
    };
}

const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

fn experiment(scope: Scope, key: &str, id: &str) -> Experiment {
    let input: ExperimentInput = serde_json::from_value(json!({
        "key": key,
        "variants": [
            {"key": "control", "config": {"color": "blue"}},
            {"key": "treatment", "config": {"color": "green"}}
        ]
    }))
    .expect("fixture input parses");
    input
        .into_experiment(
            scope,
            Provided {
                id: id.into(),
                salt: format!("salt-{id}"),
                now: T0,
            },
        )
        .expect("fixture experiment is valid")
}

pub(crate) fn event(experiment_id: &str, event_id: &str, subject: &str, at_s: i64) -> NewEvent {
    NewEvent {
        experiment_id: experiment_id.into(),
        event_id: event_id.into(),
        subject: subject.into(),
        variant: None,
        event: "conversion".into(),
        value: 1.5,
        ts: T0 + time::Duration::seconds(at_s),
        received_at: T0 + time::Duration::seconds(at_s + 1),
        meta: Some(json!({"source": "contract"})),
    }
}

pub(crate) async fn assign(
    store: &DynStore,
    experiment_id: &str,
    subject: &str,
    variant: &str,
    at_s: i64,
) {
    store
        .get_or_create_assignment(&Assignment {
            experiment_id: experiment_id.into(),
            subject: subject.into(),
            variant: variant.into(),
            assigned_at: T0 + time::Duration::seconds(at_s),
            context: None,
        })
        .await
        .unwrap();
}

/// Events for rollup tests: two experiments, several subjects, some events before
/// assignment, two event keys, values that sum exactly in binary.
pub(crate) async fn rollup_fixture(store: &DynStore, prefix: &str, hours: i64) {
    for (e, s, v) in [
        ("e1", "s1", "control"),
        ("e1", "s2", "control"),
        ("e1", "s3", "treatment"),
        ("e1", "s4", "treatment"),
        ("e2", "s1", "treatment"),
    ] {
        assign(store, e, s, v, 3600).await;
    }
    let mut batch = Vec::new();
    for i in 0..40i64 {
        let (exp, subject) = match i % 5 {
            0 => ("e1", "s1"),
            1 => ("e1", "s2"),
            2 => ("e1", "s3"),
            3 => ("e2", "s1"),
            _ => ("e1", "s1"),
        };
        // Spread over `hours` hours; i % 7 == 0 lands before the assignment (t < 3600 s).
        let at = if i % 7 == 0 {
            10
        } else {
            3600 + (i * 3600 * hours) / 40
        };
        let mut e = event(exp, &format!("{prefix}{i}"), subject, at);
        e.value = (i % 4) as f64 * 0.5;
        if i % 3 == 0 {
            e.event = "exposure".into();
        }
        batch.push(e);
    }
    store.append_events(batch).await.unwrap();
}
