//! Contract tests of [`crate::RollupStore`]: rollups equal the raw computation, are
//! incremental and idempotent; capped figures and per-subject quantiles are exact on both
//! sources; evaluation state round-trips; evaluation history keeps the latest points in order,
//! expires and is purged with its experiment.

use serde_json::json;

use super::{T0, assign, event, rollup_fixture};
use crate::jobs::RetentionFilter;
use crate::model::{TimeRange, VariantCounts};
use crate::rollup::{ArmPoint, EvaluationPoint};
use crate::{Attribution, DynStore, StoreError};

async fn assert_rollups_match_raw(store: &DynStore) {
    for exp in ["e1", "e2"] {
        // Every event type per variant at once: the raw events per (variant, event).
        let mut want = Vec::new();
        for ev in ["conversion", "exposure"] {
            for c in store
                .variant_counts(exp, ev, &Attribution::default(), None)
                .await
                .unwrap()
            {
                if c.events > 0 {
                    want.push(crate::EventCount {
                        variant: c.variant,
                        event: ev.to_owned(),
                        count: c.events,
                    });
                }
            }
        }
        want.sort_by(|a, b| (&a.variant, &a.event).cmp(&(&b.variant, &b.event)));
        assert!(!want.is_empty(), "{exp}: the fixture has events");
        for g in [crate::Granularity::Hour, crate::Granularity::Day] {
            let counts = store
                .event_counts(exp, g, TimeRange::default())
                .await
                .unwrap();
            assert_eq!(counts, want, "{exp}/{g:?}: event counts by type");
        }
        for ev in ["conversion", "exposure"] {
            for cap in [None, Some(1.0)] {
                let raw = store
                    .variant_counts(exp, ev, &Attribution::default(), cap)
                    .await
                    .unwrap();
                let rolled = store.rolled_up_counts(exp, ev, cap).await.unwrap();
                assert_eq!(
                    rolled, raw,
                    "{exp}/{ev}, cap {cap:?}: rollups must equal the raw computation"
                );
            }
            for q in [0.0, 0.5, 0.9, 1.0] {
                let plain = Attribution::default();
                assert_eq!(
                    store
                        .subject_value_quantile(exp, ev, None, q)
                        .await
                        .unwrap(),
                    store
                        .subject_value_quantile(exp, ev, Some(&plain), q)
                        .await
                        .unwrap(),
                    "{exp}/{ev}: the {q}-quantile of rolled-up and raw totals"
                );
            }
            let raw = store
                .variant_counts(exp, ev, &Attribution::default(), None)
                .await
                .unwrap();
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
    let e1 = store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap();
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
    // Inside a range: the buckets that start in it.
    let range = TimeRange {
        from: Some(T0 + time::Duration::hours(5)),
        to: Some(T0 + time::Duration::hours(12)),
    };
    let mut want: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for ev in ["conversion", "exposure"] {
        for b in store
            .buckets("e1", ev, crate::Granularity::Hour, range)
            .await
            .unwrap()
        {
            *want.entry((b.variant, ev.to_owned())).or_default() += b.count;
        }
    }
    let counts = store
        .event_counts("e1", crate::Granularity::Hour, range)
        .await
        .unwrap();
    let got: std::collections::BTreeMap<(String, String), u64> = counts
        .into_iter()
        .map(|c| ((c.variant, c.event), c.count))
        .collect();
    assert!(!got.is_empty(), "the range holds events");
    assert_eq!(got, want);
    let all: u64 = got.values().sum();
    let total: u64 = hours.iter().map(|b| b.count).sum();
    assert!(
        all < total,
        "the range leaves events out ({all} of {total})"
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
    let before = store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap();
    let r = store.rollup(1000).await.unwrap();
    assert_eq!(r.events, 6);
    assert_ne!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
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

/// A point of experiment `id` evaluated `hour` hours after `T0`, whose figures tell it apart
/// (figures that do not add up exactly in binary, an undefined arm).
fn point(id: &str, hour: i64) -> EvaluationPoint {
    let h = hour as f64;
    EvaluationPoint {
        experiment_id: id.into(),
        at: T0 + time::Duration::hours(hour),
        aggregated_through: 10 * hour as u64,
        metric: "conversion".into(),
        estimate: "conversion_rate".into(),
        arms: vec![
            ArmPoint {
                variant: "control".into(),
                subjects: 100 + hour as u64,
                estimate: Some(0.1 + 0.2 * h / 7.0),
                interval: Some([0.05 + h / 3.0, 0.3 + h / 3.0]),
                prob_best: Some(1.0 / (3.0 + h)),
            },
            ArmPoint {
                variant: "treatment".into(),
                subjects: hour as u64,
                estimate: (hour > 0).then_some(h / 9.0),
                interval: None,
                prob_best: None,
            },
        ],
    }
}

/// `read` holds the points `written`, in order: the same times and figures (a figure read
/// back from a JSON document may differ in its last bit, see
/// [`EvaluationPoint::same_figures`]).
#[track_caller]
fn assert_points(read: &[EvaluationPoint], written: &[EvaluationPoint], what: &str) {
    assert_eq!(read.len(), written.len(), "{what}: {read:?}");
    for (r, w) in read.iter().zip(written) {
        assert!(
            r.experiment_id == w.experiment_id
                && r.at == w.at
                && r.aggregated_through == w.aggregated_through
                && r.same_figures(w),
            "{what}: {r:?} is not {w:?}"
        );
    }
}

pub async fn evaluation_history_keeps_the_latest_points_oldest_first(store: DynStore) {
    assert!(store.evaluation_history("e1", 10).await.unwrap().is_empty());
    // Two experiments' points interleaved; e1's hours 2 and 3 recorded with one time, in
    // that order.
    let mut e1 = Vec::new();
    for hour in 0..6 {
        let mut p = point("e1", hour);
        if hour == 3 {
            p.at = e1.last().map_or(p.at, |q: &EvaluationPoint| q.at);
        }
        store.record_evaluation(&p).await.unwrap();
        e1.push(p);
        if hour % 2 == 0 {
            store.record_evaluation(&point("e2", hour)).await.unwrap();
        }
    }
    assert_points(
        &store.evaluation_history("e1", 100).await.unwrap(),
        &e1,
        "every point, oldest first, its figures as recorded",
    );
    assert_points(
        &store.evaluation_history("e1", 6).await.unwrap(),
        &e1,
        "a limit of exactly the points",
    );
    assert_points(
        &store.evaluation_history("e1", 3).await.unwrap(),
        &e1[3..],
        "a limit keeps the latest points, oldest first",
    );
    assert_points(
        &store.evaluation_history("e1", 1).await.unwrap(),
        &e1[5..],
        "the latest",
    );
    assert!(store.evaluation_history("e1", 0).await.unwrap().is_empty());
    assert_points(
        &store.evaluation_history("e2", 100).await.unwrap(),
        &[point("e2", 0), point("e2", 2), point("e2", 4)],
        "another experiment's",
    );
    assert!(store.evaluation_history("e3", 10).await.unwrap().is_empty());
    assert!(e1[5].same_figures(&EvaluationPoint {
        at: T0,
        aggregated_through: 0,
        ..e1[5].clone()
    }));
    assert!(!e1[5].same_figures(&e1[4]));
    let mut last_bit = e1[5].clone();
    let estimate = last_bit.arms[1].estimate.expect("an estimate");
    last_bit.arms[1].estimate = Some(f64::from_bits(estimate.to_bits() + 1));
    assert!(
        e1[5].same_figures(&last_bit),
        "a last-bit difference is the same figure"
    );
    last_bit.arms[1].estimate = Some(estimate * 1.001);
    assert!(!e1[5].same_figures(&last_bit));
}

pub async fn evaluation_history_expires_in_batches_and_is_purged_with_its_experiment(
    store: DynStore,
) {
    let scope = verdict_domain::Scope::global("prod");
    for id in ["e1", "e2"] {
        let e = super::experiment(scope.clone(), &format!("key-{id}"), id);
        store.create_experiment(&e, "tester").await.unwrap();
        for hour in 0..8 {
            store.record_evaluation(&point(id, hour)).await.unwrap();
        }
    }
    let history = |id: &'static str| {
        let store = store.clone();
        async move { store.evaluation_history(id, 100).await.unwrap() }
    };
    let hours = |points: &[EvaluationPoint]| -> Vec<i64> {
        points.iter().map(|p| (p.at - T0).whole_hours()).collect()
    };

    // e1 by its own period: what was evaluated before hour 3, at most 2 per batch.
    let e1_only = RetentionFilter {
        before: T0 + time::Duration::hours(3),
        only: Some("e1".into()),
        except: Vec::new(),
    };
    let mut batches = Vec::new();
    loop {
        let n = store
            .delete_evaluation_history(&e1_only, 2, None)
            .await
            .unwrap();
        batches.push(n);
        if n < 2 {
            break;
        }
    }
    assert_eq!(batches, [2, 1], "three points, in bounded batches");
    assert_eq!(hours(&history("e1").await), [3, 4, 5, 6, 7]);
    assert_eq!(hours(&history("e2").await), (0..8).collect::<Vec<_>>());
    // Everything else by the setting: e2 before hour 5, e1 left to its own rule.
    let others = RetentionFilter {
        before: T0 + time::Duration::hours(5),
        only: None,
        except: vec!["e1".into()],
    };
    assert_eq!(
        store
            .delete_evaluation_history(&others, 100, None)
            .await
            .unwrap(),
        5
    );
    assert_eq!(hours(&history("e2").await), [5, 6, 7]);
    assert_eq!(hours(&history("e1").await), [3, 4, 5, 6, 7]);

    // A deleted experiment's history goes with the rest of its data, in bounded batches;
    // another experiment keeps its own.
    assert_eq!(
        store.purge_experiment_data("e1", 100, None).await.unwrap(),
        0
    );
    let e1 = store.get_experiment(&scope, "e1").await.unwrap().unwrap();
    assert!(
        store
            .delete_experiment(&crate::Deletion {
                experiment_id: "e1".into(),
                version: e1.version,
                at: T0 + time::Duration::hours(9),
                actor: "tester".into(),
                details: json!({"key": "key-e1", "forced": false}),
            })
            .await
            .unwrap()
    );
    let mut purged = 0;
    loop {
        let n = store.purge_experiment_data("e1", 2, None).await.unwrap();
        assert!(n <= 2, "{n}");
        if n == 0 {
            break;
        }
        purged += n;
    }
    assert_eq!(purged, 5, "only its history was left");
    assert!(history("e1").await.is_empty());
    assert_eq!(hours(&history("e2").await), [5, 6, 7]);
}

/// Subjects whose conversion totals are, in ascending order, -3 (s4, a refund), 1 (s1),
/// 2 (s2, two events), 4 (s5, two events) and 10 (s3); s6 converts nothing. s3 and s5 are
/// exposed at 35 s, before their events from 40 s on; s1, s2 convert before 35 s.
async fn figures_fixture(store: &DynStore) {
    for (s, v) in [
        ("s1", "control"),
        ("s2", "control"),
        ("s3", "control"),
        ("s6", "control"),
        ("s4", "treatment"),
        ("s5", "treatment"),
    ] {
        assign(store, "e1", s, v, 0).await;
    }
    let worth = |id: &str, subject: &str, at_s: i64, value: f64| {
        let mut e = event("e1", id, subject, at_s);
        e.value = value;
        e
    };
    let exposure = |id: &str, subject: &str| {
        let mut e = event("e1", id, subject, 35);
        e.event = "exposure".into();
        e
    };
    store
        .append_events(vec![
            worth("c1", "s1", 10, 1.0),
            worth("c2", "s2", 20, 1.0),
            worth("c3", "s2", 30, 1.0),
            worth("c4", "s3", 40, 10.0),
            worth("c5", "s4", 50, -3.0),
            worth("c6", "s5", 60, 1.5),
            worth("c7", "s5", 70, 2.5),
            exposure("x1", "s3"),
            exposure("x2", "s5"),
        ])
        .await
        .unwrap();
}

#[allow(clippy::too_many_arguments)]
fn figures(
    variant: &str,
    subjects: u64,
    converted_subjects: u64,
    events: u64,
    sum: f64,
    sum_of_squares: f64,
    sum_events_squared: u64,
    sum_events_value: f64,
) -> VariantCounts {
    VariantCounts {
        variant: variant.into(),
        subjects,
        converted_subjects,
        events,
        sum,
        sum_of_squares,
        sum_events_squared,
        sum_events_value,
    }
}

pub async fn capping_bounds_each_subjects_total_before_the_sums(store: DynStore) {
    figures_fixture(&store).await;
    store.rollup(1_000).await.unwrap();
    let plain = Attribution::default();
    let uncapped = vec![
        // totals 1, 2 (n = 2), 10: Σn² = 1 + 4 + 1, Σn·t = 1 + 4 + 10.
        figures("control", 4, 3, 4, 13.0, 105.0, 6, 15.0),
        // totals -3, 4 (n = 2): Σt² = 9 + 16, Σn·t = -3 + 8.
        figures("treatment", 2, 2, 3, 1.0, 25.0, 5, 5.0),
    ];
    // At 3: 10 counts as 3 and 4 as 3; the refund of -3 is left as it is; counts stay.
    let capped = vec![
        figures("control", 4, 3, 4, 6.0, 14.0, 6, 8.0),
        figures("treatment", 2, 2, 3, 0.0, 18.0, 5, 3.0),
    ];
    for (cap, expected) in [
        (None, &uncapped),
        (Some(100.0), &uncapped),
        (Some(3.0), &capped),
    ] {
        assert_eq!(
            &store
                .variant_counts("e1", "conversion", &plain, cap)
                .await
                .unwrap(),
            expected,
            "raw events, cap {cap:?}"
        );
        assert_eq!(
            &store
                .rolled_up_counts("e1", "conversion", cap)
                .await
                .unwrap(),
            expected,
            "rollups, cap {cap:?}"
        );
    }
    // The cap applies to each subject's total under the attribution: from 35 s on, s3 has
    // 10 (capped to 3), s4 -3, s5 4 (capped to 3).
    let late = Attribution::in_range(TimeRange {
        from: Some(T0 + time::Duration::seconds(35)),
        to: None,
    });
    assert_eq!(
        store
            .variant_counts("e1", "conversion", &late, Some(3.0))
            .await
            .unwrap(),
        [
            figures("control", 4, 1, 1, 3.0, 9.0, 1, 3.0),
            figures("treatment", 2, 2, 3, 0.0, 18.0, 5, 3.0),
        ]
    );
    // Exposed subjects only (s3, s5), from their exposure.
    let exposed = Attribution {
        exposure_event: Some("exposure".into()),
        ..Attribution::default()
    };
    assert_eq!(
        store
            .variant_counts("e1", "conversion", &exposed, Some(3.0))
            .await
            .unwrap(),
        [
            figures("control", 1, 1, 1, 3.0, 9.0, 1, 3.0),
            figures("treatment", 1, 1, 2, 3.0, 9.0, 4, 6.0),
        ]
    );
    assert!(matches!(
        store
            .rolled_up_counts("e1", "conversion", Some(f64::NAN))
            .await,
        Err(StoreError::Internal { .. })
    ));
}

pub async fn subject_value_quantiles_are_nearest_rank_over_subjects_with_events(store: DynStore) {
    figures_fixture(&store).await;
    let plain = Attribution::default();
    let quantile = |attribution: Option<Attribution>, q: f64| {
        let store = store.clone();
        async move {
            store
                .subject_value_quantile("e1", "conversion", attribution.as_ref(), q)
                .await
                .unwrap()
        }
    };
    assert_eq!(quantile(None, 0.5).await, None, "nothing is rolled up yet");
    assert_eq!(quantile(Some(plain.clone()), 0.5).await, Some(2.0));
    store.rollup(1_000).await.unwrap();
    // Totals -3, 1, 2, 4, 10 (s6, without events, is not among them): rank ⌈q·5⌉.
    for source in [None, Some(plain)] {
        for (q, value) in [
            (0.0, -3.0),
            (0.5, 2.0),
            (0.75, 4.0),
            (0.9, 10.0),
            (1.0, 10.0),
        ] {
            assert_eq!(
                quantile(source.clone(), q).await,
                Some(value),
                "{q}-quantile from {}",
                if source.is_some() {
                    "raw events"
                } else {
                    "rollups"
                }
            );
        }
    }
    // Under an attribution: from 35 s on the totals are -3, 4, 10; exposed ones 4, 10.
    let late = Attribution::in_range(TimeRange {
        from: Some(T0 + time::Duration::seconds(35)),
        to: None,
    });
    assert_eq!(quantile(Some(late.clone()), 0.5).await, Some(4.0));
    assert_eq!(quantile(Some(late), 0.0).await, Some(-3.0));
    let exposed = Attribution {
        exposure_event: Some("exposure".into()),
        ..Attribution::default()
    };
    assert_eq!(quantile(Some(exposed.clone()), 0.5).await, Some(4.0));
    assert_eq!(quantile(Some(exposed), 0.51).await, Some(10.0));
    // No subject with an event: no quantile. A q outside [0, 1] is refused.
    assert_eq!(
        store
            .subject_value_quantile("e1", "purchase", None, 0.5)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .subject_value_quantile("e1", "conversion", None, 1.5)
            .await
            .is_err()
    );
}

/// The bound of the repairs below (ingestion's default `ingest.max_abs_value`).
const BOUND: f64 = 1e12;

/// Events of experiment `exp` stored before values were bounded, rolled up in steps. Every
/// subject is assigned at T0 except s5 (at 3600 s). Conversions: s1 (control) 1.5e154 at
/// 100 s, whose square overflows, then 2 and 4 (the next hour); s2 (control) 3; s3
/// (treatment) only 5e153, beyond the bound, alone in hour 3; s4 (treatment) 1, then 6 and
/// -2 in hour 2; s5 (treatment) 1e200 at 100 s, before its assignment (never counted), and
/// 8. An exposure of s2. Events are received a second after their time.
async fn overflow_fixture(store: &DynStore, exp: &str) {
    for (s, v, at_s) in [
        ("s1", "control", 0),
        ("s2", "control", 0),
        ("s3", "treatment", 0),
        ("s4", "treatment", 0),
        ("s5", "treatment", 3600),
    ] {
        assign(store, exp, s, v, at_s).await;
    }
    let worth = |id: &str, subject: &str, at_s: i64, value: f64| {
        let mut e = event(exp, &format!("{exp}-{id}"), subject, at_s);
        e.value = value;
        e
    };
    let mut exposure = worth("x1", "s2", 50, 1.0);
    exposure.event = "exposure".into();
    let batches = [
        vec![
            exposure,
            worth("c1", "s1", 100, 1.5e154),
            worth("c2", "s5", 100, 1e200),
            worth("c3", "s1", 200, 2.0),
            worth("c4", "s2", 300, 3.0),
        ],
        vec![
            worth("c5", "s4", 500, 1.0),
            worth("c6", "s5", 3700, 8.0),
            worth("c7", "s1", 4000, 4.0),
            worth("c8", "s4", 7300, 6.0),
            worth("c9", "s4", 7400, -2.0),
            worth("c10", "s3", 11_000, 5e153),
        ],
    ];
    for batch in batches {
        store.append_events(batch).await.unwrap();
        while store.rollup(3).await.unwrap().events > 0 {}
    }
}

/// What the rollups of `overflow_fixture` hold once the values beyond the bound are left
/// out: conversions s1 2 + 4, s2 3, s4 1 + 6 - 2, s5 8 (s3 has none left).
fn repaired_conversions() -> Vec<VariantCounts> {
    vec![
        // totals 6 (n = 2), 3: Σt² = 36 + 9, Σn² = 4 + 1, Σn·t = 12 + 3.
        figures("control", 2, 2, 3, 9.0, 45.0, 5, 15.0),
        // s3 none, s4 5 (n = 3), s5 8: Σt² = 25 + 64, Σn² = 9 + 1, Σn·t = 15 + 8.
        figures("treatment", 3, 2, 4, 13.0, 89.0, 10, 23.0),
    ]
}

async fn conversion_buckets(
    store: &DynStore,
    exp: &str,
    g: crate::Granularity,
) -> Vec<(i64, String, u64, f64, f64)> {
    store
        .buckets(exp, "conversion", g, TimeRange::default())
        .await
        .unwrap()
        .into_iter()
        .map(|b| {
            (
                (b.start - T0).whole_hours(),
                b.variant,
                b.count,
                b.sum,
                b.sum_of_squares,
            )
        })
        .collect()
}

fn bucket(
    hour: i64,
    variant: &str,
    count: u64,
    sum: f64,
    sum_sq: f64,
) -> (i64, String, u64, f64, f64) {
    (hour, variant.into(), count, sum, sum_sq)
}

pub async fn overflowed_totals_are_recomputed_from_raw_events_without_values_beyond_the_bound(
    store: DynStore,
) {
    use crate::Granularity::{Day, Hour};
    use crate::RepairOutcome;
    overflow_fixture(&store, "e1").await;
    assign(&store, "e2", "s1", "control", 0).await;
    store
        .append_events(vec![event("e2", "fine", "s1", 100)])
        .await
        .unwrap();
    store.rollup(1_000).await.unwrap();
    let e2_counts = store
        .rolled_up_counts("e2", "conversion", None)
        .await
        .unwrap();
    let e2_hours = conversion_buckets(&store, "e2", Hour).await;

    // Overflowed: s1's square of 1.5e154 is infinite in its buckets and in results.
    assert_eq!(
        store.experiments_with_overflowed_totals().await.unwrap(),
        ["e1"]
    );
    let before = store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap();
    assert!(before[0].sum_of_squares.is_infinite(), "{before:?}");
    assert!(
        conversion_buckets(&store, "e1", Hour)
            .await
            .iter()
            .any(|b| b.4.is_infinite())
    );

    // A stale holder of the rollup's lease writes nothing.
    let stale = match store
        .acquire_lease(
            "aggregate",
            "a",
            std::time::Duration::from_secs(10),
            T0,
            None,
        )
        .await
        .unwrap()
    {
        crate::LeaseGrant::Acquired(l) => l,
        other => panic!("{other:?}"),
    };
    let later = T0 + time::Duration::seconds(11);
    let fresh = match store
        .acquire_lease(
            "aggregate",
            "b",
            std::time::Duration::from_secs(10),
            later,
            None,
        )
        .await
        .unwrap()
    {
        crate::LeaseGrant::Acquired(l) => l,
        other => panic!("{other:?}"),
    };
    let refused = store.repair_totals("e1", BOUND, Some(&stale.fence())).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
        before
    );
    // A bound that is not a positive number is refused.
    for bad in [f64::NAN, f64::INFINITY, 0.0] {
        assert!(store.repair_totals("e1", bad, None).await.is_err(), "{bad}");
    }

    // The two attributed conversions beyond the bound are left out (s5's 1e200 came before
    // its assignment and never counted); the exposure is recomputed too.
    assert_eq!(
        store
            .repair_totals("e1", BOUND, Some(&fresh.fence()))
            .await
            .unwrap(),
        RepairOutcome::Repaired { dropped_events: 2 }
    );
    assert!(
        store
            .experiments_with_overflowed_totals()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
        repaired_conversions()
    );
    assert_eq!(
        store
            .rolled_up_counts("e1", "exposure", None)
            .await
            .unwrap(),
        [
            figures("control", 2, 1, 1, 1.0, 1.0, 1, 1.0),
            figures("treatment", 3, 0, 0, 0.0, 0.0, 0, 0.0),
        ]
    );
    // Hour 3 held only s3's dropped event: its bucket is gone.
    assert_eq!(
        conversion_buckets(&store, "e1", Hour).await,
        [
            bucket(0, "control", 2, 5.0, 13.0),
            bucket(0, "treatment", 1, 1.0, 1.0),
            bucket(1, "control", 1, 4.0, 16.0),
            bucket(1, "treatment", 1, 8.0, 64.0),
            bucket(2, "treatment", 2, 4.0, 40.0),
        ]
    );
    assert_eq!(
        conversion_buckets(&store, "e1", Day).await,
        [
            bucket(0, "control", 3, 9.0, 29.0),
            bucket(0, "treatment", 4, 13.0, 105.0),
        ]
    );
    // Subjects with events: s2 3, s4 5, s1 6, s5 8 (s3 has none left).
    for (q, total) in [(0.0, 3.0), (0.5, 5.0), (1.0, 8.0)] {
        assert_eq!(
            store
                .subject_value_quantile("e1", "conversion", None, q)
                .await
                .unwrap(),
            Some(total),
            "{q}"
        );
    }
    // Another experiment is left as it was; a second repair finds nothing to do.
    assert_eq!(
        store
            .rolled_up_counts("e2", "conversion", None)
            .await
            .unwrap(),
        e2_counts
    );
    assert_eq!(conversion_buckets(&store, "e2", Hour).await, e2_hours);
    assert_eq!(
        store.repair_totals("e1", BOUND, None).await.unwrap(),
        RepairOutcome::Nothing
    );
    assert_eq!(
        store.repair_totals("e2", BOUND, None).await.unwrap(),
        RepairOutcome::Nothing
    );

    // Rollups go on adding to the repaired figures: s2 10 in hour 0, s3 7 in hour 3.
    let mut late = event("e1", "late1", "s2", 350);
    late.value = 10.0;
    let mut again = event("e1", "late2", "s3", 11_100);
    again.value = 7.0;
    store.append_events(vec![late, again]).await.unwrap();
    assert_eq!(store.rollup(1_000).await.unwrap().events, 2);
    let mut expected = repaired_conversions();
    expected[0] = figures("control", 2, 2, 4, 19.0, 205.0, 8, 38.0);
    expected[1] = figures("treatment", 3, 3, 5, 20.0, 138.0, 11, 30.0);
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
        expected
    );
    let hours = conversion_buckets(&store, "e1", Hour).await;
    assert_eq!(hours[0], bucket(0, "control", 3, 15.0, 113.0));
    assert_eq!(hours.last(), Some(&bucket(3, "treatment", 1, 7.0, 49.0)));
}

pub async fn overflowed_totals_stay_when_retention_deleted_raw_events(store: DynStore) {
    use crate::Granularity::{Day, Hour};
    use crate::RepairOutcome;
    use crate::jobs::RetentionFilter;
    overflow_fixture(&store, "e1").await;
    overflow_fixture(&store, "e3").await;
    let before = store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap();
    let hours = conversion_buckets(&store, "e1", Hour).await;

    // e1's events received in its first 250 s are gone: s1's 1.5e154 and 2, an exposure.
    let first = RetentionFilter {
        before: T0 + time::Duration::seconds(250),
        only: Some("e1".into()),
        except: Vec::new(),
    };
    assert_eq!(store.delete_events(&first, 100, None).await.unwrap(), 4);
    assert_eq!(
        store.repair_totals("e1", BOUND, None).await.unwrap(),
        RepairOutcome::NotRetained {
            raw_events: 7,
            rolled_up_events: 10,
        }
    );
    assert_eq!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap(),
        before,
        "nothing is written"
    );
    assert_eq!(conversion_buckets(&store, "e1", Hour).await, hours);
    assert_eq!(
        store.experiments_with_overflowed_totals().await.unwrap(),
        ["e1", "e3"],
        "e1 stays overflowed"
    );

    // e3 lost buckets to retention (those starting before 1 h: hour 0 and day 0), not raw
    // events: it is repaired, and the deleted buckets are not made again.
    let buckets = RetentionFilter {
        before: T0 + time::Duration::hours(1),
        only: Some("e3".into()),
        except: Vec::new(),
    };
    while store.delete_buckets(&buckets, 100, None).await.unwrap() > 0 {}
    assert_eq!(
        store.repair_totals("e3", BOUND, None).await.unwrap(),
        RepairOutcome::Repaired { dropped_events: 2 }
    );
    assert_eq!(
        store
            .rolled_up_counts("e3", "conversion", None)
            .await
            .unwrap(),
        repaired_conversions()
    );
    assert_eq!(
        conversion_buckets(&store, "e3", Hour).await,
        [
            bucket(1, "control", 1, 4.0, 16.0),
            bucket(1, "treatment", 1, 8.0, 64.0),
            bucket(2, "treatment", 2, 4.0, 40.0),
        ]
    );
    assert!(conversion_buckets(&store, "e3", Day).await.is_empty());
    assert_eq!(
        store.experiments_with_overflowed_totals().await.unwrap(),
        ["e1"]
    );
}

pub async fn segment_counts_group_every_subject_by_its_segment(store: DynStore) {
    use verdict_domain::{Breakdown, DimensionSource, Scope, Status};

    use crate::SegmentCounts;
    use crate::model::StatusChange;

    let mut e = super::experiment(Scope::default(), "seg", "seg");
    e.assignment.context = vec!["country".into()];
    e.breakdown = Some(Breakdown {
        source: DimensionSource::Event,
        attribute: "platform".into(),
        max_segments: 50,
    });
    store.create_experiment(&e, "test").await.unwrap();
    store
        .transition_status(&StatusChange {
            experiment_id: "seg".into(),
            from: Status::Draft,
            to: Status::Running,
            at: super::T0,
            actor: "test".into(),
        })
        .await
        .unwrap()
        .unwrap();
    for (subject, variant, country) in [
        ("s1", "control", Some(json!("US"))),
        ("s2", "control", Some(json!("FR"))),
        ("s3", "treatment", Some(json!("US"))),
        ("s4", "treatment", None),
        ("s5", "control", Some(json!("US"))),
        ("s6", "treatment", Some(json!(7))),
    ] {
        let context = country.map(|c| {
            let mut m = serde_json::Map::new();
            m.insert("country".into(), c);
            m
        });
        store
            .get_or_create_assignment(&verdict_domain::Assignment {
                experiment_id: "seg".into(),
                subject: subject.into(),
                variant: variant.into(),
                assigned_at: super::T0 + time::Duration::seconds(3600),
                context,
            })
            .await
            .unwrap();
    }
    // (subject, at, value, meta) in ingestion order. s1's first event is before its
    // assignment (not counted, but its platform, "web", is s1's); s2's first has no platform;
    // s3's first has a number; s4's two values are folded in different steps (the first
    // wins); s6 never sends one; s5 sends nothing.
    let sent = [
        ("s1", 10, 1.0, Some(json!({"platform": "web"}))),
        ("s4", 4000, 10.0, Some(json!({"platform": "web"}))),
        ("s2", 4000, 1.0, None),
        ("s3", 4000, 1.0, Some(json!({"platform": 5}))),
        ("s1", 4000, 2.0, Some(json!({"platform": "ios"}))),
        ("s6", 4000, 1.0, Some(json!({"other": "x"}))),
        ("s4", 4200, 1.0, Some(json!({"platform": "ios"}))),
        ("s1", 5000, 3.0, Some(json!({"platform": "android"}))),
        ("s2", 4500, 1.0, Some(json!({"platform": "android"}))),
        ("s3", 4100, 4.0, Some(json!({"platform": "ios"}))),
    ];
    for (i, (subject, at, value, meta)) in sent.into_iter().enumerate() {
        let mut ev = event("seg", &format!("g{i}"), subject, at);
        ev.value = value;
        ev.meta = meta;
        store.append_events(vec![ev]).await.unwrap();
    }
    while store.rollup(2).await.unwrap().events > 0 {}

    // The expected figures, from the events above: (variant, per-subject (n, total)).
    let figures = |variant: &str, subjects: &[Option<(u64, f64)>], cap: Option<f64>| {
        let mut c = VariantCounts {
            variant: variant.into(),
            subjects: subjects.len() as u64,
            ..Default::default()
        };
        for (n, total) in subjects.iter().flatten() {
            let t = cap.map_or(*total, |cap| total.min(cap));
            c.converted_subjects += 1;
            c.events += n;
            c.sum += t;
            c.sum_of_squares += t * t;
            c.sum_events_squared += n * n;
            c.sum_events_value += *n as f64 * t;
        }
        c
    };
    let seg = |segment: Option<&str>, counts: VariantCounts| SegmentCounts {
        segment: segment.map(str::to_owned),
        counts,
    };
    let (s1, s2, s3, s4, s6) = (
        Some((2, 5.0)),
        Some((2, 2.0)),
        Some((2, 5.0)),
        Some((2, 11.0)),
        Some((1, 1.0)),
    );
    for cap in [None, Some(5.0)] {
        let by_platform = store
            .segment_counts("seg", "conversion", e.breakdown.as_ref().unwrap(), cap)
            .await
            .unwrap();
        assert_eq!(
            by_platform,
            [
                seg(None, figures("control", &[None], cap)),
                seg(None, figures("treatment", &[s6], cap)),
                seg(Some("android"), figures("control", &[s2], cap)),
                seg(Some("ios"), figures("treatment", &[s3], cap)),
                seg(Some("web"), figures("control", &[s1], cap)),
                seg(Some("web"), figures("treatment", &[s4], cap)),
            ],
            "by the first string value of the event key, cap {cap:?}"
        );
        let by_country = store
            .segment_counts(
                "seg",
                "conversion",
                &Breakdown {
                    source: DimensionSource::Assignment,
                    attribute: "country".into(),
                    max_segments: 50,
                },
                cap,
            )
            .await
            .unwrap();
        assert_eq!(
            by_country,
            [
                seg(None, figures("treatment", &[s4, s6], cap)),
                seg(Some("FR"), figures("control", &[s2], cap)),
                seg(Some("US"), figures("control", &[s1, None], cap)),
                seg(Some("US"), figures("treatment", &[s3], cap)),
            ],
            "by the assignment context's string value, cap {cap:?}"
        );
        // The segments of a variant add up to its figures.
        for variant in store
            .rolled_up_counts("seg", "conversion", cap)
            .await
            .unwrap()
        {
            for split in [&by_platform, &by_country] {
                let parts: Vec<_> = split
                    .iter()
                    .filter(|s| s.counts.variant == variant.variant)
                    .collect();
                let subjects: u64 = parts.iter().map(|s| s.counts.subjects).sum();
                let events: u64 = parts.iter().map(|s| s.counts.events).sum();
                let sum: f64 = parts.iter().map(|s| s.counts.sum).sum();
                assert_eq!(
                    (subjects, events, sum),
                    (variant.subjects, variant.events, variant.sum)
                );
            }
        }
    }
}
