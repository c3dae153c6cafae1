//! Contract tests of [`crate::KeyStore`].

use super::T0;
use crate::model::PageRequest;
use crate::{DynStore, StoreError};

pub async fn api_keys_are_found_by_hash_listed_and_revoked(store: DynStore) {
    let key = verdict_domain::ApiKey {
        id: "key_1".into(),
        name: "app".into(),
        hash: "ab".repeat(32),
        prefix: "vk_abcd".into(),
        roles: vec!["client".into()],
        environment: "production".into(),
        organization: Some("acme".into()),
        created_at: T0,
        revoked_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    assert!(matches!(
        store.create_api_key(&key).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_api_key(&"ab".repeat(32)).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.find_api_key(&"cd".repeat(32)).await.unwrap(), None);
    assert_eq!(
        store
            .list_api_keys(PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        1
    );
    assert!(store.revoke_api_key("key_1", T0).await.unwrap());
    assert!(!store.revoke_api_key("key_2", T0).await.unwrap());
    let revoked = store.find_api_key(&"ab".repeat(32)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0));
}
