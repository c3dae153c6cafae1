//! A store written by an earlier release keeps serving the same assignments.
//!
//! `testdata/migration/store.db` was written by Verdict before assignment units, assignment
//! context and experiment deletion existed (by `scripts/make-migration-fixture.py`, which
//! also recorded every answer that release gave in `assignments.json`): two running
//! experiments, one with the default unit, one whose unit was a free label (`visitor`), 120
//! assigned subjects each, and events. Opened with this code (its schema migrated at open),
//! every recorded subject gets the same answer: variant, config, time of assignment, reason.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use verdict_app::assignments::AssignmentRequest;
use verdict_app::{App, ScopeParams};
use verdict_cache::MemoryCache;
use verdict_config::Settings;
use verdict_store::{AssignmentStore, ExperimentStore, SqliteStore};

const ADMIN: &str = "migration-fixture-admin-key-0123";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/migration")
        .join(name)
}

#[tokio::test]
async fn a_store_written_before_keeps_serving_the_same_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict.db");
    std::fs::copy(fixture("store.db"), &path).unwrap();
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("assignments.json")).unwrap())
            .unwrap();

    let store = Arc::new(SqliteStore::open(&path, 5_000).unwrap());
    let env =
        [("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN)].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let app = App::new(
        store.clone(),
        Arc::new(MemoryCache::new()),
        Arc::new(Settings::load_from(None, env).unwrap()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let admin = app.authenticate(ADMIN).await.unwrap();
    let scope = ScopeParams::default();

    let mut compared = 0;
    for (key, subjects) in recorded.as_object().unwrap() {
        let experiment = app.experiment(&admin, &scope, key).await.unwrap();
        // The free label is kept as stored, and served as subject_id.
        let unit = if key == "banner" {
            "visitor"
        } else {
            "subject_id"
        };
        assert_eq!(experiment.assignment.unit, unit);
        assert!(experiment.assignment.context.is_empty());
        let target = app.assignment_target(&admin, &scope, key).await.unwrap();
        let mut in_experiment = 0;
        for (subject, before) in subjects.as_object().unwrap() {
            // Twice: the first answer may come from the store, the second from the cache.
            for _ in 0..2 {
                let now = app
                    .assign(&target, &AssignmentRequest::subject(subject))
                    .await
                    .unwrap();
                let now = serde_json::to_value(&now).unwrap();
                assert_eq!(&now, before, "{key}/{subject}");
            }
            if before["in_experiment"] == true {
                in_experiment += 1;
                let stored = store
                    .subject_state(&experiment.id, subject)
                    .await
                    .unwrap()
                    .assignment
                    .expect("an assigned subject's assignment is stored");
                assert_eq!(stored.context, None, "stored before contexts existed");
            }
            compared += 1;
        }
        assert!(
            in_experiment > 60,
            "{key}: {in_experiment} of 120 in the experiment"
        );
    }
    assert_eq!(compared, 240);

    // Lists read the migrated rows too.
    let experiments = store
        .list_all_experiments(&Default::default())
        .await
        .unwrap();
    assert_eq!(experiments.len(), 2);
}
