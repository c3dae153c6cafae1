//! Clients that hold connections without finishing their requests: a peer that never
//! completes its headers is cut off after `server.header_read_timeout_seconds` while other
//! clients are served; one address cannot hold more than `server.max_connections_per_peer`
//! connections; a request whose body stalls is answered 408 `request_timeout` after
//! `server.request_timeout_seconds`.
//!
//! The stalling clients bind 127.0.0.2 (Linux routes all of 127/8 to the loopback device),
//! so the server sees them as another peer than the well-behaved client on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::spawn_app_with;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long, beyond its timeout, the server may take to close a connection: generous, the
/// assertions are about what happens, not how fast.
const SLACK: Duration = Duration::from_secs(15);

/// A TCP connection to `server` from 127.0.0.2.
async fn connect_from_other_peer(server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().unwrap())
        .expect("bind 127.0.0.2");
    socket
        .connect(server)
        .await
        .expect("connect from 127.0.0.2")
}

/// Read until the server closes the connection (EOF or reset); everything it sent first.
/// `None` when it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|()| received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_headers_are_cut_off_after_the_header_timeout_while_others_are_served() {
    let header_timeout = Duration::from_secs(3);
    let app = spawn_app_with(&[
        ("VERDICT_SERVER__HEADER_READ_TIMEOUT_SECONDS", "3"),
        // Unlimited, so that only the header timeout can close these connections.
        ("VERDICT_SERVER__MAX_CONNECTIONS_PER_PEER", "0"),
    ])
    .await;

    let opened = Instant::now();
    let mut stalled = Vec::with_capacity(500);
    for i in 0..500 {
        let mut stream = connect_from_other_peer(app.addr).await;
        // Half a request line, or a request line and half a header: never finished.
        let partial: &[u8] = if i % 2 == 0 {
            b"GET /healthz HT"
        } else {
            b"GET /healthz HTTP/1.1\r\nHost: verdict\r\nX-Slow: "
        };
        stream.write_all(partial).await.expect("partial request");
        stalled.push(stream);
    }

    // Meanwhile a client from another address is answered, anonymous and authenticated.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let (status, _) = app.get("/v1/experiments", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        opened.elapsed() < header_timeout,
        "the other client was served only after the stalled connections' timeout"
    );

    // Every stalled connection is closed by the server: none stays open.
    let deadline = opened + header_timeout + SLACK;
    for (i, stream) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            read_until_closed(stream, left).await.is_some(),
            "stalled connection {i} is still open {:?} after it was opened",
            opened.elapsed()
        );
    }

    // The server still serves after shedding them, on a new connection: a pooled one left
    // idle longer than the header timeout was closed by the server too, as it should be.
    let fresh = reqwest::Client::new();
    let health = fresh.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_hold_more_connections_than_the_cap() {
    let app = spawn_app_with(&[
        // Long, so that only the cap can close a connection within this test.
        ("VERDICT_SERVER__HEADER_READ_TIMEOUT_SECONDS", "120"),
        ("VERDICT_SERVER__MAX_CONNECTIONS_PER_PEER", "20"),
    ])
    .await;

    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = connect_from_other_peer(app.addr).await;
        stream.write_all(b"GET /healthz HT").await.unwrap();
        held.push(stream);
    }
    // The 21st is accepted by the kernel and closed by the server at once, before any
    // timeout could have closed it.
    let mut extra = connect_from_other_peer(app.addr).await;
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    let sent = read_until_closed(&mut extra, SLACK)
        .await
        .expect("the connection over the cap is closed");
    assert!(sent.is_empty(), "no answer over the cap: {sent:?}");

    // Other addresses are not affected.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // A held connection that ends frees its slot for the peer.
    drop(held.pop());
    let opened = Instant::now();
    loop {
        let mut stream = connect_from_other_peer(app.addr).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: verdict\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream, SLACK)
            .await
            .unwrap_or_default();
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        // The server may not have seen the close yet.
        assert!(opened.elapsed() < SLACK, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_stalls_is_answered_408_after_the_request_timeout() {
    let app = spawn_app_with(&[
        ("VERDICT_SERVER__REQUEST_TIMEOUT_SECONDS", "2"),
        // The request timeout must exceed the job wait.
        ("VERDICT_JOBS__HTTP_WAIT_SECONDS", "1"),
    ])
    .await;
    let key = app.create_key(&["client"]).await;

    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: verdict\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"events\": ["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let sent_at = Instant::now();

    let answer = read_until_closed(&mut stream, Duration::from_secs(2) + SLACK)
        .await
        .expect("the server answers and closes the stalled request");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = &text[text.find("\r\n\r\n").expect("a body") + 4..];
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        sent_at.elapsed() >= Duration::from_millis(1900),
        "answered before the request timeout: {:?}",
        sent_at.elapsed()
    );
}
