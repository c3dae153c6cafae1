//! The connection loop: HTTP/1 over TCP with a header-read timeout, a cap on the
//! connections one peer address may hold open, and a graceful stop.
//!
//! `axum::serve` offers none of these limits, and a public listener needs them: without a
//! header-read timeout a client that never finishes its request line holds its connection
//! (and a task) forever; without a per-peer cap one address can open connections until the
//! process runs out of descriptors. The whole-request time limit is not applied here but per
//! route, in the router's middleware (`startup::after_request`), because the push routes are
//! exempt from it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the connection loop enforces (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time a client has to send a request's line and headers; then the connection closes.
    pub header_read_timeout: Duration,
    /// Most connections open at once from one IP address; 0 means unlimited.
    pub max_connections_per_peer: usize,
}

/// Accept and serve connections until `stop`, then stop accepting, ask every connection to
/// end after its current request (push streams end on the same token) and wait for them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let peers = Peers::default();
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let Some(slot) = peers.admit(peer, limits.max_connections_per_peer) else {
            // Dropping the stream closes it: the peer holds enough connections already.
            tracing::debug!(%peer, "connection refused: too many from this address");
            continue;
        };
        connections.spawn(connection(
            stream,
            router.clone(),
            limits,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serve one connection until it closes or, after `stop`, until its current exchange ends.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        // WebSocket upgrades hand the connection over to the push session.
        .with_upgrades();
    let mut conn = pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests: the client's business.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// An `accept` error: per-connection ones (the peer gave up) are skipped; others (out of
/// descriptors) are logged and the loop pauses so it does not spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Open connections per peer address.
#[derive(Debug, Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Peers {
    /// A slot for one more connection from `peer`, or `None` when it holds `max` already
    /// (`max` 0: no limit).
    fn admit(&self, peer: SocketAddr, max: usize) -> Option<Slot> {
        let ip = peer.ip().to_canonical();
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            peers: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    peers: Peers,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_at_most_max_slots_and_a_freed_slot_is_reusable() {
        let peers = Peers::default();
        let a = peers.admit(addr("10.0.0.1:1000"), 2).unwrap();
        let _b = peers.admit(addr("10.0.0.1:1001"), 2).unwrap();
        assert!(peers.admit(addr("10.0.0.1:1002"), 2).is_none());
        // Another address has its own count; an IPv4-mapped IPv6 address is the same peer.
        let _c = peers.admit(addr("10.0.0.2:1000"), 2).unwrap();
        assert!(peers.admit(addr("[::ffff:10.0.0.1]:1003"), 2).is_none());
        drop(a);
        assert!(peers.admit(addr("10.0.0.1:1004"), 2).is_some());
    }

    #[test]
    fn zero_means_unlimited_and_counts_are_forgotten_when_a_peer_leaves() {
        let peers = Peers::default();
        let slots: Vec<_> = (0..1000)
            .map(|i| {
                peers
                    .admit(addr(&format!("10.0.0.1:{}", 1000 + i)), 0)
                    .unwrap()
            })
            .collect();
        drop(slots);
        assert!(peers.0.lock().unwrap().is_empty());
    }
}
