//! The store contract suite against the embedded SQLite adapter, one file per test.

use std::sync::Arc;

use verdict_store::SqliteStore;
use verdict_store::contract::TestStore;

async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("verdict.db"), 5_000).expect("open sqlite");
    TestStore {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

verdict_store::store_contract_suite!(sqlite);

#[tokio::test]
async fn reopening_a_database_keeps_its_data_and_schema() {
    use verdict_store::{AssignmentStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/verdict.db");
    {
        let store = SqliteStore::open(&path, 5_000).unwrap();
        store.ping().await.unwrap();
        let a = verdict_domain::Assignment {
            experiment_id: "e".into(),
            subject: "s".into(),
            variant: "v".into(),
            assigned_at: time::OffsetDateTime::UNIX_EPOCH,
            context: None,
        };
        store.get_or_create_assignment(&a).await.unwrap();
    }
    let store = SqliteStore::open(&path, 5_000).unwrap();
    assert!(store.get_assignment("e", "s").await.unwrap().is_some());
}
