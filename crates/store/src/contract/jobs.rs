//! Contract tests of [`crate::JobStore`]: leases, fencing, run records and retention
//! deletes.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::{T0, rollup_fixture};
use crate::jobs::{LeaseGrant, RetentionFilter, RunOutcome, RunRecord, Trigger};
use crate::model::PageRequest;
use crate::rollup::Granularity;
use crate::{DynStore, Lease, StoreError};

const TTL: Duration = Duration::from_secs(10);

fn at(s: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(s)
}

async fn acquired(store: &DynStore, job: &str, owner: &str, now: OffsetDateTime) -> Lease {
    match store
        .acquire_lease(job, owner, TTL, now, None)
        .await
        .unwrap()
    {
        LeaseGrant::Acquired(l) => l,
        other => panic!("{owner} should get the lease of {job}: {other:?}"),
    }
}

pub async fn leases_grant_one_holder_at_a_time_with_increasing_tokens(store: DynStore) {
    let a = acquired(&store, "aggregate", "a", at(0)).await;
    assert_eq!((a.owner.as_str(), a.expires_at), ("a", at(10)));
    match store
        .acquire_lease("aggregate", "b", TTL, at(5), None)
        .await
        .unwrap()
    {
        LeaseGrant::Held { owner, expires_at } => {
            assert_eq!((owner.as_str(), expires_at), ("a", at(10)))
        }
        other => panic!("b must see a's unexpired lease: {other:?}"),
    }
    // Another job is independent.
    acquired(&store, "evaluate", "b", at(5)).await;
    // Renewal extends the holder's lease; b still cannot take it at 12 s.
    let renewed = store.renew_lease(&a, TTL, at(8)).await.unwrap().unwrap();
    assert_eq!(renewed.expires_at, at(18));
    assert!(matches!(
        store
            .acquire_lease("aggregate", "b", TTL, at(12), None)
            .await
            .unwrap(),
        LeaseGrant::Held { .. }
    ));
    // After expiry b gets it with a newer token; a can no longer renew or release it.
    let b = acquired(&store, "aggregate", "b", at(18)).await;
    assert!(b.token > a.token, "{} > {}", b.token, a.token);
    assert_eq!(store.renew_lease(&a, TTL, at(19)).await.unwrap(), None);
    store.release_lease(&a, at(19)).await.unwrap();
    assert_eq!(
        store.get_lease("aggregate").await.unwrap().unwrap().owner,
        "b",
        "a stale release leaves the new holder's lease alone"
    );
    // Released: the next holder need not wait for expiry.
    store.release_lease(&b, at(20)).await.unwrap();
    let c = acquired(&store, "aggregate", "c", at(20)).await;
    assert!(c.token > b.token);
}

pub async fn concurrent_lease_requests_grant_exactly_one(store: DynStore) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .acquire_lease("retention", &format!("w{i}"), TTL, at(0), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            LeaseGrant::Acquired(l) => granted.push(l),
            LeaseGrant::Held { .. } => {}
            LeaseGrant::AlreadyRan => panic!("no tick was asked for"),
        }
    }
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(
        store.get_lease("retention").await.unwrap().as_ref(),
        granted.first()
    );
}

pub async fn a_scheduled_tick_is_granted_once(store: DynStore) {
    let tick = Some(at(60));
    let LeaseGrant::Acquired(a) = store
        .acquire_lease("evaluate", "a", TTL, at(60), tick)
        .await
        .unwrap()
    else {
        panic!("first request for the tick is granted")
    };
    store.release_lease(&a, at(61)).await.unwrap();
    // b fires on the same tick after a finished: the tick already ran.
    assert_eq!(
        store
            .acquire_lease("evaluate", "b", TTL, at(61), tick)
            .await
            .unwrap(),
        LeaseGrant::AlreadyRan
    );
    // An unscheduled run (HTTP, CLI) is not bound to ticks.
    let LeaseGrant::Acquired(manual) = store
        .acquire_lease("evaluate", "b", TTL, at(62), None)
        .await
        .unwrap()
    else {
        panic!("a manual run is granted")
    };
    store.release_lease(&manual, at(63)).await.unwrap();
    assert_eq!(
        store
            .acquire_lease("evaluate", "c", TTL, at(64), tick)
            .await
            .unwrap(),
        LeaseGrant::AlreadyRan,
        "a manual run in between does not reopen the tick"
    );
    assert!(matches!(
        store
            .acquire_lease("evaluate", "b", TTL, at(120), Some(at(120)))
            .await
            .unwrap(),
        LeaseGrant::Acquired(_)
    ));
}

pub async fn a_stale_holders_fenced_write_is_rejected(store: DynStore) {
    rollup_fixture(&store, "f", 10).await;
    let stale = acquired(&store, "retention", "a", at(0)).await;
    // a stalls past its expiry; b takes over.
    let fresh = acquired(&store, "retention", "b", at(11)).await;
    // The rollup step of a stale holder writes nothing; the current holder's does.
    let late = store.rollup_fenced(1000, Some(&stale.fence())).await;
    assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
    assert_eq!(store.rollup_watermark().await.unwrap(), 0);
    assert!(
        store
            .rolled_up_counts("e1", "conversion", None)
            .await
            .unwrap()
            .iter()
            .all(|c| c.events == 0)
    );
    let report = store
        .rollup_fenced(1000, Some(&fresh.fence()))
        .await
        .unwrap();
    assert_eq!(report.events, 40);
    let all = RetentionFilter {
        before: at(100 * 86_400),
        only: None,
        except: Vec::new(),
    };
    let late = store.delete_events(&all, 100, Some(&stale.fence())).await;
    assert!(
        matches!(late, Err(StoreError::Fenced { ref job, token }) if job == "retention" && token == stale.token),
        "{late:?}"
    );
    let late = store.delete_buckets(&all, 100, Some(&stale.fence())).await;
    assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
    assert_eq!(
        store.scan_events(0, 1000).await.unwrap().len(),
        40,
        "the rejected write deleted nothing"
    );
    let deleted = store
        .delete_events(&all, 100, Some(&fresh.fence()))
        .await
        .unwrap();
    assert_eq!(deleted, 40, "the current holder's write goes through");
}

fn run(id: &str, job: &str, started_s: i64, finished_s: Option<i64>) -> RunRecord {
    RunRecord {
        id: id.into(),
        job: job.into(),
        trigger: Trigger::Schedule,
        owner: "w1".into(),
        tick: Some(at(started_s)),
        fencing_token: Some(7),
        started_at: at(started_s),
        finished_at: finished_s.map(at),
        outcome: if finished_s.is_some() {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Running
        },
        report: json!({"events": started_s}),
        error: None,
    }
}

pub async fn run_records_round_trip_and_list_newest_first(store: DynStore) {
    store
        .put_run(&run("r1", "aggregate", 0, Some(1)))
        .await
        .unwrap();
    store
        .put_run(&run("r2", "aggregate", 60, None))
        .await
        .unwrap();
    store
        .put_run(&run("r3", "evaluate", 30, Some(31)))
        .await
        .unwrap();
    store
        .put_run(&run("r4", "aggregate", 120, Some(121)))
        .await
        .unwrap();
    // Finishing r2 replaces its record.
    let mut r2 = run("r2", "aggregate", 60, Some(65));
    r2.outcome = RunOutcome::Failed;
    r2.error = Some("boom".into());
    store.put_run(&r2).await.unwrap();
    assert_eq!(store.get_run("r2").await.unwrap(), Some(r2));
    assert_eq!(store.get_run("nope").await.unwrap(), None);

    let page = store
        .list_runs(Some("aggregate"), PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    let ids: Vec<_> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r4", "r2", "r1"]);
    let second = store
        .list_runs(
            None,
            PageRequest {
                page: 2,
                page_size: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(second.total, 4);
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].id, "r1");

    // Old finished records go in bounded batches; a running one is kept.
    store
        .put_run(&run("r5", "evaluate", 10, None))
        .await
        .unwrap();
    assert_eq!(store.delete_runs(at(100), 1, None).await.unwrap(), 1);
    assert_eq!(store.delete_runs(at(100), 10, None).await.unwrap(), 2);
    assert_eq!(store.delete_runs(at(100), 10, None).await.unwrap(), 0);
    let left: Vec<_> = store
        .list_runs(None, PageRequest::DEFAULT)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, ["r4", "r5"]);
}

pub async fn retention_deletes_only_aggregated_old_events_in_bounded_batches(store: DynStore) {
    // 40 events (e1 and e2); the first 20 ingested are rolled up, the rest are not.
    rollup_fixture(&store, "r", 50).await;
    let report = store.rollup(20).await.unwrap();
    assert_eq!(report.events, 20);
    let watermark = store.rollup_watermark().await.unwrap();
    let all_events = store.scan_events(0, 1000).await.unwrap();
    assert_eq!(all_events.len(), 40);
    let aggregated = |events: &[verdict_domain::EventRecord]| {
        events
            .iter()
            .filter(|e| e.seq <= watermark)
            .cloned()
            .collect::<Vec<_>>()
    };
    let early = aggregated(&all_events)
        .iter()
        .filter(|e| e.received_at < at(3600))
        .count() as u64;
    assert!(early > 0);

    // Only what was received before the cutoff.
    let hour = RetentionFilter {
        before: at(3600),
        only: None,
        except: Vec::new(),
    };
    assert_eq!(store.delete_events(&hour, 100, None).await.unwrap(), early);

    // Everything old except e2, in batches of at most 4: never past the watermark.
    let all_but_e2 = RetentionFilter {
        before: at(1000 * 86_400),
        only: None,
        except: vec!["e2".into()],
    };
    let mut batches = 0;
    loop {
        let n = store.delete_events(&all_but_e2, 4, None).await.unwrap();
        assert!(n <= 4, "a batch deletes at most its limit: {n}");
        if n == 0 {
            break;
        }
        batches += 1;
    }
    assert!(batches >= 2, "{batches} batches");
    let left = store.scan_events(0, 1000).await.unwrap();
    assert_eq!(
        left.iter().filter(|e| e.seq > watermark).count(),
        20,
        "no un-aggregated event is deleted"
    );
    assert!(
        aggregated(&left).iter().all(|e| e.experiment_id == "e2"),
        "e2 is left to its own rule"
    );
    let e2_left = aggregated(&left).len() as u64;
    assert!(e2_left > 0);
    let only_e2 = RetentionFilter {
        only: Some("e2".into()),
        except: Vec::new(),
        ..all_but_e2.clone()
    };
    assert_eq!(
        store.delete_events(&only_e2, 100, None).await.unwrap(),
        e2_left
    );
    let left = store.scan_events(0, 1000).await.unwrap();
    assert_eq!(left.len(), 20);
    assert!(left.iter().all(|e| e.seq > watermark));

    // Buckets: only those starting before the cutoff, bounded.
    let hours = |store: DynStore| async move {
        store
            .buckets(
                "e1",
                "conversion",
                Granularity::Hour,
                crate::model::TimeRange::default(),
            )
            .await
            .unwrap()
    };
    let before = hours(store.clone()).await;
    let cutoff = before
        .iter()
        .map(|b| b.start)
        .find(|s| *s > before[0].start)
        .expect("buckets in more than one hour");
    let before_len = before.len();
    let first_hour = RetentionFilter {
        before: cutoff,
        only: Some("e1".into()),
        except: Vec::new(),
    };
    let e2_days = store
        .buckets(
            "e2",
            "conversion",
            Granularity::Day,
            crate::model::TimeRange::default(),
        )
        .await
        .unwrap();
    assert!(e2_days.iter().any(|b| b.start < cutoff), "{e2_days:?}");
    let mut deleted = 0;
    loop {
        let n = store.delete_buckets(&first_hour, 1, None).await.unwrap();
        assert!(n <= 1);
        if n == 0 {
            break;
        }
        deleted += n;
    }
    assert!(deleted >= 1);
    let after = hours(store.clone()).await;
    let kept: Vec<_> = before.into_iter().filter(|b| b.start >= cutoff).collect();
    assert_eq!(after, kept);
    // Every event's hour and day buckets of e1 before the cutoff went, one per batch.
    assert!(deleted as usize > before_len - kept.len(), "{deleted}");
    let days = store
        .buckets(
            "e1",
            "exposure",
            Granularity::Day,
            crate::model::TimeRange::default(),
        )
        .await
        .unwrap();
    assert!(days.iter().all(|b| b.start >= cutoff), "{days:?}");
    assert_eq!(
        store
            .buckets(
                "e2",
                "conversion",
                Granularity::Day,
                crate::model::TimeRange::default(),
            )
            .await
            .unwrap(),
        e2_days,
        "another experiment's buckets are not touched"
    );
}

pub async fn a_deleted_experiments_data_is_purged_in_bounded_batches(store: DynStore) {
    // Two experiments with events, rollups, assignments, an override and evaluation state.
    let scope = verdict_domain::Scope::global("prod");
    for id in ["e1", "e2"] {
        let e = super::experiment(scope.clone(), &format!("key-{id}"), id);
        store.create_experiment(&e, "tester").await.unwrap();
    }
    rollup_fixture(&store, "p", 2).await;
    store.rollup(1000).await.unwrap();
    for id in ["e1", "e2"] {
        store
            .set_forced_variant(id, "qa", Some("control"), "tester")
            .await
            .unwrap();
        store
            .put_evaluation_state(id, &json!({"round": 1}))
            .await
            .unwrap();
    }
    let data_of = |store: DynStore, id: &'static str| async move {
        let events = store.scan_events(0, 1000).await.unwrap();
        let buckets = store
            .buckets(
                id,
                "conversion",
                Granularity::Hour,
                crate::model::TimeRange::default(),
            )
            .await
            .unwrap();
        let subjects = ["s1", "s2", "s3", "s4", "qa"];
        let mut stored = 0;
        for s in subjects {
            let record = store.subject_state(id, s).await.unwrap();
            stored +=
                usize::from(record.assignment.is_some()) + usize::from(record.forced.is_some());
        }
        (
            events.iter().filter(|e| e.experiment_id == id).count(),
            buckets.len(),
            stored,
            store.get_evaluation_state(id).await.unwrap().is_some(),
        )
    };
    let e1_before = data_of(store.clone(), "e1").await;
    let e2_before = data_of(store.clone(), "e2").await;
    assert!(e1_before.0 > 0 && e1_before.1 > 0 && e1_before.2 > 1 && e1_before.3);
    assert!(e2_before.0 > 0 && e2_before.1 > 0 && e2_before.2 > 1 && e2_before.3);

    // A purge never acts on an experiment that exists.
    assert_eq!(
        store.purge_experiment_data("e2", 100, None).await.unwrap(),
        0
    );
    assert_eq!(data_of(store.clone(), "e2").await, e2_before);

    // The delete is a compare-and-delete on the version read.
    let e1 = store.get_experiment(&scope, "e1").await.unwrap().unwrap();
    let deletion = |version| crate::Deletion {
        experiment_id: "e1".into(),
        version,
        at: at(7200),
        actor: "tester".into(),
        details: json!({"key": "key-e1", "forced": false}),
    };
    assert!(
        !store
            .delete_experiment(&deletion(e1.version + 1))
            .await
            .unwrap()
    );
    assert!(store.get_experiment(&scope, "e1").await.unwrap().is_some());
    assert!(store.pending_purges().await.unwrap().is_empty());
    assert!(
        store
            .delete_experiment(&deletion(e1.version))
            .await
            .unwrap()
    );
    assert!(store.get_experiment(&scope, "e1").await.unwrap().is_none());
    assert!(
        store
            .get_experiment(&scope, "key-e1")
            .await
            .unwrap()
            .is_none()
    );
    let pending = store.pending_purges().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].experiment_id, "e1");
    assert_eq!(pending[0].deleted_at, at(7200));
    // Its audit log stays, the deletion on top; its key is free again.
    let audit = store.list_audit("e1", PageRequest::DEFAULT).await.unwrap();
    assert_eq!(audit.items[0].action, "deleted");
    assert_eq!(audit.items[0].details["key"], "key-e1");
    let again = super::experiment(scope.clone(), "key-e1", "e3");
    store.create_experiment(&again, "tester").await.unwrap();

    // Bounded batches until nothing is left of e1; e2 keeps all of its data.
    let mut batches = 0;
    let mut purged = 0;
    loop {
        let n = store.purge_experiment_data("e1", 5, None).await.unwrap();
        assert!(n <= 5, "a batch deletes at most its limit: {n}");
        if n == 0 {
            break;
        }
        purged += n;
        batches += 1;
    }
    assert!(batches >= 3, "{batches} batches");
    let expected = e1_before.0 + e1_before.1 + e1_before.2 + usize::from(e1_before.3);
    assert!(
        purged as usize >= expected,
        "{purged} rows purged, at least {expected}"
    );
    assert_eq!(data_of(store.clone(), "e1").await, (0, 0, 0, false));
    assert_eq!(data_of(store.clone(), "e2").await, e2_before);

    store.finish_purge("e1", None).await.unwrap();
    assert!(store.pending_purges().await.unwrap().is_empty());
}
