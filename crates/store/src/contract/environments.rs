//! Contract tests of [`crate::EnvironmentStore`].

use super::T0;
use crate::model::PageRequest;
use crate::{DynStore, StoreError};

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
