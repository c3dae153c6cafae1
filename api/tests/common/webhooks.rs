//! A real webhook dispatcher for a test app, and signature checks with the reference
//! `standardwebhooks` crate.

use std::time::Duration;

use verdict_webhooks::test_support::Received;
use verdict_webhooks::{Dispatcher, DispatcherConfig, RetrySchedule};

/// A dispatcher over `app`'s store that may deliver to 127.0.0.1, retries with the default
/// schedule and no jitter.
pub fn dispatcher(app: &super::TestApp) -> Dispatcher {
    Dispatcher::new(
        app.store.clone(),
        DispatcherConfig {
            allow_private_targets: true,
            request_timeout: Duration::from_secs(5),
            schedule: RetrySchedule::default(),
            disable_after: Duration::from_secs(5 * 86_400),
            lease: Duration::from_secs(30),
            batch_size: 100,
            idle_sleep: Duration::from_millis(10),
        },
    )
    .expect("http client")
    .with_jitter(|| 0.5)
}

/// Whether `received` carries a valid Standard Webhooks signature made with `secret`.
pub fn verify(received: &Received, secret: &str) -> bool {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &received.headers {
        headers.insert(name.clone(), value.clone());
    }
    standardwebhooks::Webhook::new(secret)
        .expect("reference accepts the secret")
        .verify(&received.body, &headers)
        .is_ok()
}
