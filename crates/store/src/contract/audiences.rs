//! Contract tests of [`crate::AudienceStore`].

use serde_json::json;
use verdict_domain::{Scope, Status};

use super::{T0, experiment};
use crate::model::{PageRequest, StatusChange};
use crate::{DynStore, StoreError};

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
