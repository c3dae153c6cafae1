//! Contract tests of [`crate::PublicationStore`].

use std::collections::BTreeSet;

use verdict_domain::Scope;

use super::T0;
use crate::model::PageRequest;
use crate::{DynStore, NewPublication};

fn new(scope: &Scope, body: &str, at_s: i64) -> NewPublication {
    NewPublication {
        scope: scope.clone(),
        body: body.to_owned(),
        hash: format!("{:0>64}", body.len().to_string() + body),
        trigger: "manual".into(),
        actor: "key_1".into(),
        at: T0 + time::Duration::seconds(at_s),
    }
}

const ALL: PageRequest = PageRequest {
    page: 1,
    page_size: 100,
};

pub async fn publications_are_numbered_per_scope_and_skip_unchanged_bodies(store: DynStore) {
    let global = Scope::global("production");
    let acme = Scope::new("production", Some("acme".into()));
    let (v1, created) = store
        .record_publication(&new(&global, "{\"a\":1}", 0))
        .await
        .unwrap();
    assert!(created);
    assert_eq!((v1.version, v1.size), (1, 7));
    assert_eq!(v1.organization, None);
    // The same body again is the same version, and nothing is written.
    let (again, created) = store
        .record_publication(&new(&global, "{\"a\":1}", 5))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, v1);
    let (v2, created) = store
        .record_publication(&new(&global, "{\"a\":2}", 10))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(v2.version, 2);
    // Back to the first body is a new version: only the latest is compared.
    let (v3, _) = store
        .record_publication(&new(&global, "{\"a\":1}", 20))
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    // Another scope counts on its own.
    let (org1, _) = store
        .record_publication(&new(&acme, "{\"b\":1}", 30))
        .await
        .unwrap();
    assert_eq!(
        (org1.version, org1.organization.as_deref()),
        (1, Some("acme"))
    );

    let page = store.list_publications(&global, ALL).await.unwrap();
    assert_eq!(page.total, 3);
    let versions: Vec<u64> = page.items.iter().map(|p| p.version).collect();
    assert_eq!(versions, [3, 2, 1], "newest first");
    assert_eq!(page.items[2], v1);
    let second = store
        .list_publications(
            &global,
            PageRequest {
                page: 2,
                page_size: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items, vec![v1.clone()]);

    assert_eq!(
        store.latest_publication(&global).await.unwrap().as_ref(),
        Some(&v3)
    );
    assert_eq!(
        store
            .latest_publication(&Scope::global("staging"))
            .await
            .unwrap(),
        None
    );
    let (latest, body) = store.get_publication(&global, None).await.unwrap().unwrap();
    assert_eq!((latest, body.as_str()), (v3, "{\"a\":1}"));
    let (second, body) = store
        .get_publication(&global, Some(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second, body.as_str()), (v2, "{\"a\":2}"));
    assert_eq!(store.get_publication(&global, Some(4)).await.unwrap(), None);
    assert_eq!(
        store
            .get_publication(&Scope::global("staging"), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.publication_scopes(None).await.unwrap(),
        vec![global.clone(), acme.clone()]
    );
    assert_eq!(
        store.publication_scopes(Some("staging")).await.unwrap(),
        vec![]
    );
}

pub async fn concurrent_publishers_number_versions_without_gaps(store: DynStore) {
    let scope = Scope::global("production");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_publication(&new(&scope, &format!("{{\"n\":{i}}}"), i))
                .await
                .unwrap()
        }));
    }
    let mut versions = BTreeSet::new();
    for t in tasks {
        let (p, created) = t.await.unwrap();
        assert!(created, "every body differs from the one before it");
        assert!(versions.insert(p.version), "version {} twice", p.version);
    }
    assert_eq!(versions, (1..=20).collect::<BTreeSet<u64>>());
    assert_eq!(
        store.list_publications(&scope, ALL).await.unwrap().total,
        20
    );
}

pub async fn a_failed_publish_is_pending_until_a_later_compile_covers_it(store: DynStore) {
    let staging = Scope::global("staging");
    let acme = Scope::new("production", Some("acme".into()));
    let at = |s: i64| T0 + time::Duration::seconds(s);
    store
        .mark_publish_pending(&staging, "directory: permission denied", at(10))
        .await
        .unwrap();
    store
        .mark_publish_pending(&acme, "s3: connection refused", at(10))
        .await
        .unwrap();
    store
        .mark_publish_pending(&acme, "s3: timed out", at(20))
        .await
        .unwrap();
    let pending = store.pending_publishes().await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].scope, acme);
    assert_eq!(
        (pending[0].error.as_str(), pending[0].failed_at),
        ("s3: timed out", at(20)),
        "the last failure is kept"
    );
    // A scope with only a pending retry is a scope to publish.
    assert_eq!(
        store.publication_scopes(Some("staging")).await.unwrap(),
        vec![staging.clone()]
    );
    // A publish compiled before the last failure does not cover it; one after does.
    store.clear_publish_pending(&acme, at(15)).await.unwrap();
    assert_eq!(store.pending_publishes().await.unwrap().len(), 2);
    store.clear_publish_pending(&acme, at(20)).await.unwrap();
    let pending = store.pending_publishes().await.unwrap();
    assert_eq!(
        pending.iter().map(|p| &p.scope).collect::<Vec<_>>(),
        vec![&staging]
    );
}

pub async fn old_versions_are_deleted_keeping_each_scopes_newest_in_bounded_batches(
    store: DynStore,
) {
    let global = Scope::global("production");
    let acme = Scope::new("production", Some("acme".into()));
    let staging = Scope::global("staging");
    for v in 1..=5 {
        store
            .record_publication(&new(&global, &format!("{{\"v\":{v}}}"), v))
            .await
            .unwrap();
    }
    for v in 1..=2 {
        store
            .record_publication(&new(&acme, &format!("{{\"o\":{v}}}"), v))
            .await
            .unwrap();
    }
    // A scope with only a failed publish has no version to keep or delete.
    store
        .mark_publish_pending(&staging, "directory: permission denied", T0)
        .await
        .unwrap();
    let versions = |scope: Scope| {
        let store = store.clone();
        async move {
            let page = store.list_publications(&scope, ALL).await.unwrap();
            page.items.iter().map(|p| p.version).collect::<Vec<u64>>()
        }
    };

    // Keeping two: global's 1 to 3 go, oldest first, at most `limit` a call.
    assert_eq!(store.delete_old_publications(2, 2, None).await.unwrap(), 2);
    assert_eq!(versions(global.clone()).await, [5, 4, 3]);
    assert_eq!(store.delete_old_publications(2, 10, None).await.unwrap(), 1);
    assert_eq!(store.delete_old_publications(2, 10, None).await.unwrap(), 0);
    assert_eq!(versions(global.clone()).await, [5, 4]);
    assert_eq!(
        versions(acme.clone()).await,
        [2, 1],
        "within its newest two"
    );
    let (kept, body) = store
        .get_publication(&global, Some(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kept.version, body.as_str()), (4, "{\"v\":4}"));
    assert_eq!(store.get_publication(&global, Some(3)).await.unwrap(), None);

    // Keeping none is keeping one: the latest version always stays, and numbering goes on.
    assert_eq!(store.delete_old_publications(0, 10, None).await.unwrap(), 2);
    assert_eq!(versions(global.clone()).await, [5]);
    assert_eq!(versions(acme.clone()).await, [2]);
    let (next, created) = store
        .record_publication(&new(&global, "{\"v\":6}", 6))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(next.version, 6);

    // A stale holder of the retention lease deletes nothing.
    let lease = |owner: &'static str, s: i64| {
        let store = store.clone();
        async move {
            match store
                .acquire_lease(
                    "retention",
                    owner,
                    std::time::Duration::from_secs(10),
                    T0 + time::Duration::seconds(s),
                    None,
                )
                .await
                .unwrap()
            {
                crate::LeaseGrant::Acquired(l) => l,
                other => panic!("{owner} should get the lease: {other:?}"),
            }
        }
    };
    let stale = lease("a", 0).await;
    let fresh = lease("b", 11).await;
    let late = store
        .delete_old_publications(1, 10, Some(&stale.fence()))
        .await;
    assert!(
        matches!(late, Err(crate::StoreError::Fenced { .. })),
        "{late:?}"
    );
    assert_eq!(versions(global.clone()).await, [6, 5]);
    assert_eq!(
        store
            .delete_old_publications(1, 10, Some(&fresh.fence()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(versions(global).await, [6]);
}
