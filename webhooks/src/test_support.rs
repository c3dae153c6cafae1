//! A real webhook receiver for tests and benchmarks (feature `test-support`): an axum server
//! on `127.0.0.1:0` that records every request and answers what it is told to.
//!
//! - [`Receiver::respond_with`] queues replies (status, optional `Retry-After`) used one per
//!   request, in order; when the queue is empty it answers the default reply (200).
//! - [`Receiver::hold`] makes it record requests and then keep them open, unanswered, until
//!   [`Receiver::release`] (to kill a dispatcher mid-delivery).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One answer of the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }

    pub fn with_retry_after(status: u16, retry_after: &str) -> Self {
        Self {
            status,
            retry_after: Some(retry_after.to_owned()),
        }
    }
}

/// A request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `webhook-id`.
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Default)]
struct Inner {
    received: Vec<Received>,
    replies: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// `true` while requests are held open.
    hold: tokio::sync::watch::Sender<bool>,
    arrived: tokio::sync::Notify,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
        });
        inner
            .replies
            .pop_front()
            .or_else(|| inner.default.clone())
            .unwrap_or(Reply::status(200))
    };
    shared.arrived.notify_waiters();
    let mut hold = shared.hold.subscribe();
    // Held: wait (unanswered) until released.
    let _ = hold.wait_for(|held| !held).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, format!("receiver answered {}", reply.status)).into_response();
    if let Some(ra) = reply.retry_after
        && let Ok(v) = ra.parse()
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

impl Receiver {
    /// Start a receiver on a free loopback port.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let (hold, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            hold,
            arrived: tokio::sync::Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue replies, used one per request in order, before the default.
    pub fn respond_with(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner().replies.extend(replies);
    }

    /// The reply once the queue is used up (200 unless set).
    pub fn set_default(&self, reply: Reply) {
        self.inner().default = Some(reply);
    }

    /// Keep requests open, unanswered, until [`Receiver::release`].
    pub fn hold(&self) {
        self.shared.hold.send_replace(true);
    }

    /// Answer the held requests and stop holding.
    pub fn release(&self) {
        self.shared.hold.send_replace(false);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.inner().received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner().received.len()
    }

    /// Wait until at least `n` requests arrived (panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.count() >= n {
                return self.requests();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the receiver got {} requests within {within:?}, expected {n}",
                    self.count()
                );
            }
        }
    }
}
