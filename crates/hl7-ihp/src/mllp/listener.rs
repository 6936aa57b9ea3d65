//! The accept loop: connection limits (in total and per peer address), back-off when file
//! descriptors run out, one task per connection, and a panic in one connection never takes
//! the server down.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Limits;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::mllp::budget::PartialBudget;
use crate::mllp::connection;
use crate::rate_limit::Level;

/// Longest pause between accepts while file descriptors are exhausted.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How long shutdown waits for connections to finish the message in hand.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Open connections per peer address; an entry leaves with its last connection.
#[derive(Debug, Default)]
struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

impl PeerCounts {
    fn enter(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PeerGuard> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PeerGuard {
            counts: Arc::clone(self),
            ip,
        })
    }
}

/// Releases a peer's slot when its connection ends, however it ends.
struct PeerGuard {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until shutdown, then waits (up to [`SHUTDOWN_GRACE`]) for them to
/// finish the message in hand.
pub async fn run(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    limits: Limits,
    metrics: Arc<Metrics>,
    budget: Arc<PartialBudget>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(PeerCounts::default());
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        while let Some(result) = tasks.try_join_next() {
            reap(result, &metrics);
        }
        if *shutdown.borrow() {
            break;
        }
        // Waiting for a permit before accepting leaves excess connections in the kernel's
        // backlog instead of accepting and dropping them.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
            Some(result) = tasks.join_next(), if !tasks.is_empty() => {
                reap(result, &metrics);
                continue;
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(error) => {
                Metrics::inc(&metrics.accept_errors);
                if out_of_descriptors(&error) {
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed: out of file descriptors, backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                } else {
                    tracing::warn!(%error, "accept failed");
                }
                continue;
            }
        };
        let Some(guard) = peers.enter(peer.ip(), limits.max_connections_per_peer) else {
            Metrics::inc(&metrics.connections_refused);
            if let Some(n_suppressed) = ingest.log_limit().allow(
                peer.ip(),
                "connection refused: too many from this address",
                Level::Warn,
            ) {
                tracing::warn!(%peer, limit = limits.max_connections_per_peer, n_suppressed, "connection refused: too many from this address");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        Metrics::inc(&metrics.connections_accepted);
        if let Some(n_suppressed) =
            ingest
                .log_limit()
                .allow(peer.ip(), "connection opened", Level::Info)
        {
            tracing::info!(%peer, n_suppressed, "connection opened");
        }
        let ingest = Arc::clone(&ingest);
        let metrics = Arc::clone(&metrics);
        let shutdown = shutdown.clone();
        let charge = budget.open();
        tasks.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let _open = OpenConnection::new(Arc::clone(&metrics));
            connection::serve(stream, peer, ingest, limits, metrics, charge, shutdown).await;
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = tasks.join_next().await {
            reap(result, &metrics);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            n_connections = tasks.len(),
            "connections still busy at shutdown; closing them"
        );
        tasks.abort_all();
    }
}

/// Keeps the open-connections gauge true, also when a connection task panics.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics
            .connections_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn reap(result: Result<(), tokio::task::JoinError>, metrics: &Metrics) {
    if let Err(error) = result
        && error.is_panic()
    {
        Metrics::inc(&metrics.connection_panics);
        tracing::error!("a connection task panicked; the server goes on");
    }
}

/// Whether an accept failed because file descriptors ran out (then back off and retry).
pub(crate) fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// Raises the open-file soft limit to the hard limit, so that thousands of devices can stay
/// connected. Returns the limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        limit.current = Some(hard);
        if setrlimit(Resource::Nofile, limit).is_err() {
            return getrlimit(Resource::Nofile).current;
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Whether an address is reachable only from this machine.
pub fn is_loopback(address: &SocketAddr) -> bool {
    address.ip().is_loopback()
}
