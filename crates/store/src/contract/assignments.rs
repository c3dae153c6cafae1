//! Contract tests of [`crate::AssignmentStore`]: get-or-create under concurrency and QA
//! overrides; an assignment with its exposure.

use std::collections::HashSet;

use time::OffsetDateTime;
use verdict_domain::Assignment;

use super::T0;
use crate::DynStore;
use crate::model::PageRequest;

pub async fn assignment_get_or_create_keeps_the_first_assignment(store: DynStore) {
    assert_eq!(store.get_assignment("e1", "alice").await.unwrap(), None);
    let first = Assignment {
        experiment_id: "e1".into(),
        subject: "alice".into(),
        variant: "control".into(),
        assigned_at: T0,
        context: None,
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
                        context: None,
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

pub async fn forced_variants_are_set_replaced_and_cleared(store: DynStore) {
    assert_eq!(store.get_forced_variant("e1", "qa").await.unwrap(), None);
    assert!(!store.has_forced_variants("e1").await.unwrap());
    store
        .set_forced_variant("e1", "qa", Some("treatment"), "alice")
        .await
        .unwrap();
    assert!(store.has_forced_variants("e1").await.unwrap());
    store
        .set_forced_variant("e1", "ann", Some("control"), "alice")
        .await
        .unwrap();
    store
        .set_forced_variant("e2", "bob", Some("control"), "alice")
        .await
        .unwrap();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(s, v)| (s.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        store.forced_variants("e1", 10).await.unwrap(),
        pairs(&[("ann", "control"), ("qa", "treatment")]),
        "by subject, this experiment's only"
    );
    assert_eq!(
        store.forced_variants("e1", 1).await.unwrap(),
        pairs(&[("ann", "control")])
    );
    store
        .set_forced_variant("e1", "ann", None, "alice")
        .await
        .unwrap();
    store
        .set_forced_variant("e2", "bob", None, "alice")
        .await
        .unwrap();
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
        5
    );
}

pub async fn an_exposed_assignment_stores_its_exposure_once_at_the_stored_time(store: DynStore) {
    let exposure = |id: &str| crate::Exposure {
        event_id: id.into(),
        event: "exposure".into(),
        received_at: T0 + time::Duration::hours(2),
    };
    let first = Assignment {
        experiment_id: "e1".into(),
        subject: "alice".into(),
        variant: "control".into(),
        assigned_at: T0,
        context: None,
    };
    let (stored, created) = store
        .get_or_create_exposed_assignment(&first, &exposure("x-alice"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(stored, first);
    // Again, later, with another variant proposed: the stored one holds, no second event.
    let later = Assignment {
        variant: "treatment".into(),
        assigned_at: T0 + time::Duration::hours(1),
        ..first.clone()
    };
    let (stored, created) = store
        .get_or_create_exposed_assignment(&later, &exposure("x-alice"))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(stored, first);

    // A subject stored without its exposure gets it at its stored time and variant.
    let bob = Assignment {
        subject: "bob".into(),
        variant: "treatment".into(),
        ..first.clone()
    };
    store.get_or_create_assignment(&bob).await.unwrap();
    let (stored, created) = store
        .get_or_create_exposed_assignment(
            &Assignment {
                variant: "control".into(),
                assigned_at: T0 + time::Duration::hours(1),
                ..bob.clone()
            },
            &exposure("x-bob"),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(stored, bob);

    let events = store.scan_events(0, 100).await.unwrap();
    let seen: Vec<(&str, &str, &str, OffsetDateTime)> = events
        .iter()
        .map(|e| {
            (
                e.event_id.as_str(),
                e.subject.as_str(),
                e.variant.as_str(),
                e.ts,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("x-alice", "alice", "control", T0),
            ("x-bob", "bob", "treatment", T0)
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.event == "exposure" && e.value == 1.0)
    );
}
