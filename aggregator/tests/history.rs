//! The evaluation history: each evaluation that finds new figures adds one point holding the
//! evaluation's own figures per arm; an evaluation with nothing new adds none.

use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_aggregator::evaluate::{self, evaluate_one, evaluation_of};
use verdict_cache::{DynCache, MemoryCache};
use verdict_domain::experiment::Provided;
use verdict_domain::{Assignment, Experiment, ExperimentInput, NewEvent, Scope, Status};
use verdict_store::{DynStore, SqliteStore, StatusChange};

const T0: OffsetDateTime = datetime!(2026-03-01 00:00:00 UTC);

fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

/// A running binomial experiment on `purchase` whose policy cannot decide with these few
/// subjects (so that every evaluation leaves it running).
async fn running_experiment(store: &DynStore) -> Experiment {
    let input: ExperimentInput = serde_json::from_value(json!({
        "key": "checkout",
        "variants": [{"key": "control"}, {"key": "treatment"}],
        "primary_metric": {"event": "purchase", "kind": "binomial"},
        "policy": {"min_assignments": 100000},
    }))
    .unwrap();
    let e = input
        .into_experiment(
            Scope::global("production"),
            Provided {
                id: "0196a3c1-7d2e-7a10-9c55-3b1f2e4d5a60".into(),
                salt: "history".into(),
                now: T0,
            },
        )
        .unwrap();
    store.create_experiment(&e, "test").await.unwrap();
    store
        .transition_status(&StatusChange {
            experiment_id: e.id.clone(),
            from: Status::Draft,
            to: Status::Running,
            at: T0,
            actor: "test".into(),
        })
        .await
        .unwrap()
        .expect("activated")
}

/// Assign `n` subjects named `{prefix}-{i}` to `variant`, the first `buyers` of them
/// purchasing once.
async fn subjects(
    store: &DynStore,
    e: &Experiment,
    prefix: &str,
    variant: &str,
    n: usize,
    buyers: usize,
) {
    let mut events = Vec::new();
    for i in 0..n {
        let subject = format!("{prefix}-{i}");
        store
            .get_or_create_assignment(&Assignment {
                experiment_id: e.id.clone(),
                subject: subject.clone(),
                variant: variant.into(),
                assigned_at: T0 + minutes(1),
                context: None,
            })
            .await
            .unwrap();
        if i < buyers {
            events.push(NewEvent {
                experiment_id: e.id.clone(),
                event_id: format!("buy-{subject}"),
                subject,
                variant: None,
                event: "purchase".into(),
                value: 1.0,
                ts: T0 + minutes(2),
                received_at: T0 + minutes(2),
                meta: None,
            });
        }
    }
    store.append_events(events).await.unwrap();
}

#[tokio::test]
async fn an_evaluation_records_its_figures_once_per_change_of_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let cache: DynCache = Arc::new(MemoryCache::new());
    let e = running_experiment(&store).await;
    subjects(&store, &e, "c", "control", 40, 10).await;
    subjects(&store, &e, "t", "treatment", 40, 20).await;
    store.rollup(10_000).await.unwrap();
    let watermark = store.rollup_watermark().await.unwrap();
    assert!(watermark > 0);

    let first = T0 + minutes(10);
    let expected = evaluation_of(&store, &e, first).await.unwrap().unwrap();
    let outcome = evaluate_one(&store, &cache, &e, first).await.unwrap();
    assert_eq!(outcome.outcome, "no_decision", "{outcome:?}");
    assert!(outcome.history_recorded);
    let history = store.evaluation_history(&e.id, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    let point = &history[0];
    assert_eq!(point.experiment_id, e.id);
    assert_eq!(point.at, first);
    assert_eq!(point.aggregated_through, watermark);
    assert_eq!(point.metric, "purchase");
    assert_eq!(point.estimate, "conversion_rate");
    assert_eq!(point.arms.len(), 2);
    // Figures as computed, to within the last bit a JSON document may lose.
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
        _ => false,
    };
    for (arm, want) in point.arms.iter().zip(&expected.arms) {
        assert_eq!(arm.variant, want.variant);
        assert_eq!(arm.subjects, want.subjects);
        assert!(close(arm.estimate, want.estimate), "{arm:?} {want:?}");
        let (lo, hi) = (arm.interval.map(|i| i[0]), arm.interval.map(|i| i[1]));
        let want_interval = want.credible_interval.expect("an interval");
        assert!(close(lo, Some(want_interval[0])), "{arm:?} {want:?}");
        assert!(close(hi, Some(want_interval[1])), "{arm:?} {want:?}");
        assert!(close(arm.prob_best, want.prob_best), "{arm:?} {want:?}");
    }
    // The figures themselves: 10 of 40 and 20 of 40 converted.
    let (control, treatment) = (&point.arms[0], &point.arms[1]);
    assert_eq!(
        (control.variant.as_str(), control.subjects),
        ("control", 40)
    );
    assert_eq!(control.estimate, Some(0.25));
    assert_eq!(treatment.estimate, Some(0.5));
    for arm in [control, treatment] {
        let [lo, hi] = arm.interval.expect("an interval");
        let estimate = arm.estimate.unwrap();
        assert!(lo < estimate && estimate < hi, "{arm:?}");
    }
    let (pc, pt) = (control.prob_best.unwrap(), treatment.prob_best.unwrap());
    assert!(pt > 0.9 && pc < 0.1, "{pc} {pt}");
    assert!((pc + pt - 1.0).abs() < 1e-9, "{pc} + {pt}");

    // Nothing new rolled up: the whole job's run adds no point.
    let report = evaluate::evaluate(&store, &cache, first + minutes(5))
        .await
        .unwrap();
    assert_eq!(report.evaluated, 1);
    assert_eq!(report.history_points, 0);
    assert!(!report.outcomes[0].history_recorded);
    assert_eq!(store.evaluation_history(&e.id, 10).await.unwrap(), history);

    // New subjects: the next evaluation adds a point after the first.
    subjects(&store, &e, "t2", "treatment", 10, 5).await;
    store.rollup(10_000).await.unwrap();
    let third = first + minutes(10);
    let report = evaluate::evaluate(&store, &cache, third).await.unwrap();
    assert_eq!(report.history_points, 1);
    let history = store.evaluation_history(&e.id, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0], *point, "the first point stays as it was");
    assert_eq!(history[1].at, third);
    assert_eq!(history[1].arms[1].subjects, 50);
    assert_eq!(history[1].arms[1].estimate, Some(0.5));
    assert!(history[1].aggregated_through > watermark);
    assert_eq!(
        store.evaluation_history(&e.id, 1).await.unwrap(),
        history[1..]
    );
}
