//! The load generator: `connections` keep-alive HTTP/1.1 connections (hyper's client
//! connection, no pool, no URL parsing per request), each sending one request after the
//! other for a fixed time. Closed loop: a connection sends its next request when the answer
//! to the previous one has been read, so latency includes queueing at the server.
//!
//! The same generator drives Verdict and the bare baseline, so its own cost is the same on
//! both sides of every ratio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
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
    let counter = Arc::new(AtomicU64::new(0));
    let auth = token.map(|t| format!("Bearer {t}"));
    let host = addr.to_string();
    // Connect every connection first, so the clock measures requests, not handshakes.
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        senders.push(sender);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for mut sender in senders {
        let (counter, make, auth, host) =
            (counter.clone(), make.clone(), auth.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let req = make(counter.fetch_add(1, Ordering::Relaxed));
                let mut builder = Request::builder()
                    .method(req.method)
                    .uri(req.path)
                    .header(HOST, &host);
                if let Some(a) = &auth {
                    builder = builder.header(AUTHORIZATION, a);
                }
                if req.body.is_some() {
                    builder = builder.header(CONTENT_TYPE, "application/json");
                }
                let request = builder.body(Full::new(req.body.unwrap_or_default()));
                let t = Instant::now();
                let outcome = match request {
                    Ok(request) => match sender.ready().await {
                        Ok(()) => match sender.send_request(request).await {
                            Ok(resp) => {
                                let status = resp.status();
                                match resp.into_body().collect().await {
                                    Ok(_) if status.is_success() => Ok(()),
                                    Ok(body) => Err(format!(
                                        "{status}: {}",
                                        String::from_utf8_lossy(&body.to_bytes())
                                    )),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                            Err(e) => Err(e.to_string()),
                        },
                        // The connection is gone: nothing more to send on it.
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                            break;
                        }
                    },
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
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
