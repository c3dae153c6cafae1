//! Contract tests of [`crate::RollupStore`]: rollups equal the raw computation, are
//! incremental and idempotent; evaluation state round-trips.

use serde_json::json;

use super::rollup_fixture;
use crate::{Attribution, DynStore};

use super::event;

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
