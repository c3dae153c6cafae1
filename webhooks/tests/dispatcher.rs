//! The dispatcher against a real recording HTTP receiver and a real SQLite store, with the
//! clock driven by the test: `run_once(now)` claims what is due at `now`, so retries are
//! tested at their scheduled offsets without sleeping. Signatures are checked with the
//! reference `standardwebhooks` crate on the requests the receiver really got.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{activate, config, endpoint, now, secs, sqlite, verify};
use verdict_domain::EventType;
use verdict_store::{AttemptResult, DeliveryStatus, PageRequest};
use verdict_webhooks::test_support::{Receiver, Reply};
use verdict_webhooks::{Dispatcher, DispatcherConfig, RetrySchedule};

const WAIT: Duration = Duration::from_secs(10);

fn dispatcher(store: &verdict_store::DynStore, config: DispatcherConfig) -> Dispatcher {
    // No jitter: retries land exactly on the schedule.
    Dispatcher::new(store.clone(), config)
        .expect("http client")
        .with_jitter(|| 0.5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_message_is_signed_so_the_reference_implementation_verifies_it() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    let ep = endpoint(&t.store, "ep_1", &receiver.url("/hook"), &[]).await;
    let t0 = now();
    let msg = activate(&t.store, "e1", t0).await;

    let report = dispatcher(&t.store, config()).run_once(t0).await.unwrap();
    assert_eq!(
        (report.fanned_out, report.claimed, report.delivered),
        (1, 1, 1)
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.webhook_id(), msg);
    assert_eq!(r.header("content-type"), "application/json");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!((ts - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 60);
    assert!(r.header("webhook-signature").starts_with("v1,"));
    verify(r, &ep.secret).expect("the reference implementation verifies our signature");
    let other = common::new_secret();
    assert!(verify(r, &other).is_err(), "another secret must not verify");
    let body = r.json();
    assert_eq!(body["type"], "experiment.status_changed");
    assert!(body["timestamp"].is_string());
    assert_eq!(body["data"]["experiment"], "exp-e1");
    assert_eq!(body["data"]["environment"], "production");
    assert_eq!(body["data"]["previous_status"], "draft");
    assert_eq!(body["data"]["status"], "running");

    let d = t.store.get_delivery("ep_1", &msg).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 1));
    let attempts = t
        .store
        .list_attempts("ep_1", &msg, PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(attempts.total, 1);
    let a = &attempts.items[0];
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.result, AttemptResult::Delivered);
    assert_eq!(a.response.as_deref(), Some("receiver answered 200"));
    assert_eq!(a.at, t0);
    // Nothing left to do.
    assert!(
        dispatcher(&t.store, config())
            .run_once(t0 + secs(3600))
            .await
            .unwrap()
            .is_idle()
    );
    assert_eq!(receiver.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_500s_then_a_200_is_delivered_on_the_fourth_attempt_at_5s_5min_30min() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.respond_with([Reply::status(500), Reply::status(500), Reply::status(500)]);
    let ep = endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let msg = activate(&t.store, "e1", t0).await;
    let d = dispatcher(&t.store, config());

    // Attempts are due at t0, +5 s, +5 s +5 min, +5 s +5 min +30 min; a round just before
    // each due time sends nothing.
    let due = [t0, t0 + secs(5), t0 + secs(305), t0 + secs(2105)];
    for (i, &at) in due.iter().enumerate() {
        if i > 0 {
            let early = d.run_once(at - secs(1)).await.unwrap();
            assert_eq!(early.claimed, 0, "attempt {} is not due before {at}", i + 1);
            assert_eq!(receiver.count(), i);
        }
        let report = d.run_once(at).await.unwrap();
        assert_eq!(report.attempted, 1, "attempt {} at {at}", i + 1);
        assert_eq!(receiver.count(), i + 1);
    }
    let delivery = t.store.get_delivery("ep_1", &msg).await.unwrap().unwrap();
    assert_eq!(
        (delivery.status, delivery.attempts),
        (DeliveryStatus::Delivered, 4)
    );
    let mut log = t
        .store
        .list_attempts("ep_1", &msg, PageRequest::DEFAULT)
        .await
        .unwrap()
        .items;
    log.reverse();
    let seen: Vec<_> = log
        .iter()
        .map(|a| (a.attempt, a.at, a.status_code, a.result, a.next_attempt_at))
        .collect();
    assert_eq!(
        seen,
        [
            (1, due[0], Some(500), AttemptResult::Retry, Some(due[1])),
            (2, due[1], Some(500), AttemptResult::Retry, Some(due[2])),
            (3, due[2], Some(500), AttemptResult::Retry, Some(due[3])),
            (4, due[3], Some(200), AttemptResult::Delivered, None),
        ]
    );
    // Every attempt carries the same webhook-id and its own valid signature.
    for r in receiver.requests() {
        assert_eq!(r.webhook_id(), msg);
        verify(&r, &ep.secret).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_at_once_and_is_never_retried() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(400));
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let msg = activate(&t.store, "e1", t0).await;
    let d = dispatcher(&t.store, config());
    let report = d.run_once(t0).await.unwrap();
    assert_eq!((report.failed, report.retried), (1, 0));
    for later in [5, 300, 86_400, 30 * 86_400] {
        assert_eq!(d.run_once(t0 + secs(later)).await.unwrap().claimed, 0);
    }
    assert_eq!(receiver.count(), 1);
    let delivery = t.store.get_delivery("ep_1", &msg).await.unwrap().unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.last_status_code, Some(400));
    assert!(
        !t.store
            .get_endpoint("ep_1")
            .await
            .unwrap()
            .unwrap()
            .disabled,
        "a 400 does not disable the endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_and_nothing_more_is_sent_to_it() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(410));
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let first = activate(&t.store, "e1", t0).await;
    let second = activate(&t.store, "e2", t0 + secs(1)).await;
    let d = dispatcher(&t.store, config());
    let report = d.run_once(t0 + secs(1)).await.unwrap();
    assert_eq!(report.disabled, 1);
    assert_eq!(receiver.count(), 1, "the rest of the batch is not sent");
    let ep = t.store.get_endpoint("ep_1").await.unwrap().unwrap();
    assert!(ep.disabled);
    assert_eq!(ep.disabled_reason.as_deref(), Some("gone"));
    // A later message is not even fanned out to a disabled endpoint.
    activate(&t.store, "e3", t0 + secs(2)).await;
    for later in [2, 60, 86_400] {
        d.run_once(t0 + secs(later)).await.unwrap();
    }
    assert_eq!(receiver.count(), 1);
    let d1 = t.store.get_delivery("ep_1", &first).await.unwrap().unwrap();
    assert_eq!(d1.status, DeliveryStatus::Failed);
    assert_eq!(d1.last_status_code, Some(410));
    let attempts = t
        .store
        .list_attempts("ep_1", &first, PageRequest::DEFAULT)
        .await
        .unwrap();
    assert_eq!(attempts.items[0].result, AttemptResult::EndpointDisabled);
    let d2 = t
        .store
        .get_delivery("ep_1", &second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d2.status, DeliveryStatus::Failed);
    assert_eq!(d2.attempts, 0);
    assert_eq!(d2.last_error.as_deref(), Some("endpoint disabled"));
    assert_eq!(
        t.store
            .list_deliveries("ep_1", None, PageRequest::DEFAULT)
            .await
            .unwrap()
            .total,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_120_seconds_is_respected() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.respond_with([Reply::with_retry_after(429, "120")]);
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let msg = activate(&t.store, "e1", t0).await;
    let d = dispatcher(&t.store, config());
    assert_eq!(d.run_once(t0).await.unwrap().retried, 1);
    let delivery = t.store.get_delivery("ep_1", &msg).await.unwrap().unwrap();
    assert_eq!(
        delivery.next_attempt_at,
        Some(t0 + secs(120)),
        "Retry-After (120 s) beats the schedule's 5 s"
    );
    for early in [5, 60, 119] {
        assert_eq!(d.run_once(t0 + secs(early)).await.unwrap().claimed, 0);
    }
    assert_eq!(receiver.count(), 1);
    assert_eq!(d.run_once(t0 + secs(120)).await.unwrap().delivered, 1);
    assert_eq!(receiver.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_signatures_are_sent_and_each_verifies_with_its_own_secret() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    let ep = endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let old = ep.secret.clone();
    let new = common::new_secret();
    let t0 = now();
    t.store
        .rotate_endpoint_secret("ep_1", &new, t0 + secs(86_400), t0)
        .await
        .unwrap()
        .unwrap();
    let msg = activate(&t.store, "e1", t0).await;
    let d = dispatcher(&t.store, config());
    d.run_once(t0).await.unwrap();
    let r = &receiver.wait_for(1, WAIT).await[0];
    let signatures: Vec<&str> = r.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert_ne!(signatures[0], signatures[1]);
    verify(r, &new).expect("the new secret verifies");
    verify(r, &old).expect("the old secret verifies");
    // Each signature is its own secret's: remove one and only the other verifies.
    let mut only_new = r.clone();
    only_new
        .headers
        .insert("webhook-signature", signatures[0].parse().unwrap());
    verify(&only_new, &new).unwrap();
    assert!(verify(&only_new, &old).is_err());
    let mut only_old = r.clone();
    only_old
        .headers
        .insert("webhook-signature", signatures[1].parse().unwrap());
    verify(&only_old, &old).unwrap();
    assert!(verify(&only_old, &new).is_err());

    // After the overlap only the new secret signs.
    t.store
        .redeliver("ep_1", &msg, t0 + secs(86_400))
        .await
        .unwrap()
        .unwrap();
    d.run_once(t0 + secs(86_400)).await.unwrap();
    let r = &receiver.wait_for(2, WAIT).await[1];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    verify(r, &new).unwrap();
    assert!(verify(r, &old).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_receives_its_messages_in_the_order_they_were_created() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let mut expected = Vec::new();
    for i in 0..12 {
        expected.push(activate(&t.store, &format!("e{i:02}"), t0 + secs(i)).await);
    }
    let mut cfg = config();
    cfg.batch_size = 5;
    let d = dispatcher(&t.store, cfg);
    while !d.run_once(t0 + secs(60)).await.unwrap().is_idle() {}
    let got: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.webhook_id().to_owned())
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_only_to_endpoints_subscribed_to_their_type() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    endpoint(
        &t.store,
        "ep_status",
        &receiver.url("/status"),
        &[EventType::StatusChanged],
    )
    .await;
    endpoint(
        &t.store,
        "ep_winner",
        &receiver.url("/winner"),
        &[EventType::WinnerChanged],
    )
    .await;
    let t0 = now();
    activate(&t.store, "e1", t0).await;
    dispatcher(&t.store, config()).run_once(t0).await.unwrap();
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_the_disable_period_is_disabled() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    activate(&t.store, "e1", t0).await;
    let mut cfg = config();
    cfg.disable_after = Duration::from_secs(600);
    let d = dispatcher(&t.store, cfg);
    // Failing since t0: still enabled at +5 s and +305 s, disabled at +2105 s (≥ 10 min).
    for (at, disabled) in [(0, false), (5, false), (305, false), (2105, true)] {
        let report = d.run_once(t0 + secs(at)).await.unwrap();
        assert_eq!(report.attempted, 1);
        let ep = t.store.get_endpoint("ep_1").await.unwrap().unwrap();
        assert_eq!(ep.failing_since, (!disabled).then_some(t0));
        assert_eq!(ep.disabled, disabled, "at +{at} s");
    }
    assert_eq!(
        t.store
            .get_endpoint("ep_1")
            .await
            .unwrap()
            .unwrap()
            .disabled_reason
            .as_deref(),
        Some("failing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_resets_the_failing_period() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.respond_with([Reply::status(500)]);
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    activate(&t.store, "e1", t0).await;
    let d = dispatcher(&t.store, config());
    d.run_once(t0).await.unwrap();
    let ep = t.store.get_endpoint("ep_1").await.unwrap().unwrap();
    assert_eq!(ep.failing_since, Some(t0));
    d.run_once(t0 + secs(5)).await.unwrap();
    let ep = t.store.get_endpoint("ep_1").await.unwrap().unwrap();
    assert_eq!(ep.failing_since, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_retries_are_used_up_is_marked_failed() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(502));
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let msg = activate(&t.store, "e1", t0).await;
    let mut cfg = config();
    cfg.schedule = RetrySchedule::new(vec![Duration::from_secs(1), Duration::from_secs(2)]);
    let d = dispatcher(&t.store, cfg);
    for at in [0, 1, 3] {
        assert_eq!(d.run_once(t0 + secs(at)).await.unwrap().attempted, 1);
    }
    assert_eq!(d.run_once(t0 + secs(3600)).await.unwrap().claimed, 0);
    assert_eq!(receiver.count(), 3);
    let delivery = t.store.get_delivery("ep_1", &msg).await.unwrap().unwrap();
    assert_eq!(
        (delivery.status, delivery.attempts),
        (DeliveryStatus::Failed, 3)
    );
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("every scheduled attempt failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_at_delivery_time_unless_allowed() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    // An IP literal and a name resolving to loopback (checked by the client's resolver).
    let port = receiver.addr().port();
    endpoint(
        &t.store,
        "ep_ip",
        &format!("http://127.0.0.1:{port}/ip"),
        &[],
    )
    .await;
    endpoint(
        &t.store,
        "ep_name",
        &format!("http://localhost:{port}/name"),
        &[],
    )
    .await;
    let t0 = now();
    let msg = activate(&t.store, "e1", t0).await;
    let mut cfg = config();
    cfg.allow_private_targets = false;
    let report = dispatcher(&t.store, cfg).run_once(t0).await.unwrap();
    assert_eq!((report.attempted, report.retried), (2, 2));
    assert_eq!(receiver.count(), 0, "nothing reached the private address");
    for ep in ["ep_ip", "ep_name"] {
        let a = &t
            .store
            .list_attempts(ep, &msg, PageRequest::DEFAULT)
            .await
            .unwrap()
            .items[0];
        let error = a.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("target refused"), "{ep}: {error}");
        assert!(
            error.contains("127.0.0.1") || error.contains("::1"),
            "{ep}: {error}"
        );
        assert_eq!(a.status_code, None);
    }
    // The same targets are reached when private targets are allowed.
    let report = dispatcher(&t.store, config())
        .run_once(t0 + secs(5))
        .await
        .unwrap();
    assert_eq!(report.delivered, 2);
    let paths: HashSet<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, HashSet::from(["/ip".to_owned(), "/name".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_and_the_endpoints_other_messages_wait_for_the_next_round() {
    let t = sqlite().await;
    let receiver = Receiver::start().await;
    receiver.hold();
    endpoint(&t.store, "ep_1", &receiver.url("/"), &[]).await;
    let t0 = now();
    let first = activate(&t.store, "e1", t0).await;
    let second = activate(&t.store, "e2", t0 + secs(1)).await;
    let mut cfg = config();
    cfg.request_timeout = Duration::from_millis(300);
    let d = dispatcher(&t.store, cfg);
    let report = d.run_once(t0 + secs(1)).await.unwrap();
    assert_eq!(
        (report.attempted, report.retried, report.released),
        (1, 1, 1)
    );
    let a = &t
        .store
        .list_attempts("ep_1", &first, PageRequest::DEFAULT)
        .await
        .unwrap()
        .items[0];
    assert!(
        a.error.as_deref().unwrap_or_default().contains("timed out"),
        "{a:?}"
    );
    let d2 = t
        .store
        .get_delivery("ep_1", &second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d2.status, d2.attempts), (DeliveryStatus::Pending, 0));
    receiver.release();
    // The released one is due at once; the timed-out one after its 5 s.
    let report = d.run_once(t0 + secs(1)).await.unwrap();
    assert_eq!(report.delivered, 1);
    let report = d.run_once(t0 + secs(6)).await.unwrap();
    assert_eq!(report.delivered, 1);
}
