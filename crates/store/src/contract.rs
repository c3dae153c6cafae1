//! The contract every [`Store`] adapter must pass, written once.
//!
//! Each public `async fn` here is one test taking a fresh, empty store. An adapter's test
//! file instantiates all of them with [`store_contract_suite!`](crate::store_contract_suite),
//! giving it a factory that returns a [`TestStore`] (an isolated database per call).

use std::any::Any;
use std::collections::HashSet;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_domain::experiment::Provided;
use verdict_domain::{Assignment, Experiment, ExperimentInput, NewEvent, Scope, Status};

use crate::Attribution;
use crate::model::{
    AppendOutcome, ExperimentFilter, Page, PageRequest, StatusChange, VariantCounts,
};
use crate::{DynStore, StoreError};

pub use crate::contract_jobs::*;
pub use crate::contract_webhooks::*;

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
            experiment_round_trips_by_key_and_by_id,
            experiment_keys_are_unique_within_environment_and_organization,
            experiments_list_with_filters_and_pagination,
            listing_all_experiments_reads_every_page,
            update_succeeds_on_the_current_version_and_conflicts_on_a_stale_one,
            status_compare_and_set_applies_only_from_the_expected_status,
            fifty_concurrent_activations_produce_exactly_one_transition,
            assignment_get_or_create_keeps_the_first_assignment,
            fifty_concurrent_get_or_create_calls_return_one_identical_assignment,
            a_batch_with_duplicate_event_ids_stores_each_once_and_reports_duplicates,
            events_are_attributed_to_the_stored_assignment_or_rejected,
            events_are_scanned_in_ingestion_order_from_a_watermark,
            event_ids_are_scoped_to_their_experiment,
            concurrent_batches_with_overlapping_ids_store_each_event_once,
            variant_counts_count_subjects_and_only_events_after_assignment,
            variant_counts_apply_an_exposure_event_and_a_window,
            forced_variants_are_set_replaced_and_cleared,
            a_winner_is_recorded_with_completion_and_audit,
            environments_are_unique_and_listed_in_creation_order,
            an_audience_used_by_a_running_experiment_cannot_be_deleted,
            api_keys_are_found_by_hash_listed_and_revoked,
            rollup_matches_raw_counts_and_running_it_again_changes_nothing,
            rollup_in_small_steps_equals_one_step_and_folds_late_events,
            evaluation_state_round_trips,
            changes_write_their_outbox_messages_exactly_once,
            leases_grant_one_holder_at_a_time_with_increasing_tokens,
            concurrent_lease_requests_grant_exactly_one,
            a_scheduled_tick_is_granted_once,
            a_stale_holders_fenced_write_is_rejected,
            run_records_round_trip_and_list_newest_first,
            retention_deletes_only_aggregated_old_events_in_bounded_batches,
            old_attempts_of_finished_deliveries_are_deleted_in_batches,
            webhook_endpoints_round_trip_update_disable_rotate_and_delete,
            fan_out_creates_one_delivery_per_subscribed_endpoint_once,
            concurrent_claims_never_return_the_same_delivery,
            completions_apply_only_while_the_claim_holds_the_lease,
            the_delivery_log_filters_redelivers_and_recovers,
            endpoint_health_keeps_the_first_failure_until_a_success,
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

pub(crate) const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

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

pub async fn experiment_round_trips_by_key_and_by_id(store: DynStore) {
    let e = experiment(Scope::default(), "checkout", "exp-1");
    store.create_experiment(&e, "test").await.unwrap();
    let by_key = store
        .get_experiment(&Scope::default(), "checkout")
        .await
        .unwrap();
    assert_eq!(by_key.as_ref(), Some(&e));
    let by_id = store
        .get_experiment(&Scope::default(), "exp-1")
        .await
        .unwrap();
    assert_eq!(by_id.as_ref(), Some(&e));
    let other_env = store
        .get_experiment(&Scope::global("staging"), "checkout")
        .await
        .unwrap();
    assert_eq!(
        other_env, None,
        "keys resolve only within their own environment"
    );
    assert_eq!(
        store
            .get_experiment(&Scope::default(), "nope")
            .await
            .unwrap(),
        None
    );
}

pub async fn experiment_keys_are_unique_within_environment_and_organization(store: DynStore) {
    let prod = Scope::default();
    let acme = Scope::new("production", Some("acme".into()));
    let staging = Scope::global("staging");
    store
        .create_experiment(&experiment(prod.clone(), "k", "e1"), "test")
        .await
        .unwrap();
    let dup = store
        .create_experiment(&experiment(prod.clone(), "k", "e2"), "test")
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // The same key in another organization or environment is another experiment.
    store
        .create_experiment(&experiment(acme.clone(), "k", "e3"), "test")
        .await
        .unwrap();
    store
        .create_experiment(&experiment(staging.clone(), "k", "e4"), "test")
        .await
        .unwrap();
    let dup_org = store
        .create_experiment(&experiment(acme.clone(), "k", "e5"), "test")
        .await;
    assert!(
        matches!(dup_org, Err(StoreError::Conflict(_))),
        "{dup_org:?}"
    );
    assert_eq!(
        store.get_experiment(&acme, "k").await.unwrap().unwrap().id,
        "e3"
    );
    assert_eq!(
        store.get_experiment(&prod, "k").await.unwrap().unwrap().id,
        "e1"
    );
    assert_eq!(
        store
            .get_experiment(&staging, "k")
            .await
            .unwrap()
            .unwrap()
            .id,
        "e4"
    );
}

pub async fn experiments_list_with_filters_and_pagination(store: DynStore) {
    for i in 0..7 {
        let scope = if i % 2 == 0 {
            Scope::default()
        } else {
            Scope::global("staging")
        };
        store
            .create_experiment(
                &experiment(scope, &format!("k{i}"), &format!("e{i}")),
                "test",
            )
            .await
            .unwrap();
    }
    store
        .transition_status(&StatusChange {
            experiment_id: "e2".into(),
            from: Status::Draft,
            to: Status::Running,
            at: T0,
            actor: "test".into(),
        })
        .await
        .unwrap()
        .expect("transition applies");

    let all = store
        .list_experiments(
            &ExperimentFilter::default(),
            PageRequest {
                page: 1,
                page_size: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(all.total, 7);
    assert_eq!(
        all.items.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["k0", "k1", "k2", "k3", "k4"]
    );
    let page2 = store
        .list_experiments(
            &ExperimentFilter::default(),
            PageRequest {
                page: 2,
                page_size: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page2
            .items
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["k5", "k6"]
    );
    let beyond = store
        .list_experiments(
            &ExperimentFilter::default(),
            PageRequest {
                page: 9,
                page_size: 5,
            },
        )
        .await
        .unwrap();
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 7);

    let prod = ExperimentFilter {
        environment: Some("production".into()),
        ..Default::default()
    };
    let prod = store
        .list_experiments(&prod, PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(prod.total, 4);
    let running = ExperimentFilter {
        status: Some(Status::Running),
        ..Default::default()
    };
    let running = store
        .list_experiments(&running, PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(
        running
            .items
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["k2"]
    );
    let org = ExperimentFilter {
        organization: Some(Some("acme".into())),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_experiments(&org, PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        0
    );
}

pub async fn listing_all_experiments_reads_every_page(store: DynStore) {
    // Two full pages of 100 and one more; and one in another environment.
    for i in 0..201 {
        store
            .create_experiment(
                &experiment(Scope::default(), &format!("k{i:03}"), &format!("e{i:03}")),
                "test",
            )
            .await
            .unwrap();
    }
    store
        .create_experiment(&experiment(Scope::global("staging"), "s", "s1"), "test")
        .await
        .unwrap();
    let prod = ExperimentFilter {
        environment: Some("production".into()),
        ..Default::default()
    };
    let mut keys: Vec<String> = store
        .list_all_experiments(&prod)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys.len(), 201);
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys,
        (0..201).map(|i| format!("k{i:03}")).collect::<Vec<_>>()
    );
    let everything = store
        .list_all_experiments(&ExperimentFilter::default())
        .await
        .unwrap();
    assert_eq!(everything.len(), 202);
}

pub async fn update_succeeds_on_the_current_version_and_conflicts_on_a_stale_one(store: DynStore) {
    let e = experiment(Scope::default(), "k", "e1");
    store.create_experiment(&e, "test").await.unwrap();
    let mut edit = e.clone();
    edit.name = "Renamed".into();
    let stored = store.update_experiment(&edit, "test").await.unwrap();
    assert_eq!(stored.version, e.version + 1);
    assert_eq!(stored.name, "Renamed");
    let reread = store
        .get_experiment(&Scope::default(), "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reread, stored);

    let mut stale = e.clone();
    stale.name = "Lost update".into();
    match store.update_experiment(&stale, "test").await {
        Err(StoreError::VersionConflict { expected, actual }) => {
            assert_eq!((expected, actual), (e.version, e.version + 1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let mut ghost = e.clone();
    ghost.id = "missing".into();
    assert!(matches!(
        store.update_experiment(&ghost, "test").await,
        Err(StoreError::NotFound)
    ));
    // An update cannot change the status: that is the compare-and-set's job.
    let mut sneaky = stored.clone();
    sneaky.status = Status::Running;
    assert_eq!(
        store
            .update_experiment(&sneaky, "test")
            .await
            .unwrap()
            .status,
        Status::Draft
    );
}

pub async fn status_compare_and_set_applies_only_from_the_expected_status(store: DynStore) {
    let e = experiment(Scope::default(), "k", "e1");
    store.create_experiment(&e, "test").await.unwrap();
    let at = T0 + time::Duration::hours(1);
    let change = StatusChange {
        experiment_id: "e1".into(),
        from: Status::Draft,
        to: Status::Running,
        at,
        actor: "alice".into(),
    };
    let running = store
        .transition_status(&change)
        .await
        .unwrap()
        .expect("applies once");
    assert_eq!(running.status, Status::Running);
    assert_eq!(running.started_at, Some(at));
    assert_eq!(running.version, e.version + 1);
    assert_eq!(
        store.transition_status(&change).await.unwrap(),
        None,
        "from no longer holds"
    );

    let done = store
        .transition_status(&StatusChange {
            from: Status::Running,
            to: Status::Completed,
            ..change
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.completed_at, Some(at));
    assert_eq!(done.started_at, Some(at));

    let audit = store.list_audit("e1", PageRequest::DEFAULT).await.unwrap();
    assert_eq!(audit.total, 3);
    assert_eq!(audit.items[2].action, "created");
    assert_eq!(
        audit.items[0].details,
        json!({"from": "running", "to": "completed"})
    );
    assert_eq!(
        audit.items[1].details,
        json!({"from": "draft", "to": "running"})
    );
    assert_eq!(audit.items[1].actor, "alice");
    assert!(audit.items[0].id > audit.items[1].id, "newest first");

    let missing = StatusChange {
        experiment_id: "nope".into(),
        from: Status::Draft,
        to: Status::Running,
        at,
        actor: "a".into(),
    };
    assert!(matches!(
        store.transition_status(&missing).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn fifty_concurrent_activations_produce_exactly_one_transition(store: DynStore) {
    store
        .create_experiment(&experiment(Scope::default(), "k", "e1"), "test")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .transition_status(&StatusChange {
                        experiment_id: "e1".into(),
                        from: Status::Draft,
                        to: Status::Running,
                        at: T0,
                        actor: format!("caller-{i}"),
                    })
                    .await
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let outbox = store.list_outbox(PageRequest::DEFAULT).await.unwrap();
    assert_eq!(outbox.total, 1, "one transition, one message");
    let e = store
        .get_experiment(&Scope::default(), "e1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, Status::Running);
    assert_eq!(e.version, 2);
    let audit = store.list_audit("e1", PageRequest::DEFAULT).await.unwrap();
    let transitions = audit
        .items
        .iter()
        .filter(|a| a.action == "status_changed")
        .count();
    assert_eq!(transitions, 1);
}

pub async fn assignment_get_or_create_keeps_the_first_assignment(store: DynStore) {
    assert_eq!(store.get_assignment("e1", "alice").await.unwrap(), None);
    let first = Assignment {
        experiment_id: "e1".into(),
        subject: "alice".into(),
        variant: "control".into(),
        assigned_at: T0,
    };
    let (stored, created) = store.get_or_create_assignment(&first).await.unwrap();
    assert!(created);
    assert_eq!(stored, first);
    let later = Assignment {
        variant: "treatment".into(),
        assigned_at: T0 + time::Duration::days(1),
        ..first.clone()
    };
    let (stored, created) = store.get_or_create_assignment(&later).await.unwrap();
    assert!(!created);
    assert_eq!(stored, first, "the first assignment wins");
    assert_eq!(
        store.get_assignment("e1", "alice").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.get_assignment("e2", "alice").await.unwrap(), None);
    assert_eq!(
        store.subject_state("e1", "alice").await.unwrap(),
        crate::SubjectRecord {
            forced: None,
            assignment: Some(first.clone())
        }
    );
    // What a creating call answers is what later reads give (stored to the millisecond).
    let precise = Assignment {
        subject: "bob".into(),
        assigned_at: T0 + time::Duration::nanoseconds(1_234_567),
        ..first.clone()
    };
    let (created_answer, created) = store.get_or_create_assignment(&precise).await.unwrap();
    assert!(created);
    assert_eq!(
        Some(created_answer),
        store.get_assignment("e1", "bob").await.unwrap()
    );
}

pub async fn fifty_concurrent_get_or_create_calls_return_one_identical_assignment(store: DynStore) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let variant = if i % 2 == 0 { "control" } else { "treatment" };
                store
                    .get_or_create_assignment(&Assignment {
                        experiment_id: "e1".into(),
                        subject: "bob".into(),
                        variant: variant.into(),
                        assigned_at: T0 + time::Duration::milliseconds(i),
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let distinct: HashSet<_> = results
        .iter()
        .map(|(a, _)| (a.variant.clone(), a.assigned_at))
        .collect();
    assert_eq!(
        distinct.len(),
        1,
        "every caller sees the same assignment: {distinct:?}"
    );
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
        })
        .await
        .unwrap();
}

pub async fn a_batch_with_duplicate_event_ids_stores_each_once_and_reports_duplicates(
    store: DynStore,
) {
    assign(&store, "e1", "s1", "control", 0).await;
    assign(&store, "e1", "s2", "treatment", 0).await;
    let batch = vec![
        event("e1", "a", "s1", 0),
        event("e1", "b", "s1", 1),
        event("e1", "a", "s1", 2), // duplicate within the batch
        event("e1", "c", "s2", 3),
    ];
    let outcomes = store.append_events(batch.clone()).await.unwrap();
    use AppendOutcome::*;
    assert_eq!(outcomes, [Accepted, Accepted, Duplicate, Accepted]);
    let again = vec![event("e1", "c", "s2", 3), event("e1", "d", "s2", 4)];
    assert_eq!(
        store.append_events(again.clone()).await.unwrap(),
        [Duplicate, Accepted]
    );
    let stored = store.scan_events(0, 100).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    let first = &stored[0];
    assert_eq!(
        (
            first.subject.as_str(),
            first.variant.as_str(),
            first.value,
            first.ts,
            first.received_at
        ),
        ("s1", "control", 1.5, batch[0].ts, batch[0].received_at),
        "the first copy is the one kept, field for field"
    );
    assert_eq!(first.meta, batch[0].meta);
    assert_eq!(
        stored[3].variant, "treatment",
        "the variant is the stored assignment's"
    );
    assert!(store.append_events(Vec::new()).await.unwrap().is_empty());
}

pub async fn events_are_attributed_to_the_stored_assignment_or_rejected(store: DynStore) {
    assign(&store, "e1", "s1", "treatment", 0).await;
    let mut claimed_right = event("e1", "ok", "s1", 0);
    claimed_right.variant = Some("treatment".into());
    let mut claimed_wrong = event("e1", "wrong", "s1", 0);
    claimed_wrong.variant = Some("control".into());
    let stranger = event("e1", "stranger", "nobody", 0);
    use AppendOutcome::*;
    let outcomes = store
        .append_events(vec![claimed_right, claimed_wrong, stranger])
        .await
        .unwrap();
    assert_eq!(outcomes, [Accepted, VariantMismatch, NotInExperiment]);
    let stored = store.scan_events(0, 10).await.unwrap();
    assert_eq!(stored.len(), 1, "rejected events are not written");
    assert_eq!(stored[0].event_id, "ok");
}

pub async fn events_are_scanned_in_ingestion_order_from_a_watermark(store: DynStore) {
    for s in 0..7 {
        assign(&store, "e1", &format!("s{s}"), "control", 0).await;
    }
    for chunk in 0..5 {
        let batch: Vec<_> = (0..20)
            .map(|i| {
                let n = chunk * 20 + i;
                // Client timestamps deliberately out of order: scans follow ingestion.
                event("e1", &format!("ev{n}"), &format!("s{}", n % 7), 1000 - n)
            })
            .collect();
        store.append_events(batch.clone()).await.unwrap();
    }
    let first = store.scan_events(0, 30).await.unwrap();
    assert_eq!(first.len(), 30);
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    let watermark = first.last().unwrap().seq;
    let rest = store.scan_events(watermark, 1000).await.unwrap();
    assert_eq!(rest.len(), 70);
    // "No limit" is a limit too: usize::MAX must not wrap to a negative driver limit.
    assert_eq!(store.scan_events(0, usize::MAX).await.unwrap().len(), 100);
    assert!(rest.iter().all(|r| r.seq > watermark));
    let ids: Vec<_> = first
        .iter()
        .chain(rest.iter())
        .map(|r| r.event_id.clone())
        .collect();
    let expected: Vec<_> = (0..100).map(|n| format!("ev{n}")).collect();
    assert_eq!(ids, expected);
    assert!(
        store
            .scan_events(rest.last().unwrap().seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn event_ids_are_scoped_to_their_experiment(store: DynStore) {
    assign(&store, "e1", "s", "control", 0).await;
    assign(&store, "e2", "s", "control", 0).await;
    let outcomes = store
        .append_events(vec![
            event("e1", "same", "s", 0),
            event("e2", "same", "s", 0),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [AppendOutcome::Accepted, AppendOutcome::Accepted]);
    assert_eq!(store.scan_events(0, 10).await.unwrap().len(), 2);
}

pub async fn concurrent_batches_with_overlapping_ids_store_each_event_once(store: DynStore) {
    for s in 0..5 {
        assign(&store, "e1", &format!("s{s}"), "control", 0).await;
    }
    let tasks: Vec<_> = (0..10)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                // Every task sends ids 0..50 (in a task-specific order) plus 5 of its own.
                let mut batch: Vec<_> = (0..50)
                    .map(|i| {
                        event(
                            "e1",
                            &format!("shared-{}", (i * 7 + t) % 50),
                            &format!("s{}", i % 5),
                            i,
                        )
                    })
                    .collect();
                batch.extend((0..5).map(|i| event("e1", &format!("own-{t}-{i}"), "s0", i)));
                store.append_events(batch).await.unwrap()
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t
            .await
            .unwrap()
            .iter()
            .filter(|o| **o == AppendOutcome::Accepted)
            .count();
    }
    assert_eq!(
        accepted,
        50 + 10 * 5,
        "each shared id accepted exactly once"
    );
    assert_eq!(store.scan_events(0, 1000).await.unwrap().len(), 100);
}

pub async fn variant_counts_count_subjects_and_only_events_after_assignment(store: DynStore) {
    // s1, s2 in control (assigned at t=100 s); s3 in treatment; s4 in treatment, no events.
    for (s, v) in [
        ("s1", "control"),
        ("s2", "control"),
        ("s3", "treatment"),
        ("s4", "treatment"),
    ] {
        assign(&store, "e1", s, v, 100).await;
    }
    let mut batch = vec![
        event("e1", "1", "s1", 50), // before assignment: kept, not counted
        event("e1", "2", "s1", 150),
        event("e1", "3", "s1", 160),
        event("e1", "4", "s3", 200),
    ];
    batch[3].value = 4.0;
    let mut other = event("e1", "5", "s2", 300);
    other.event = "exposure".into();
    batch.push(other);
    store.append_events(batch.clone()).await.unwrap();
    assert_eq!(store.scan_events(0, 10).await.unwrap().len(), 5);

    let counts = store
        .variant_counts("e1", "conversion", &Attribution::default())
        .await
        .unwrap();
    assert_eq!(counts.len(), 2);
    let control = &counts[0];
    assert_eq!(control.variant, "control");
    assert_eq!(
        (control.subjects, control.converted_subjects, control.events),
        (2, 1, 2)
    );
    assert!((control.sum - 3.0).abs() < 1e-12 && (control.sum_of_squares - 9.0).abs() < 1e-12);
    let treatment = &counts[1];
    assert_eq!(
        (
            treatment.subjects,
            treatment.converted_subjects,
            treatment.events
        ),
        (2, 1, 1)
    );
    assert!((treatment.sum - 4.0).abs() < 1e-12 && (treatment.sum_of_squares - 16.0).abs() < 1e-12);

    let window = crate::model::TimeRange {
        from: Some(T0 + time::Duration::seconds(155)),
        to: Some(T0 + time::Duration::seconds(200)),
    };
    let counts = store
        .variant_counts("e1", "conversion", &Attribution::in_range(window))
        .await
        .unwrap();
    assert_eq!(
        (counts[0].events, counts[1].events),
        (1, 0),
        "[from, to) is half-open"
    );
    let exposures = store
        .variant_counts("e1", "exposure", &Attribution::default())
        .await
        .unwrap();
    assert_eq!(
        (
            exposures[0].converted_subjects,
            exposures[1].converted_subjects
        ),
        (1, 0)
    );
}

pub async fn variant_counts_apply_an_exposure_event_and_a_window(store: DynStore) {
    // Everyone assigned at t=100 s; conversions are worth 1.5 unless said otherwise.
    for (s, v) in [
        ("s1", "control"),
        ("s2", "control"),
        ("s3", "treatment"),
        ("s4", "treatment"),
        ("s5", "treatment"),
    ] {
        assign(&store, "e1", s, v, 100).await;
    }
    let exposure = |id: &str, subject: &str, at_s: i64| {
        let mut e = event("e1", id, subject, at_s);
        e.event = "exposure".into();
        e
    };
    let mut worth_4 = event("e1", "c6", "s3", 210);
    worth_4.value = 4.0;
    let batch = vec![
        // s1: exposed at 130 (and again at 500); converts at 120, 150, 189 and 190.
        exposure("x1", "s1", 130),
        exposure("x2", "s1", 500),
        event("e1", "c1", "s1", 120),
        event("e1", "c2", "s1", 150),
        event("e1", "c3", "s1", 189),
        event("e1", "c4", "s1", 190),
        // s2: never exposed; converts at 150.
        event("e1", "c5", "s2", 150),
        // s3: an exposure before its assignment (ignored), then at 200; converts at 210, 300.
        exposure("x3", "s3", 90),
        exposure("x4", "s3", 200),
        worth_4,
        event("e1", "c7", "s3", 300),
        // s4: exposed at its assignment, never converts. s5: nothing.
        exposure("x5", "s4", 100),
    ];
    store.append_events(batch).await.unwrap();
    let figures = |c: &[VariantCounts]| -> Vec<(String, u64, u64, u64, f64, f64)> {
        c.iter()
            .map(|c| {
                (
                    c.variant.clone(),
                    c.subjects,
                    c.converted_subjects,
                    c.events,
                    c.sum,
                    c.sum_of_squares,
                )
            })
            .collect()
    };
    let count = |attribution: Attribution| {
        let store = store.clone();
        async move {
            figures(
                &store
                    .variant_counts("e1", "conversion", &attribution)
                    .await
                    .unwrap(),
            )
        }
    };
    let minute = Some(time::Duration::seconds(60));
    let exposed = Some("exposure".to_owned());
    let row = |v: &str, n: u64, conv: u64, events: u64, sum: f64| {
        (v.to_owned(), n, conv, events, sum, sum * sum)
    };

    // A 60 s window from the assignment: [100, 160).
    let windowed = Attribution {
        window: minute,
        ..Attribution::default()
    };
    assert_eq!(
        count(windowed).await,
        vec![
            ("control".to_owned(), 2, 2, 3, 4.5, 3.0 * 3.0 + 1.5 * 1.5),
            row("treatment", 3, 0, 0, 0.0),
        ],
        "window from the assignment"
    );
    // Only exposed subjects, from their first exposure: s1 from 130, s3 from 200, s4.
    let from_exposure = Attribution {
        exposure_event: exposed.clone(),
        ..Attribution::default()
    };
    assert_eq!(
        count(from_exposure).await,
        vec![row("control", 1, 1, 3, 4.5), row("treatment", 2, 1, 2, 5.5)],
        "exposed population from the first exposure"
    );
    // Both: s1's 150 and 189 are inside [130, 190), 190 is not; s3's 210 is inside
    // [200, 260).
    let both = Attribution {
        exposure_event: exposed.clone(),
        window: minute,
        ..Attribution::default()
    };
    assert_eq!(
        count(both).await,
        vec![row("control", 1, 1, 2, 3.0), row("treatment", 2, 1, 1, 4.0)],
        "exposed population within the window"
    );
    // With a range too: only s1's events from 180 on.
    let ranged = Attribution {
        range: crate::model::TimeRange {
            from: Some(T0 + time::Duration::seconds(180)),
            to: None,
        },
        exposure_event: exposed,
        window: None,
    };
    assert_eq!(
        count(ranged).await,
        vec![row("control", 1, 1, 2, 3.0), row("treatment", 2, 1, 2, 5.5)],
        "range on top of the exposure"
    );
}

pub async fn forced_variants_are_set_replaced_and_cleared(store: DynStore) {
    assert_eq!(store.get_forced_variant("e1", "qa").await.unwrap(), None);
    assert!(!store.has_forced_variants("e1").await.unwrap());
    store
        .set_forced_variant("e1", "qa", Some("treatment"), "alice")
        .await
        .unwrap();
    assert!(store.has_forced_variants("e1").await.unwrap());
    // Another experiment's overrides are its own.
    assert!(!store.has_forced_variants("e2").await.unwrap());
    let state = store.subject_state("e1", "qa").await.unwrap();
    assert_eq!(state.forced.as_deref(), Some("treatment"));
    assert_eq!(state.assignment, None);
    store
        .set_forced_variant("e1", "qa", Some("control"), "alice")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_forced_variant("e1", "qa")
            .await
            .unwrap()
            .as_deref(),
        Some("control")
    );
    store
        .set_forced_variant("e1", "qa", None, "alice")
        .await
        .unwrap();
    assert_eq!(store.get_forced_variant("e1", "qa").await.unwrap(), None);
    assert!(!store.has_forced_variants("e1").await.unwrap());
    assert_eq!(
        store
            .list_audit("e1", PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        3
    );
}

pub async fn a_winner_is_recorded_with_completion_and_audit(store: DynStore) {
    store
        .create_experiment(&experiment(Scope::default(), "k", "e1"), "test")
        .await
        .unwrap();
    store
        .transition_status(&StatusChange {
            experiment_id: "e1".into(),
            from: Status::Draft,
            to: Status::Running,
            at: T0,
            actor: "test".into(),
        })
        .await
        .unwrap()
        .unwrap();
    let winner = verdict_domain::Winner {
        variant: "treatment".into(),
        decided_at: T0 + time::Duration::hours(2),
        source: verdict_domain::PolicyMode::Manual,
        details: json!({"reason": "override"}),
    };
    let change = crate::model::WinnerChange {
        experiment_id: "e1".into(),
        winner: winner.clone(),
        complete: true,
        actor: "bob".into(),
        expected_version: None,
    };
    let stale = crate::model::WinnerChange {
        expected_version: Some(1),
        ..change.clone()
    };
    assert!(
        matches!(
            store.set_winner(&stale).await,
            Err(StoreError::VersionConflict {
                expected: 1,
                actual: 2
            })
        ),
        "an automatic decision on a stale read must not apply"
    );
    let e = store.set_winner(&change).await.unwrap();
    assert_eq!(e.status, Status::Completed);
    assert_eq!(e.winner.as_ref(), Some(&winner));
    assert_eq!(e.completed_at, Some(winner.decided_at));
    let reread = store
        .get_experiment(&Scope::default(), "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reread, e);
    let audit = store.list_audit("e1", PageRequest::DEFAULT).await.unwrap();
    let actions: Vec<_> = audit.items.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        ["status_changed", "winner_set", "status_changed", "created"]
    );
    let missing = crate::model::WinnerChange {
        experiment_id: "nope".into(),
        ..change
    };
    assert!(matches!(
        store.set_winner(&missing).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn environments_are_unique_and_listed_in_creation_order(store: DynStore) {
    for key in ["production", "staging", "dev"] {
        let env = verdict_domain::Environment {
            key: key.into(),
            name: key.to_uppercase(),
            description: String::new(),
            created_at: T0,
        };
        store.create_environment(&env).await.unwrap();
    }
    let dup = verdict_domain::Environment {
        key: "staging".into(),
        name: "again".into(),
        description: String::new(),
        created_at: T0,
    };
    assert!(matches!(
        store.create_environment(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    let page = store
        .list_environments(PageRequest {
            page: 1,
            page_size: 2,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(
        page.items
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["production", "staging"]
    );
    assert_eq!(
        store.get_environment("dev").await.unwrap().unwrap().name,
        "DEV"
    );
    assert_eq!(store.get_environment("nope").await.unwrap(), None);
}

pub async fn an_audience_used_by_a_running_experiment_cannot_be_deleted(store: DynStore) {
    let audience = verdict_domain::Audience {
        environment: "production".into(),
        key: "pros".into(),
        name: "Pro plan".into(),
        rules: serde_json::from_value(json!([
            {"conditions": [{"attribute": "plan", "operator": "eq", "value": "pro"}]}
        ]))
        .unwrap(),
        created_at: T0,
        updated_at: T0,
    };
    store.create_audience(&audience).await.unwrap();
    assert!(matches!(
        store.create_audience(&audience).await,
        Err(StoreError::Conflict(_))
    ));
    let mut renamed = audience.clone();
    renamed.name = "Pros".into();
    renamed.created_at = T0 + time::Duration::days(9);
    let stored = store.update_audience(&renamed).await.unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.created_at),
        ("Pros", T0),
        "created_at is kept"
    );
    assert_eq!(
        store
            .list_audiences("production", PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        store
            .list_audiences("staging", PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        0
    );

    let mut e = experiment(Scope::default(), "uses-pros", "e1");
    e.audience = Some("pros".into());
    store.create_experiment(&e, "test").await.unwrap();
    // A draft does not hold the audience...
    let activate = StatusChange {
        experiment_id: "e1".into(),
        from: Status::Draft,
        to: Status::Running,
        at: T0,
        actor: "test".into(),
    };
    store.transition_status(&activate).await.unwrap().unwrap();
    // ...a running experiment does.
    assert_eq!(
        store.delete_audience("production", "pros").await.unwrap(),
        crate::model::AudienceDeletion::InUse(vec!["uses-pros".into()])
    );
    store
        .transition_status(&StatusChange {
            from: Status::Running,
            to: Status::Paused,
            ..activate
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.delete_audience("production", "pros").await.unwrap(),
        crate::model::AudienceDeletion::Deleted
    );
    assert_eq!(
        store.delete_audience("production", "pros").await.unwrap(),
        crate::model::AudienceDeletion::NotFound
    );
    let mut ghost = audience;
    ghost.key = "ghost".into();
    assert!(matches!(
        store.update_audience(&ghost).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn api_keys_are_found_by_hash_listed_and_revoked(store: DynStore) {
    let key = verdict_domain::ApiKey {
        id: "key_1".into(),
        name: "app".into(),
        hash: "ab".repeat(32),
        prefix: "vk_abcd".into(),
        scopes: vec![verdict_domain::KeyScope::Client],
        environment: "production".into(),
        organization: Some("acme".into()),
        created_at: T0,
        revoked_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    assert!(matches!(
        store.create_api_key(&key).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_api_key(&"ab".repeat(32)).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.find_api_key(&"cd".repeat(32)).await.unwrap(), None);
    assert_eq!(
        store
            .list_api_keys(PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        1
    );
    assert!(store.revoke_api_key("key_1", T0).await.unwrap());
    assert!(!store.revoke_api_key("key_2", T0).await.unwrap());
    let revoked = store.find_api_key(&"ab".repeat(32)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0));
    assert!(!revoked.allows(verdict_domain::KeyScope::Client));
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

async fn assert_rollups_match_raw(store: &DynStore) {
    for exp in ["e1", "e2"] {
        for ev in ["conversion", "exposure"] {
            let raw = store
                .variant_counts(exp, ev, &Attribution::default())
                .await
                .unwrap();
            let rolled = store.rolled_up_counts(exp, ev).await.unwrap();
            assert_eq!(
                rolled, raw,
                "{exp}/{ev}: rollups must equal the raw computation"
            );
            for g in [crate::Granularity::Hour, crate::Granularity::Day] {
                let buckets = store
                    .buckets(exp, ev, g, crate::model::TimeRange::default())
                    .await
                    .unwrap();
                let bucket_events: u64 = buckets.iter().map(|b| b.count).sum();
                let bucket_sum: f64 = buckets.iter().map(|b| b.sum).sum();
                let raw_events: u64 = raw.iter().map(|r| r.events).sum();
                let raw_sum: f64 = raw.iter().map(|r| r.sum).sum();
                assert_eq!(bucket_events, raw_events, "{exp}/{ev}/{g:?} bucket counts");
                assert!(
                    (bucket_sum - raw_sum).abs() < 1e-9,
                    "{exp}/{ev}/{g:?} bucket sums"
                );
                assert!(
                    buckets
                        .iter()
                        .all(|b| b.start.unix_timestamp() % (g.millis() / 1000) == 0)
                );
            }
        }
    }
}

pub async fn rollup_matches_raw_counts_and_running_it_again_changes_nothing(store: DynStore) {
    rollup_fixture(&store, "a", 30).await;
    let report = store.rollup(10_000).await.unwrap();
    assert_eq!(report.events, 40);
    assert_eq!(
        report.watermark,
        store.scan_events(0, 100).await.unwrap().last().unwrap().seq
    );
    assert!(report.buckets_written > 0 && report.subjects_written > 0);
    assert_eq!(store.rollup_watermark().await.unwrap(), report.watermark);
    assert_rollups_match_raw(&store).await;
    let e1 = store.rolled_up_counts("e1", "conversion").await.unwrap();
    assert!(
        e1.iter().any(|c| c.events > 0),
        "the fixture has counted conversions"
    );

    let again = store.rollup(10_000).await.unwrap();
    assert_eq!(
        again,
        crate::RollupReport {
            watermark: report.watermark,
            ..Default::default()
        }
    );
    assert_rollups_match_raw(&store).await;
    let hours = store
        .buckets(
            "e1",
            "conversion",
            crate::Granularity::Hour,
            crate::model::TimeRange::default(),
        )
        .await
        .unwrap();
    let days = store
        .buckets(
            "e1",
            "conversion",
            crate::Granularity::Day,
            crate::model::TimeRange::default(),
        )
        .await
        .unwrap();
    assert!(
        hours.len() > days.len(),
        "30 hours of events span more hour buckets than days"
    );
}

pub async fn rollup_in_small_steps_equals_one_step_and_folds_late_events(store: DynStore) {
    rollup_fixture(&store, "a", 50).await;
    let mut steps = 0;
    loop {
        let r = store.rollup(3).await.unwrap();
        if r.events == 0 {
            break;
        }
        assert!(r.events <= 3);
        steps += 1;
    }
    assert_eq!(steps, 14, "40 events in steps of at most 3");
    assert_rollups_match_raw(&store).await;
    // Late events: timestamps inside buckets that were already rolled up.
    let late: Vec<_> = (0..6)
        .map(|i| {
            event(
                "e1",
                &format!("late{i}"),
                if i % 2 == 0 { "s3" } else { "s4" },
                3600 + i * 60,
            )
        })
        .collect();
    store.append_events(late).await.unwrap();
    let before = store.rolled_up_counts("e1", "conversion").await.unwrap();
    let r = store.rollup(1000).await.unwrap();
    assert_eq!(r.events, 6);
    assert_ne!(
        store.rolled_up_counts("e1", "conversion").await.unwrap(),
        before
    );
    assert_rollups_match_raw(&store).await;
}

pub async fn evaluation_state_round_trips(store: DynStore) {
    assert_eq!(store.get_evaluation_state("e1").await.unwrap(), None);
    store
        .put_evaluation_state("e1", &json!({"max_log_lambda": 1.5}))
        .await
        .unwrap();
    store
        .put_evaluation_state("e1", &json!({"max_log_lambda": 2.5}))
        .await
        .unwrap();
    assert_eq!(
        store.get_evaluation_state("e1").await.unwrap(),
        Some(json!({"max_log_lambda": 2.5}))
    );
    assert_eq!(store.get_evaluation_state("e2").await.unwrap(), None);
}

pub async fn changes_write_their_outbox_messages_exactly_once(store: DynStore) {
    use verdict_domain::EventType;
    let types = |page: &Page<verdict_domain::OutboxMessage>| -> Vec<(String, EventType)> {
        page.items
            .iter()
            .map(|m| (m.id.clone(), m.event_type))
            .collect()
    };
    store
        .create_experiment(&experiment(Scope::default(), "k", "e1"), "test")
        .await
        .unwrap();
    assert_eq!(
        store.list_outbox(PageRequest::DEFAULT).await.unwrap().total,
        0
    );
    let start = StatusChange {
        experiment_id: "e1".into(),
        from: Status::Draft,
        to: Status::Running,
        at: T0,
        actor: "test".into(),
    };
    store.transition_status(&start).await.unwrap().unwrap();
    // A compare-and-set that does not apply writes nothing.
    assert_eq!(store.transition_status(&start).await.unwrap(), None);
    let winner = |variant: &str, hours: i64| verdict_domain::Winner {
        variant: variant.into(),
        decided_at: T0 + time::Duration::hours(hours),
        source: verdict_domain::PolicyMode::Automatic,
        details: json!({"p_best": 0.99}),
    };
    let decide = crate::model::WinnerChange {
        experiment_id: "e1".into(),
        winner: winner("treatment", 1),
        complete: true,
        actor: "evaluator".into(),
        expected_version: Some(2),
    };
    store.set_winner(&decide).await.unwrap();
    // A stale decision is refused and announces nothing.
    assert!(store.set_winner(&decide).await.is_err());
    // The same winner again (a manual confirmation) changes no winner: nothing to announce.
    store
        .set_winner(&crate::model::WinnerChange {
            winner: winner("treatment", 2),
            expected_version: None,
            ..decide.clone()
        })
        .await
        .unwrap();
    // A different winner is announced; the experiment stays completed.
    store
        .set_winner(&crate::model::WinnerChange {
            winner: winner("control", 3),
            expected_version: None,
            ..decide.clone()
        })
        .await
        .unwrap();
    let outbox = store.list_outbox(PageRequest::DEFAULT).await.unwrap();
    assert_eq!(
        types(&outbox),
        [
            ("msg_e1_v2_status".to_owned(), EventType::StatusChanged),
            ("msg_e1_v3_winner".to_owned(), EventType::WinnerChanged),
            ("msg_e1_v3_status".to_owned(), EventType::StatusChanged),
            ("msg_e1_v5_winner".to_owned(), EventType::WinnerChanged),
        ]
    );
    assert_eq!(outbox.total, 4);
    let decision = &outbox.items[1];
    assert_eq!(decision.data["winner"], "treatment");
    assert_eq!(decision.data["previous_winner"], Value::Null);
    assert_eq!(decision.data["details"]["p_best"], 0.99);
    assert_eq!(decision.environment, "production");
    assert_eq!(outbox.items[2].data["status"], "completed");
    assert_eq!(outbox.items[3].data["previous_winner"], "treatment");
    let second = store
        .list_outbox(PageRequest {
            page: 2,
            page_size: 3,
        })
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].id, "msg_e1_v5_winner");
}
