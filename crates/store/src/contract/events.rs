//! Contract tests of [`crate::EventStore`]: idempotent batches, attribution, scans in
//! ingestion order, and per-variant figures from raw events.

use crate::model::{AppendOutcome, VariantCounts};
use crate::{Attribution, DynStore};

use super::{T0, assign, event};

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
        .variant_counts("e1", "conversion", &Attribution::default(), None)
        .await
        .unwrap();
    // control: s1 has 2 events worth 3.0 in all, s2 none; treatment: s3 1 event worth 4.0.
    assert_eq!(
        counts,
        [
            VariantCounts {
                variant: "control".into(),
                subjects: 2,
                converted_subjects: 1,
                events: 2,
                sum: 3.0,
                sum_of_squares: 9.0,
                sum_events_squared: 4,
                sum_events_value: 6.0,
            },
            VariantCounts {
                variant: "treatment".into(),
                subjects: 2,
                converted_subjects: 1,
                events: 1,
                sum: 4.0,
                sum_of_squares: 16.0,
                sum_events_squared: 1,
                sum_events_value: 4.0,
            },
        ]
    );

    let window = crate::model::TimeRange {
        from: Some(T0 + time::Duration::seconds(155)),
        to: Some(T0 + time::Duration::seconds(200)),
    };
    let counts = store
        .variant_counts("e1", "conversion", &Attribution::in_range(window), None)
        .await
        .unwrap();
    assert_eq!(
        (counts[0].events, counts[1].events),
        (1, 0),
        "[from, to) is half-open"
    );
    let exposures = store
        .variant_counts("e1", "exposure", &Attribution::default(), None)
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
    let count = |attribution: Attribution| {
        let store = store.clone();
        async move {
            store
                .variant_counts("e1", "conversion", &attribution, None)
                .await
                .unwrap()
        }
    };
    let minute = Some(time::Duration::seconds(60));
    let exposed = Some("exposure".to_owned());
    // A variant whose figures come from at most one converted subject: `events` events
    // worth `sum` in all.
    let row = |v: &str, n: u64, conv: u64, events: u64, sum: f64| VariantCounts {
        variant: v.to_owned(),
        subjects: n,
        converted_subjects: conv,
        events,
        sum,
        sum_of_squares: sum * sum,
        sum_events_squared: events * events,
        sum_events_value: events as f64 * sum,
    };

    // A 60 s window from the assignment: [100, 160). Control: s1 2 events (3.0), s2 1
    // event (1.5).
    let windowed = Attribution {
        window: minute,
        ..Attribution::default()
    };
    assert_eq!(
        count(windowed).await,
        vec![
            VariantCounts {
                variant: "control".to_owned(),
                subjects: 2,
                converted_subjects: 2,
                events: 3,
                sum: 4.5,
                sum_of_squares: 3.0 * 3.0 + 1.5 * 1.5,
                sum_events_squared: 2 * 2 + 1,
                sum_events_value: 2.0 * 3.0 + 1.5,
            },
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
