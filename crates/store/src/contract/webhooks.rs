//! Contract tests of [`crate::WebhookStore`]: endpoints, fan-out, claims, completions, the
//! delivery log and endpoint health.

use std::collections::HashSet;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_domain::experiment::Provided;
use verdict_domain::{EventType, Experiment, ExperimentInput, Scope, Status};

use crate::DynStore;
use crate::model::{PageRequest, StatusChange, WinnerChange};
use crate::webhooks::{
    Attempt, AttemptResult, DeliveryNext, DeliveryStatus, DeliveryUpdate, Endpoint, EndpointPatch,
};

const W0: OffsetDateTime = datetime!(2026-02-01 00:00:00 UTC);

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

fn endpoint(id: &str, environment: &str, types: &[EventType]) -> Endpoint {
    Endpoint {
        id: id.into(),
        environment: environment.into(),
        url: format!("https://hooks.example.com/{id}"),
        description: format!("endpoint {id}"),
        event_types: types.to_vec(),
        disabled: false,
        disabled_reason: None,
        disabled_at: None,
        secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        previous_secret: None,
        previous_secret_expires_at: None,
        failing_since: None,
        created_at: W0,
        updated_at: W0,
    }
}

fn experiment(environment: &str, id: &str) -> Experiment {
    let input: ExperimentInput = serde_json::from_value(json!({
        "key": format!("key-{id}"),
        "variants": [{"key": "control"}, {"key": "treatment"}]
    }))
    .expect("fixture input parses");
    input
        .into_experiment(
            Scope::global(environment),
            Provided {
                id: id.into(),
                salt: "salt".into(),
                now: W0,
            },
        )
        .expect("fixture experiment is valid")
}

/// Create and activate experiment `id` in `environment` at `W0 + at_s`: one
/// `status_changed` message. (MongoDB orders the outbox by creation time, so messages that
/// must keep an order are made at distinct times.)
async fn activate(store: &DynStore, environment: &str, id: &str, at_s: i64) {
    store
        .create_experiment(&experiment(environment, id), "test")
        .await
        .unwrap();
    store
        .transition_status(&StatusChange {
            experiment_id: id.into(),
            from: Status::Draft,
            to: Status::Running,
            at: W0 + secs(at_s),
            actor: "test".into(),
        })
        .await
        .unwrap()
        .expect("activated");
}

fn attempt(
    endpoint_id: &str,
    message_id: &str,
    n: u32,
    code: u16,
    result: AttemptResult,
) -> Attempt {
    Attempt {
        id: 0,
        endpoint_id: endpoint_id.into(),
        message_id: message_id.into(),
        attempt: n,
        at: W0,
        status_code: Some(code),
        latency_ms: 12,
        response: Some(format!("answered {code}")),
        error: None,
        result,
        next_attempt_at: None,
    }
}

fn done(endpoint_id: &str, message_id: &str, code: u16, next: DeliveryNext) -> DeliveryUpdate {
    let result = match next {
        DeliveryNext::Delivered => AttemptResult::Delivered,
        DeliveryNext::RetryAt(_) => AttemptResult::Retry,
        _ => AttemptResult::Failed,
    };
    DeliveryUpdate {
        endpoint_id: endpoint_id.into(),
        message_id: message_id.into(),
        attempt: Some(attempt(endpoint_id, message_id, 1, code, result)),
        next,
    }
}

pub async fn webhook_endpoints_round_trip_update_disable_rotate_and_delete(store: DynStore) {
    let a = endpoint("ep_a", "production", &[]);
    let b = endpoint("ep_b", "staging", &[EventType::WinnerChanged]);
    store.create_endpoint(&a).await.unwrap();
    store.create_endpoint(&b).await.unwrap();
    assert!(matches!(
        store.create_endpoint(&a).await,
        Err(crate::StoreError::Conflict(_))
    ));
    assert_eq!(store.get_endpoint("ep_a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_endpoint("nope").await.unwrap(), None);
    let all = store
        .list_endpoints(None, PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(all.total, 2);
    assert_eq!(all.items, [a.clone(), b.clone()], "oldest first");
    let staging = store
        .list_endpoints(Some("staging"), PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(staging.items, std::slice::from_ref(&b));

    let patched = store
        .update_endpoint(
            "ep_a",
            &EndpointPatch {
                url: Some("https://other.example.com/x".into()),
                description: None,
                event_types: Some(vec![EventType::StatusChanged]),
            },
            W0 + secs(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.url, "https://other.example.com/x");
    assert_eq!(patched.description, a.description, "untouched");
    assert_eq!(patched.event_types, [EventType::StatusChanged]);
    assert_eq!(patched.updated_at, W0 + secs(1));
    assert_eq!(store.get_endpoint("ep_a").await.unwrap(), Some(patched));
    assert_eq!(
        store
            .update_endpoint("nope", &EndpointPatch::default(), W0)
            .await
            .unwrap(),
        None
    );

    let disabled = store
        .set_endpoint_disabled("ep_a", Some("manual"), W0 + secs(2))
        .await
        .unwrap()
        .unwrap();
    assert!(disabled.disabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("manual"));
    assert_eq!(disabled.disabled_at, Some(W0 + secs(2)));
    let enabled = store
        .set_endpoint_disabled("ep_a", None, W0 + secs(3))
        .await
        .unwrap()
        .unwrap();
    assert!(!enabled.disabled);
    assert_eq!(enabled.disabled_reason, None);

    let rotated = store
        .rotate_endpoint_secret(
            "ep_a",
            "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTEyMzQ1Ng==",
            W0 + secs(100),
            W0 + secs(4),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rotated.secret,
        "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTEyMzQ1Ng=="
    );
    assert_eq!(rotated.previous_secret.as_deref(), Some(a.secret.as_str()));
    assert_eq!(rotated.live_secrets(W0 + secs(99)).len(), 2);
    assert_eq!(
        rotated.live_secrets(W0 + secs(100)),
        [rotated.secret.as_str()]
    );

    assert!(store.delete_endpoint("ep_a").await.unwrap());
    assert!(!store.delete_endpoint("ep_a").await.unwrap());
    assert_eq!(store.get_endpoint("ep_a").await.unwrap(), None);
}

pub async fn fan_out_creates_one_delivery_per_subscribed_endpoint_once(store: DynStore) {
    for e in [
        endpoint("ep_all", "production", &[]),
        endpoint("ep_winner", "production", &[EventType::WinnerChanged]),
        endpoint("ep_staging", "staging", &[]),
        endpoint("ep_off", "production", &[]),
    ] {
        store.create_endpoint(&e).await.unwrap();
    }
    store
        .set_endpoint_disabled("ep_off", Some("manual"), W0)
        .await
        .unwrap();
    assert_eq!(store.fan_out_webhooks(W0, 100).await.unwrap(), 0);
    activate(&store, "production", "e1", 0).await;
    assert_eq!(store.fan_out_webhooks(W0, 100).await.unwrap(), 1);
    assert_eq!(
        store.fan_out_webhooks(W0, 100).await.unwrap(),
        0,
        "a message is fanned out once"
    );
    store
        .set_winner(&WinnerChange {
            experiment_id: "e1".into(),
            winner: verdict_domain::Winner {
                variant: "treatment".into(),
                decided_at: W0 + secs(60),
                source: verdict_domain::PolicyMode::Automatic,
                details: json!({}),
            },
            complete: true,
            actor: "test".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    // winner_changed → ep_all and ep_winner; status_changed → ep_all.
    assert_eq!(store.fan_out_webhooks(W0 + secs(60), 100).await.unwrap(), 3);
    let all = store
        .list_deliveries("ep_all", None, PageRequest::DEFAULT)
        .await
        .unwrap();
    let ids: Vec<&str> = all.items.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(
        ids,
        ["msg_e1_v3_status", "msg_e1_v3_winner", "msg_e1_v2_status"],
        "newest first"
    );
    assert!(all.items.windows(2).all(|w| w[0].seq > w[1].seq));
    let first = &all.items[2];
    assert_eq!(first.status, DeliveryStatus::Pending);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.next_attempt_at, Some(W0));
    assert_eq!(first.message.event_type, EventType::StatusChanged);
    let winner_only = store
        .list_deliveries("ep_winner", None, PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(winner_only.total, 1);
    assert_eq!(winner_only.items[0].message.id, "msg_e1_v3_winner");
    for quiet in ["ep_staging", "ep_off"] {
        assert_eq!(
            store
                .list_deliveries(quiet, None, PageRequest::DEFAULT)
                .await
                .unwrap()
                .total,
            0,
            "{quiet}"
        );
    }
    // Fan-out in small steps, in creation order.
    activate(&store, "production", "e2", 1).await;
    activate(&store, "production", "e3", 2).await;
    assert_eq!(store.fan_out_webhooks(W0, 1).await.unwrap(), 1);
    assert_eq!(store.fan_out_webhooks(W0, 1).await.unwrap(), 1);
    assert_eq!(store.fan_out_webhooks(W0, 1).await.unwrap(), 0);
    let claimed = store
        .claim_deliveries("t", W0 + secs(60), W0 + secs(120), 100)
        .await
        .unwrap();
    let order: Vec<&str> = claimed.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(
        order,
        [
            "msg_e1_v2_status",
            "msg_e1_v3_winner",
            "msg_e1_v3_winner",
            "msg_e1_v3_status",
            "msg_e2_v2_status",
            "msg_e3_v2_status"
        ],
        "claims take the oldest first"
    );
}

pub async fn concurrent_claims_never_return_the_same_delivery(store: DynStore) {
    store
        .create_endpoint(&endpoint("ep", "production", &[]))
        .await
        .unwrap();
    for i in 0..30 {
        activate(&store, "production", &format!("e{i:02}"), i).await;
    }
    while store.fan_out_webhooks(W0, 7).await.unwrap() > 0 {}
    let lease_until = W0 + secs(30);
    let claimers = (0..6).map(|c| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_deliveries(&format!("claimer-{c}"), W0, lease_until, 2)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.message.id));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for handle in claimers {
        for id in handle.await.unwrap() {
            total += 1;
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!((total, seen.len()), (30, 30));
    // Nothing more while the leases run; everything again once they expired.
    assert!(
        store
            .claim_deliveries("late", lease_until - secs(1), lease_until + secs(30), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_deliveries("late", lease_until, lease_until + secs(30), 100)
            .await
            .unwrap()
            .len(),
        30
    );
}

pub async fn completions_apply_only_while_the_claim_holds_the_lease(store: DynStore) {
    store
        .create_endpoint(&endpoint("ep", "production", &[]))
        .await
        .unwrap();
    activate(&store, "production", "e1", 0).await;
    store.fan_out_webhooks(W0, 10).await.unwrap();
    let msg = "msg_e1_v2_status";
    let first = store
        .claim_deliveries("first", W0, W0 + secs(10), 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The first claimer stalls past its lease; a second claims the delivery.
    let second = store
        .claim_deliveries("second", W0 + secs(10), W0 + secs(20), 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    store
        .complete_deliveries(
            "first",
            &[done("ep", msg, 200, DeliveryNext::Delivered)],
            W0 + secs(11),
        )
        .await
        .unwrap();
    let d = store.get_delivery("ep", msg).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.attempts),
        (DeliveryStatus::Pending, 0),
        "a lost lease changes nothing"
    );
    assert_eq!(
        store
            .list_attempts("ep", msg, PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        1,
        "but the attempt that happened is logged"
    );
    let retry_at = W0 + secs(300);
    store
        .complete_deliveries(
            "second",
            &[done("ep", msg, 503, DeliveryNext::RetryAt(retry_at))],
            W0 + secs(12),
        )
        .await
        .unwrap();
    let d = store.get_delivery("ep", msg).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.next_attempt_at, Some(retry_at));
    assert_eq!(d.last_status_code, Some(503));
    assert_eq!(d.last_attempt_at, Some(W0));
    assert_eq!(d.updated_at, W0 + secs(12));
    // Not due before its retry time, even though the lease is free.
    assert!(
        store
            .claim_deliveries("third", retry_at - secs(1), retry_at + secs(10), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A released claim keeps the state and frees the delivery at once.
    let again = store
        .claim_deliveries("third", retry_at, retry_at + secs(10), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    store
        .complete_deliveries(
            "third",
            &[DeliveryUpdate {
                endpoint_id: "ep".into(),
                message_id: msg.into(),
                attempt: None,
                next: DeliveryNext::Release,
            }],
            retry_at,
        )
        .await
        .unwrap();
    let released = store
        .claim_deliveries("fourth", retry_at, retry_at + secs(10), 10)
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].attempts, 1);
    store
        .complete_deliveries(
            "fourth",
            &[done("ep", msg, 200, DeliveryNext::Delivered)],
            retry_at,
        )
        .await
        .unwrap();
    let d = store.get_delivery("ep", msg).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 2));
    assert_eq!(d.next_attempt_at, None);
    assert!(
        store
            .claim_deliveries("fifth", retry_at + secs(999), retry_at + secs(1999), 10)
            .await
            .unwrap()
            .is_empty(),
        "delivered is final"
    );
}

pub async fn the_delivery_log_filters_redelivers_and_recovers(store: DynStore) {
    store
        .create_endpoint(&endpoint("ep", "production", &[]))
        .await
        .unwrap();
    for (i, id) in ["e1", "e2", "e3"].into_iter().enumerate() {
        activate(&store, "production", id, i as i64).await;
    }
    store.fan_out_webhooks(W0, 10).await.unwrap();
    store
        .claim_deliveries("t", W0, W0 + secs(30), 10)
        .await
        .unwrap();
    store
        .complete_deliveries(
            "t",
            &[
                done("ep", "msg_e1_v2_status", 200, DeliveryNext::Delivered),
                done(
                    "ep",
                    "msg_e2_v2_status",
                    400,
                    DeliveryNext::Failed {
                        reason: "rejected".into(),
                    },
                ),
                DeliveryUpdate {
                    endpoint_id: "ep".into(),
                    message_id: "msg_e3_v2_status".into(),
                    attempt: None,
                    next: DeliveryNext::Failed {
                        reason: "endpoint disabled".into(),
                    },
                },
            ],
            W0 + secs(1),
        )
        .await
        .unwrap();
    let failed = store
        .list_deliveries("ep", Some(DeliveryStatus::Failed), PageRequest::DEFAULT)
        .await
        .unwrap();
    let ids: Vec<&str> = failed.items.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["msg_e3_v2_status", "msg_e2_v2_status"]);
    assert_eq!(
        failed.items[0].last_error.as_deref(),
        Some("endpoint disabled")
    );
    assert_eq!(failed.items[0].attempts, 0);
    assert_eq!(failed.items[1].last_status_code, Some(400));
    assert_eq!(failed.items[1].last_error.as_deref(), Some("rejected"));
    let delivered = store
        .list_deliveries("ep", Some(DeliveryStatus::Delivered), PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(delivered.total, 1);
    let page2 = store
        .list_deliveries(
            "ep",
            None,
            PageRequest {
                page: 2,
                page_size: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.total, 3);
    assert_eq!(page2.items.len(), 1);
    assert_eq!(page2.items[0].message.id, "msg_e1_v2_status");
    let attempts = store
        .list_attempts("ep", "msg_e2_v2_status", PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(attempts.total, 1);
    let a = &attempts.items[0];
    assert_eq!(
        (a.status_code, a.result, a.latency_ms),
        (Some(400), AttemptResult::Failed, 12)
    );
    assert_eq!(a.response.as_deref(), Some("answered 400"));

    // Redeliver one: a new round, due now.
    let now = W0 + secs(100);
    let again = store
        .redeliver("ep", "msg_e1_v2_status", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.status, again.attempts, again.next_attempt_at),
        (DeliveryStatus::Pending, 0, Some(now))
    );
    assert_eq!(store.redeliver("ep", "msg_nope", now).await.unwrap(), None);
    // Recover every failed one created since a time: none after W0 + 1 s, both since W0.
    assert_eq!(
        store.recover_failed("ep", W0 + secs(1), now).await.unwrap(),
        0
    );
    assert_eq!(store.recover_failed("ep", W0, now).await.unwrap(), 2);
    let pending = store
        .list_deliveries("ep", Some(DeliveryStatus::Pending), PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(pending.total, 3);
    assert_eq!(
        store
            .claim_deliveries("t2", now, now + secs(30), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    // Deleting the endpoint deletes its log.
    store.delete_endpoint("ep").await.unwrap();
    assert_eq!(
        store
            .list_deliveries("ep", None, PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        0
    );
    assert_eq!(
        store
            .list_attempts("ep", "msg_e2_v2_status", PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        0
    );
}

pub async fn an_experiments_deliveries_are_listed_newest_first_across_endpoints(store: DynStore) {
    for e in [
        endpoint("ep_a", "production", &[]),
        endpoint("ep_b", "production", &[]),
        endpoint("ep_winner", "production", &[EventType::WinnerChanged]),
    ] {
        store.create_endpoint(&e).await.unwrap();
    }
    // Ids beside `e1` in the order of strings: `e10` sorts before its messages' prefix
    // `msg_e1_`, `e1a` after it.
    for (i, id) in ["e10", "e1", "e1a"].into_iter().enumerate() {
        activate(&store, "production", id, i as i64).await;
    }
    store.fan_out_webhooks(W0, 100).await.unwrap();
    store
        .set_winner(&WinnerChange {
            experiment_id: "e1".into(),
            winner: verdict_domain::Winner {
                variant: "treatment".into(),
                decided_at: W0 + secs(60),
                source: verdict_domain::PolicyMode::Automatic,
                details: json!({}),
            },
            complete: true,
            actor: "test".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    store.fan_out_webhooks(W0 + secs(60), 100).await.unwrap();

    let all = store
        .list_experiment_deliveries("e1", PageRequest::DEFAULT)
        .await
        .unwrap();
    let listed: Vec<(&str, &str)> = all
        .items
        .iter()
        .map(|d| (d.message.id.as_str(), d.endpoint_id.as_str()))
        .collect();
    let mut expected = vec![
        ("msg_e1_v2_status", "ep_a"),
        ("msg_e1_v2_status", "ep_b"),
        ("msg_e1_v3_winner", "ep_a"),
        ("msg_e1_v3_winner", "ep_b"),
        ("msg_e1_v3_winner", "ep_winner"),
        ("msg_e1_v3_status", "ep_a"),
        ("msg_e1_v3_status", "ep_b"),
    ];
    assert_eq!(all.total, 7);
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every endpoint's, and only e1's");
    assert!(
        all.items.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first: {listed:?}"
    );
    assert_eq!(listed[6].0, "msg_e1_v2_status", "{listed:?}");
    for d in &all.items {
        assert_eq!(d.message.experiment_id, "e1");
        assert_eq!(
            Some(d),
            store
                .get_delivery(&d.endpoint_id, &d.message.id)
                .await
                .unwrap()
                .as_ref()
        );
    }
    let page = store
        .list_experiment_deliveries(
            "e1",
            PageRequest {
                page: 2,
                page_size: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 7);
    assert_eq!(page.items, all.items[4..]);
    for (other, n) in [("e10", 2), ("e1a", 2), ("e", 0), ("e2", 0)] {
        let page = store
            .list_experiment_deliveries(other, PageRequest::DEFAULT)
            .await
            .unwrap();
        assert_eq!(page.total, n, "{other}");
        assert_eq!(page.items.len(), n as usize, "{other}");
        assert!(
            page.items.iter().all(|d| d.message.experiment_id == other),
            "{other}"
        );
    }
}

pub async fn endpoint_health_keeps_the_first_failure_until_a_success(store: DynStore) {
    store
        .create_endpoint(&endpoint("ep", "production", &[]))
        .await
        .unwrap();
    assert_eq!(
        store.record_endpoint_health("ep", true, W0).await.unwrap(),
        None
    );
    assert_eq!(
        store.record_endpoint_health("ep", false, W0).await.unwrap(),
        Some(W0)
    );
    assert_eq!(
        store
            .record_endpoint_health("ep", false, W0 + secs(60))
            .await
            .unwrap(),
        Some(W0),
        "the first failure is kept"
    );
    assert_eq!(
        store
            .get_endpoint("ep")
            .await
            .unwrap()
            .unwrap()
            .failing_since,
        Some(W0)
    );
    assert_eq!(
        store
            .record_endpoint_health("ep", true, W0 + secs(61))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .record_endpoint_health("nope", false, W0)
            .await
            .unwrap(),
        None
    );
}

pub async fn old_attempts_of_finished_deliveries_are_deleted_in_batches(store: DynStore) {
    store
        .create_endpoint(&endpoint("ep", "production", &[]))
        .await
        .unwrap();
    activate(&store, "production", "e1", 0).await;
    activate(&store, "production", "e2", 1).await;
    store.fan_out_webhooks(W0, 10).await.unwrap();
    let claimed = store
        .claim_deliveries("c", W0, W0 + secs(10), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let (done_msg, pending_msg) = ("msg_e1_v2_status", "msg_e2_v2_status");
    store
        .complete_deliveries(
            "c",
            &[
                done("ep", done_msg, 200, DeliveryNext::Delivered),
                done(
                    "ep",
                    pending_msg,
                    503,
                    DeliveryNext::RetryAt(W0 + secs(300)),
                ),
            ],
            W0 + secs(1),
        )
        .await
        .unwrap();
    let logged = |store: DynStore, msg: &'static str| async move {
        store
            .list_attempts("ep", msg, PageRequest::DEFAULT)
            .await
            .unwrap()
            .total
    };
    // Nothing is older than the attempts themselves.
    assert_eq!(
        store.delete_webhook_attempts(W0, 10, None).await.unwrap(),
        0
    );
    let later = W0 + time::Duration::days(31);
    assert_eq!(
        store.delete_webhook_attempts(later, 1, None).await.unwrap(),
        1,
        "a batch of one"
    );
    assert_eq!(
        store
            .delete_webhook_attempts(later, 10, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(logged(store.clone(), done_msg).await, 0);
    assert_eq!(
        logged(store.clone(), pending_msg).await,
        1,
        "a pending delivery keeps its log"
    );
    assert_eq!(
        store
            .get_delivery("ep", done_msg)
            .await
            .unwrap()
            .map(|d| d.status),
        Some(DeliveryStatus::Delivered),
        "the delivery itself stays"
    );
}
