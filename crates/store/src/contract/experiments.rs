//! Contract tests of [`crate::ExperimentStore`]: experiments, the status compare-and-set,
//! winners, the audit log and the outbox.

use serde_json::{Value, json};
use verdict_domain::{Experiment, Scope, Status};

use super::{T0, experiment};
use crate::model::{ExperimentFilter, Page, PageRequest, StatusChange};
use crate::{DynStore, StoreError};

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
    // An organization's list may take the environment's global experiments with its own,
    // and no other organization's nor environment's.
    store
        .create_experiment(
            &experiment(Scope::new("production", Some("globex".into())), "g", "e6"),
            "test",
        )
        .await
        .unwrap();
    let with_global = ExperimentFilter {
        environment: Some("production".into()),
        organization: Some(Some("acme".into())),
        with_global: true,
        status: None,
        text: None,
    };
    let listed = store
        .list_experiments(&with_global, PageRequest::DEFAULT)
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed.items.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!((ids, listed.total), (vec!["e1", "e3"], 2));
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
    let text = |t: &str| ExperimentFilter {
        text: Some(t.into()),
        ..Default::default()
    };
    let keys =
        |page: Page<Experiment>| -> Vec<String> { page.items.into_iter().map(|e| e.key).collect() };
    assert_eq!(
        keys(
            store
                .list_experiments(&text("K3"), PageRequest::DEFAULT)
                .await
                .unwrap()
        ),
        ["k3"],
        "the key contains it, whatever the case"
    );
    for literal in ["k.", "%", "_", "k*"] {
        assert_eq!(
            store
                .list_experiments(&text(literal), PageRequest::DEFAULT)
                .await
                .unwrap()
                .total,
            0,
            "{literal} is matched literally"
        );
    }
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
    // The decision's figures (or a manual winner's reason) are audited with it.
    assert_eq!(audit.items[1].details["details"], winner.details);
    let missing = crate::model::WinnerChange {
        experiment_id: "nope".into(),
        ..change
    };
    assert!(matches!(
        store.set_winner(&missing).await,
        Err(StoreError::NotFound)
    ));
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

pub async fn changes_of_other_subjects_are_audited(store: DynStore) {
    store
        .record_audit(
            "api_key:key_1",
            "key:bootstrap",
            "api_key.created",
            &serde_json::json!({"roles": ["client"]}),
        )
        .await
        .unwrap();
    store
        .record_audit(
            "api_key:key_1",
            "jwt:alice",
            "api_key.revoked",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    store
        .record_audit(
            "environment:staging",
            "jwt:alice",
            "environment.created",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let audit = store
        .list_audit("api_key:key_1", PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(audit.total, 2);
    let seen: Vec<(&str, &str)> = audit
        .items
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("jwt:alice", "api_key.revoked"),
            ("key:bootstrap", "api_key.created")
        ],
        "newest first"
    );
    assert_eq!(audit.items[1].details["roles"][0], "client");
}

pub async fn threshold_states_are_compared_and_set_with_their_announcements(store: DynStore) {
    use std::collections::BTreeSet;
    use verdict_domain::outbox::threshold_message;
    use verdict_domain::threshold::Crossing;
    use verdict_domain::{EventType, ThresholdState};
    let mut e = experiment(Scope::default(), "k", "e1");
    e.thresholds = vec![
        serde_json::from_value(json!({"metric": e.primary_metric.event, "above": 0.5})).unwrap(),
    ];
    store.create_experiment(&e, "test").await.unwrap();
    assert_eq!(
        store.threshold_state("e1").await.unwrap(),
        ThresholdState::default(),
        "nothing recorded yet"
    );
    let crossing = |variant: &str, number: u64| Crossing {
        threshold: 0,
        variant: variant.into(),
        figure: 0.6,
        subjects: 10,
        number,
    };
    let state = |announced: u64, reached: &[&str]| ThresholdState {
        announced,
        reached: reached
            .iter()
            .map(|r| r.to_string())
            .collect::<BTreeSet<_>>(),
    };
    let message = |c: &Crossing| threshold_message(&e, c, 9, T0).unwrap();
    let first = state(2, &["t/control", "t/treatment"]);
    let announcements = [
        message(&crossing("control", 1)),
        message(&crossing("treatment", 2)),
    ];
    assert!(
        store
            .record_threshold_state("e1", 0, &first, &announcements)
            .await
            .unwrap()
    );
    assert_eq!(store.threshold_state("e1").await.unwrap(), first);
    // A writer that read the state before that write is refused, and writes nothing.
    let stale = state(1, &["t/control"]);
    assert!(
        !store
            .record_threshold_state("e1", 0, &stale, &[message(&crossing("control", 1))])
            .await
            .unwrap()
    );
    assert_eq!(store.threshold_state("e1").await.unwrap(), first);
    // A state without new crossings (a pair re-armed) is stored without messages.
    let rearmed = state(2, &["t/treatment"]);
    assert!(
        store
            .record_threshold_state("e1", 2, &rearmed, &[])
            .await
            .unwrap()
    );
    assert_eq!(store.threshold_state("e1").await.unwrap(), rearmed);
    let outbox = store.list_outbox(PageRequest::DEFAULT).await.unwrap();
    let ids: Vec<_> = outbox.items.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["msg_e1_threshold_1", "msg_e1_threshold_2"]);
    assert!(
        outbox
            .items
            .iter()
            .all(|m| m.event_type == EventType::MetricsThresholdReached)
    );
    assert_eq!(outbox.items[1].data["variant"], "treatment");
    // No experiment, no state.
    assert!(
        !store
            .record_threshold_state("missing", 0, &first, &[])
            .await
            .unwrap()
    );
    assert_eq!(
        store.threshold_state("missing").await.unwrap(),
        ThresholdState::default()
    );
}
