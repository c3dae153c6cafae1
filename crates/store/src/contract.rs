//! The contract every [`Store`] adapter must pass, written once.
//!
//! Each public `async fn` here is one test taking a fresh, empty store. An adapter's test
//! file instantiates all of them with [`store_contract_suite!`](crate::store_contract_suite),
//! giving it a factory that returns a [`TestStore`] (an isolated database per call).

use std::any::Any;
use std::collections::HashSet;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_domain::experiment::Provided;
use verdict_domain::{Assignment, Experiment, ExperimentInput, NewEvent, Scope, Status};

use crate::model::{AppendOutcome, ExperimentFilter, PageRequest, StatusChange};
use crate::{DynStore, StoreError};

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
            update_succeeds_on_the_current_version_and_conflicts_on_a_stale_one,
            status_compare_and_set_applies_only_from_the_expected_status,
            fifty_concurrent_activations_produce_exactly_one_transition,
            assignment_get_or_create_keeps_the_first_assignment,
            fifty_concurrent_get_or_create_calls_return_one_identical_assignment,
            a_batch_with_duplicate_event_ids_stores_each_once_and_reports_duplicates,
            events_are_scanned_in_ingestion_order_from_a_watermark,
            event_ids_are_scoped_to_their_experiment,
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

fn event(experiment_id: &str, event_id: &str, subject: &str, at_s: i64) -> NewEvent {
    NewEvent {
        experiment_id: experiment_id.into(),
        event_id: event_id.into(),
        subject: subject.into(),
        variant: "control".into(),
        event: "conversion".into(),
        value: 1.5,
        ts: T0 + time::Duration::seconds(at_s),
        received_at: T0 + time::Duration::seconds(at_s + 1),
        meta: Some(json!({"source": "contract"})),
    }
}

pub async fn experiment_round_trips_by_key_and_by_id(store: DynStore) {
    let e = experiment(Scope::default(), "checkout", "exp-1");
    store.create_experiment(&e).await.unwrap();
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
        .create_experiment(&experiment(prod.clone(), "k", "e1"))
        .await
        .unwrap();
    let dup = store
        .create_experiment(&experiment(prod.clone(), "k", "e2"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // The same key in another organization or environment is another experiment.
    store
        .create_experiment(&experiment(acme.clone(), "k", "e3"))
        .await
        .unwrap();
    store
        .create_experiment(&experiment(staging.clone(), "k", "e4"))
        .await
        .unwrap();
    let dup_org = store
        .create_experiment(&experiment(acme.clone(), "k", "e5"))
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
            .create_experiment(&experiment(scope, &format!("k{i}"), &format!("e{i}")))
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

pub async fn update_succeeds_on_the_current_version_and_conflicts_on_a_stale_one(store: DynStore) {
    let e = experiment(Scope::default(), "k", "e1");
    store.create_experiment(&e).await.unwrap();
    let mut edit = e.clone();
    edit.name = "Renamed".into();
    let stored = store.update_experiment(&edit).await.unwrap();
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
    match store.update_experiment(&stale).await {
        Err(StoreError::VersionConflict { expected, actual }) => {
            assert_eq!((expected, actual), (e.version, e.version + 1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let mut ghost = e.clone();
    ghost.id = "missing".into();
    assert!(matches!(
        store.update_experiment(&ghost).await,
        Err(StoreError::NotFound)
    ));
    // An update cannot change the status: that is the compare-and-set's job.
    let mut sneaky = stored.clone();
    sneaky.status = Status::Running;
    assert_eq!(
        store.update_experiment(&sneaky).await.unwrap().status,
        Status::Draft
    );
}

pub async fn status_compare_and_set_applies_only_from_the_expected_status(store: DynStore) {
    let e = experiment(Scope::default(), "k", "e1");
    store.create_experiment(&e).await.unwrap();
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
    assert_eq!(audit.total, 2);
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
        .create_experiment(&experiment(Scope::default(), "k", "e1"))
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
    let e = store
        .get_experiment(&Scope::default(), "e1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, Status::Running);
    assert_eq!(e.version, 2);
    assert_eq!(
        store
            .list_audit("e1", PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        1
    );
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

pub async fn a_batch_with_duplicate_event_ids_stores_each_once_and_reports_duplicates(
    store: DynStore,
) {
    let batch = vec![
        event("e1", "a", "s1", 0),
        event("e1", "b", "s1", 1),
        event("e1", "a", "s1", 2), // duplicate within the batch
        event("e1", "c", "s2", 3),
    ];
    let outcomes = store.append_events(&batch).await.unwrap();
    use AppendOutcome::*;
    assert_eq!(outcomes, [Accepted, Accepted, Duplicate, Accepted]);
    let again = vec![event("e1", "c", "s2", 3), event("e1", "d", "s2", 4)];
    assert_eq!(
        store.append_events(&again).await.unwrap(),
        [Duplicate, Accepted]
    );
    let stored = store.scan_events(0, 100).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|r| r.event.event_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(
        stored[0].event, batch[0],
        "the first copy is the one kept, field for field"
    );
    assert!(store.append_events(&[]).await.unwrap().is_empty());
}

pub async fn events_are_scanned_in_ingestion_order_from_a_watermark(store: DynStore) {
    for chunk in 0..5 {
        let batch: Vec<_> = (0..20)
            .map(|i| {
                let n = chunk * 20 + i;
                // Client timestamps deliberately out of order: scans follow ingestion.
                event("e1", &format!("ev{n}"), &format!("s{}", n % 7), 1000 - n)
            })
            .collect();
        store.append_events(&batch).await.unwrap();
    }
    let first = store.scan_events(0, 30).await.unwrap();
    assert_eq!(first.len(), 30);
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    let watermark = first.last().unwrap().seq;
    let rest = store.scan_events(watermark, 1000).await.unwrap();
    assert_eq!(rest.len(), 70);
    assert!(rest.iter().all(|r| r.seq > watermark));
    let ids: Vec<_> = first
        .iter()
        .chain(rest.iter())
        .map(|r| r.event.event_id.clone())
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
    let outcomes = store
        .append_events(&[event("e1", "same", "s", 0), event("e2", "same", "s", 0)])
        .await
        .unwrap();
    assert_eq!(outcomes, [AppendOutcome::Accepted, AppendOutcome::Accepted]);
    assert_eq!(store.scan_events(0, 10).await.unwrap().len(), 2);
}
