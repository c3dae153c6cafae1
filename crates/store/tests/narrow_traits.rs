//! Consumers may hold the narrowest store trait they need: every narrow trait object is
//! made from an `Arc<dyn Store>` by upcasting, and works.

use std::sync::Arc;

use time::macros::datetime;
use verdict_domain::{Assignment, Scope};
use verdict_store::{
    AssignmentStore, AudienceStore, DynStore, EnvironmentStore, EventStore, ExperimentStore,
    JobStore, KeyStore, PageRequest, RollupStore, SqliteStore, WebhookStore,
};

/// A function that accepts only the narrow trait, as a consumer would.
async fn assign_through(store: Arc<dyn AssignmentStore>) -> bool {
    let a = Assignment {
        experiment_id: "e1".into(),
        subject: "s1".into(),
        variant: "control".into(),
        assigned_at: datetime!(2026-01-01 00:00:00 UTC),
        context: None,
    };
    store.get_or_create_assignment(&a).await.unwrap().1
}

#[tokio::test]
async fn an_arc_dyn_store_upcasts_to_every_narrow_trait() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        Arc::new(SqliteStore::open(dir.path().join("verdict.db"), 5_000).unwrap());
    assert_eq!(store.backend(), "sqlite");

    let experiments: Arc<dyn ExperimentStore> = store.clone();
    assert_eq!(
        experiments
            .get_experiment(&Scope::default(), "missing")
            .await
            .unwrap(),
        None
    );
    assert!(assign_through(store.clone()).await, "a new assignment");
    let assignments: Arc<dyn AssignmentStore> = store.clone();
    assert!(
        !assign_through(assignments).await,
        "the stored one, the second time"
    );
    let events: Arc<dyn EventStore> = store.clone();
    assert!(events.scan_events(0, 10).await.unwrap().is_empty());
    let rollups: Arc<dyn RollupStore> = store.clone();
    assert_eq!(rollups.rollup_watermark().await.unwrap(), 0);
    // A rollup store is a job store too (fenced steps check leases in the same store).
    let jobs_of_rollups: Arc<dyn JobStore> = rollups;
    assert_eq!(jobs_of_rollups.get_lease("aggregate").await.unwrap(), None);
    let jobs: Arc<dyn JobStore> = store.clone();
    assert_eq!(
        jobs.list_runs(None, PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        0
    );
    let webhooks: Arc<dyn WebhookStore> = store.clone();
    assert_eq!(webhooks.get_endpoint("ep_missing").await.unwrap(), None);
    let environments: Arc<dyn EnvironmentStore> = store.clone();
    assert_eq!(environments.get_environment("nope").await.unwrap(), None);
    let audiences: Arc<dyn AudienceStore> = store.clone();
    assert_eq!(
        audiences.get_audience("production", "nope").await.unwrap(),
        None
    );
    let keys: Arc<dyn KeyStore> = store.clone();
    assert_eq!(keys.find_api_key("00").await.unwrap(), None);

    // Each narrow handle is `Debug` and is the one store, not a copy.
    let webhooks: Arc<dyn WebhookStore> = store.clone();
    assert!(format!("{webhooks:?}").starts_with("SqliteStore"));
    assert!(std::ptr::addr_eq(
        Arc::as_ptr(&webhooks),
        Arc::as_ptr(&store)
    ));
}
