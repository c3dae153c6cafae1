//! The load generator: `connections` keep-alive HTTP/1.1 connections (hyper's client
//! connection, no pool, no URL parsing per request), each sending one request after the
//! other for a fixed time. Closed loop: a connection sends its next request when the answer
//! to the previous one has been read, so latency includes queueing at the server.
//!
//! The same generator drives Verdict and the bare baseline, so its own cost is the same on
//! both sides of every ratio.
//!
//! [`drive`] runs for a time and [`drive_n`] for a number of requests, both closed loop
//! (as fast as the server answers); [`paced`] sends at a fixed rate instead (open loop,
//! latency counted from when each request was due, so a stalled server shows as latency
//! rather than as fewer requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use verdict_bench::percentile;

/// One request of a scenario.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: hyper::Method,
    /// Path and query, e.g. `/v1/experiments/bench/assignment?subject_id=u-1`.
    pub path: String,
    /// A JSON body, if any.
    pub body: Option<Bytes>,
}

impl Req {
    pub fn get(path: String) -> Self {
        Self {
            method: hyper::Method::GET,
            path,
            body: None,
        }
    }

    pub fn post(path: String, body: impl Into<Bytes>) -> Self {
        Self {
            method: hyper::Method::POST,
            path,
            body: Some(body.into()),
        }
    }
}

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests answered with a 2xx.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Drive `addr` with `connections` connections for `duration`; request `i` (a counter shared
/// by all connections, from 0) is `make(i)`, sent with `Authorization: Bearer {token}`
/// when a token is given.
pub async fn drive(
    addr: SocketAddr,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> anyhow::Result<LoadResult> {
    closed_loop(addr, token, connections, Some(duration), u64::MAX, make).await
}

/// As [`drive`], until `requests` requests (`make(0)` … `make(requests - 1)`) are answered,
/// however long that takes.
pub async fn drive_n(
    addr: SocketAddr,
    token: Option<&str>,
    connections: usize,
    requests: u64,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> anyhow::Result<LoadResult> {
    closed_loop(addr, token, connections, None, requests, make).await
}

/// A request that did not get a 2xx answer.
#[derive(Debug)]
struct Failure {
    message: String,
    /// The connection is gone: nothing more can be sent on it.
    connection_lost: bool,
}

/// One keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Send `req` on `sender` and read the whole answer: `Ok` for a 2xx.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Req,
    auth: Option<&str>,
    host: &str,
) -> Result<(), Failure> {
    let failed = |message: String| Failure {
        message,
        connection_lost: false,
    };
    let mut builder = Request::builder()
        .method(req.method)
        .uri(req.path)
        .header(HOST, host);
    if let Some(a) = auth {
        builder = builder.header(AUTHORIZATION, a);
    }
    if req.body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(req.body.unwrap_or_default()))
        .map_err(|e| failed(e.to_string()))?;
    sender.ready().await.map_err(|e| Failure {
        message: e.to_string(),
        connection_lost: true,
    })?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    match resp.into_body().collect().await {
        Ok(_) if status.is_success() => Ok(()),
        Ok(body) => Err(failed(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body.to_bytes())
        ))),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// [`drive`] and [`drive_n`]: until `duration` has passed (if given) or `limit` requests
/// were made.
async fn closed_loop(
    addr: SocketAddr,
    token: Option<&str>,
    connections: usize,
    duration: Option<Duration>,
    limit: u64,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> anyhow::Result<LoadResult> {
    let counter = Arc::new(AtomicU64::new(0));
    let auth = token.map(|t| format!("Bearer {t}"));
    let host = addr.to_string();
    // Connect every connection first, so the clock measures requests, not handshakes.
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await?);
    }
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut tasks = Vec::with_capacity(connections);
    for mut sender in senders {
        let (counter, make, auth, host) =
            (counter.clone(), make.clone(), auth.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut first_error = None;
            while deadline.is_none_or(|d| Instant::now() < d) {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let t = Instant::now();
                match exchange(&mut sender, make(i), auth.as_deref(), &host).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(f) => {
                        errors += 1;
                        first_error.get_or_insert(f.message);
                        if f.connection_lost {
                            break;
                        }
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (l, e, f) = task.await.context("a load connection panicked")?;
        all.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    Ok(LoadResult {
        ok: all.len() as u64,
        errors,
        elapsed,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        first_error,
    })
}

/// One answered (or failed) request of [`paced`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// What `make` said the request was (an index into the caller's operations).
    pub op: usize,
    /// From when the request was due to when its answer was read.
    pub latency: Duration,
    /// `None` for a 2xx; else the status and body, or the transport error.
    pub error: Option<String>,
}

/// Send `rate` requests per second to `addr` until `until`, over at most `connections`
/// connections: request `i` is due at `start + i / rate` and is `make(i)` (an operation
/// index and the request). Each answered or failed request is pushed to `samples`. A
/// connection the server closed is replaced (the request it failed counts as an error).
pub async fn paced(
    addr: SocketAddr,
    token: Option<&str>,
    connections: usize,
    rate: f64,
    until: Instant,
    make: Arc<dyn Fn(u64) -> (usize, Req) + Send + Sync>,
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
) -> anyhow::Result<()> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let host = addr.to_string();
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let due_rx = Arc::new(tokio::sync::Mutex::new(due_rx));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let mut sender = connect(addr).await?;
        let (due_rx, make, auth, host, samples) = (
            due_rx.clone(),
            make.clone(),
            auth.clone(),
            host.clone(),
            samples.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some((i, due)) = due_rx.lock().await.recv().await else {
                    return anyhow::Ok(());
                };
                let (op, req) = make(i);
                let outcome = exchange(&mut sender, req, auth.as_deref(), &host).await;
                let latency = due.elapsed();
                let lost = outcome.as_ref().is_err_and(|f| f.connection_lost);
                samples
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a load worker panicked"))?
                    .push(Sample {
                        op,
                        latency,
                        error: outcome.err().map(|f| f.message),
                    });
                if lost || sender.is_closed() {
                    sender = connect(addr).await?;
                }
            }
        }));
    }
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    for i in 0u64.. {
        let due = start + interval.mul_f64(i as f64);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if due_tx.send((i, due)).is_err() {
            break;
        }
    }
    drop(due_tx);
    for w in workers {
        w.await.context("a load worker panicked")??;
    }
    Ok(())
}
