//! The accept loop of each MLLP listener (plain TCP and TLS): connection limits (in total
//! and per peer address, shared by both listeners), the allowlist, the PROXY header of a
//! trusted load balancer, the TLS handshake, back-off when file descriptors run out, one
//! task per connection, and a panic in one connection never takes the server down.
//!
//! Order of checks: the connection limit before accepting (excess connections wait in the
//! kernel's backlog); then, for a direct peer, the allowlist and the per-peer limit before
//! a byte is read; for a trusted load balancer's connection, its PROXY header first (within
//! the handshake timeout) and those checks on the device's address it names. The TLS
//! handshake runs in the connection's task under the same timeout, so a slow client holds
//! only its own permit.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hl7::bare::Framing;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::audit::{Audit, AuditEvent};
use crate::config::Limits;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::mllp::budget::{Charge, PartialBudget};
use crate::mllp::connection;
use crate::net::Peer;
use crate::net::allow::{AddressList, canonical};
use crate::net::proxy::{self, ProxyError, ProxyHeader};
use crate::rate_limit::Level;
use crate::tls::{self, ServerTls};

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

/// What both MLLP listeners (plain and TLS) share: the connection limits, who may connect,
/// whose PROXY headers are believed, and the audit trail.
#[derive(Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    peers: Arc<PeerCounts>,
    limits: Limits,
    allow: AddressList,
    /// `None`: PROXY headers are not expected from anyone.
    proxy_from: Option<AddressList>,
    /// For the PROXY header and the TLS handshake.
    handshake_timeout: Duration,
    audit: Arc<Audit>,
    next_connection: AtomicU64,
}

impl Gate {
    /// A gate with these limits and lists.
    pub fn new(
        limits: Limits,
        allow: AddressList,
        proxy_from: Option<AddressList>,
        handshake_timeout: Duration,
        audit: Arc<Audit>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            peers: Arc::new(PeerCounts::default()),
            limits,
            allow,
            proxy_from,
            handshake_timeout,
            audit,
            next_connection: AtomicU64::new(1),
        })
    }

    /// The next connection number, for a `--connect` link's connection too (one numbering
    /// in the audit trail).
    pub fn next_connection_number(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a listener speaks.
#[derive(Clone, Debug)]
pub enum Transport {
    /// MLLP over plain TCP.
    Tcp,
    /// MLLP over TLS, with the listener's reloadable configuration.
    Tls(Arc<ServerTls>),
}

/// Accepts connections until shutdown, then waits (up to [`SHUTDOWN_GRACE`]) for them to
/// finish the message in hand. Both listeners run this over one [`Gate`].
pub async fn run(
    listener: TcpListener,
    transport: Transport,
    gate: Arc<Gate>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    budget: Arc<PartialBudget>,
    mut shutdown: watch::Receiver<bool>,
) {
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
            permit = Arc::clone(&gate.permits).acquire_owned() => match permit {
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
        let (stream, socket_peer) = match accepted {
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
        let socket_peer = SocketAddr::new(canonical(socket_peer.ip()), socket_peer.port());
        let from_proxy = gate
            .proxy_from
            .as_ref()
            .is_some_and(|trusted| trusted.contains(socket_peer.ip()));
        // Without a PROXY header to wait for, the allowlist and the per-peer limit are
        // checked here, before a byte is read or a handshake starts.
        let guard = if from_proxy {
            None
        } else {
            match admit(&gate, &ingest, &metrics, socket_peer, None, true) {
                Some(guard) => Some(guard),
                None => continue,
            }
        };
        let _ = stream.set_nodelay(true);
        let ingest = Arc::clone(&ingest);
        let metrics = Arc::clone(&metrics);
        let gate = Arc::clone(&gate);
        let transport = transport.clone();
        let shutdown = shutdown.clone();
        let charge = budget.open();
        tasks.spawn(async move {
            let _permit = permit;
            connection(
                stream,
                socket_peer,
                guard,
                transport,
                gate,
                ingest,
                metrics,
                charge,
                shutdown,
            )
            .await;
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

/// The allowlist and the per-peer limit for the device at `addr`: its slot, or `None` when
/// refused (counted, logged now and then, audited).
fn admit(
    gate: &Gate,
    ingest: &Ingest,
    metrics: &Metrics,
    addr: SocketAddr,
    via: Option<SocketAddr>,
    check_allow: bool,
) -> Option<PeerGuard> {
    if check_allow && !gate.allow.contains(addr.ip()) {
        Metrics::inc(&metrics.connections_refused_allowlist);
        refused(gate, ingest, addr, via, "not in the allowlist");
        return None;
    }
    let guard = gate
        .peers
        .enter(addr.ip(), gate.limits.max_connections_per_peer);
    if guard.is_none() {
        Metrics::inc(&metrics.connections_refused);
        refused(
            gate,
            ingest,
            addr,
            via,
            "too many connections from this address",
        );
    }
    guard
}

/// Logs and audits a refused connection, both at most once per address and reason per
/// 10 s (the rest counted on the next): a refused host must not flood either.
fn refused(
    gate: &Gate,
    ingest: &Ingest,
    peer: SocketAddr,
    via: Option<SocketAddr>,
    reason: &'static str,
) {
    if let Some(n_suppressed) = ingest.log_limit().allow(peer.ip(), reason, Level::Warn) {
        tracing::warn!(%peer, via = via.map(|v| v.to_string()), n_suppressed, "connection refused: {reason}");
        gate.audit.record(AuditEvent::ConnectionRefused {
            peer,
            via,
            reason: reason.to_owned(),
            suppressed: n_suppressed,
        });
    }
}

/// One connection from accept to close: the PROXY header (from a trusted load balancer),
/// the checks it defers, the TLS handshake, then MLLP.
#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    mut guard: Option<PeerGuard>,
    transport: Transport,
    gate: Arc<Gate>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    charge: Charge,
    shutdown: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + gate.handshake_timeout;
    let mut addr = socket_peer;
    let mut via = None;
    // A trusted balancer speaking for itself (a health check) is not held to the
    // allowlist, which lists devices: `--proxy-protocol-from` already trusts it.
    let mut device = true;
    if guard.is_none() {
        // From a trusted load balancer: the header names the device.
        match tokio::time::timeout_at(deadline, proxy::read_header(&mut stream)).await {
            Ok(Ok(ProxyHeader::Proxied { source, .. })) => {
                addr = SocketAddr::new(canonical(source.ip()), source.port());
                via = Some(socket_peer);
            }
            // The balancer's own health check: it is the peer.
            Ok(Ok(ProxyHeader::Local)) => device = false,
            // A relayed connection from an unknown source: the balancer is the peer, and
            // the allowlist applies to it as to any device.
            Ok(Ok(ProxyHeader::Unknown)) => {}
            Ok(Err(error)) => {
                Metrics::inc(&metrics.connections_refused_proxy);
                let reason = match error {
                    ProxyError::Io(_) => "closed before its PROXY header",
                    ProxyError::Invalid(_) => "invalid PROXY header",
                };
                refused(&gate, &ingest, socket_peer, None, reason);
                return;
            }
            Err(_) => {
                Metrics::inc(&metrics.connections_refused_proxy);
                refused(&gate, &ingest, socket_peer, None, "no PROXY header in time");
                return;
            }
        }
        match admit(&gate, &ingest, &metrics, addr, via, device) {
            Some(admitted) => guard = Some(admitted),
            None => return,
        }
    } else if gate.proxy_from.is_some() && sends_proxy_header(&stream, deadline).await {
        // Only the trusted balancers may say whose connection it is.
        Metrics::inc(&metrics.connections_refused_proxy);
        refused(
            &gate,
            &ingest,
            socket_peer,
            None,
            "PROXY header from an untrusted address",
        );
        return;
    }
    let _guard = guard;
    let _open = OpenConnection::new(Arc::clone(&metrics));
    let connection = gate.next_connection.fetch_add(1, Ordering::Relaxed);
    let mut peer = Peer {
        connection,
        addr,
        via,
        tls: false,
        identity: None,
        link: None,
    };
    let limits = gate.limits;
    let (close, n_frames) = match transport {
        Transport::Tcp => {
            opened(&gate, &ingest, &metrics, &peer, None, None);
            connection::serve(stream, &peer, ingest, limits, metrics, charge, shutdown).await
        }
        Transport::Tls(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            // Fallible: a refused peer's socket comes back, so that the refusal is counted
            // and audited before the peer sees the close.
            let handshake = acceptor.accept(stream).into_fallible();
            let stream = match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err((error, _socket))) => {
                    handshake_failed(
                        &gate,
                        &ingest,
                        &metrics,
                        &peer,
                        tls::handshake_failure(&error),
                        &error.to_string(),
                    );
                    return;
                }
                Err(_) => {
                    handshake_failed(&gate, &ingest, &metrics, &peer, "handshake timeout", "");
                    return;
                }
            };
            Metrics::inc(&metrics.tls_handshakes);
            let (_, session) = stream.get_ref();
            peer.tls = true;
            peer.identity = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| tls::identity::describe(cert))
                .map(Arc::from);
            let version = session.protocol_version().map(|v| format!("{v:?}"));
            let suite = session
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            opened(&gate, &ingest, &metrics, &peer, version, suite);
            // `--framing` is the plain listener's: TLS devices speak MLLP.
            let limits = Limits {
                framing: Framing::Mllp,
                ..limits
            };
            connection::serve(stream, &peer, ingest, limits, metrics, charge, shutdown).await
        }
    };
    gate.audit.record(AuditEvent::ConnectionClosed {
        connection,
        peer: peer.addr,
        identity: peer.identity.as_deref().map(str::to_owned),
        reason: close.as_str(),
        frames: n_frames,
    });
}

/// Counts, logs (now and then) and audits an opened connection.
fn opened(
    gate: &Gate,
    ingest: &Ingest,
    metrics: &Metrics,
    peer: &Peer,
    tls_version: Option<String>,
    cipher_suite: Option<String>,
) {
    Metrics::inc(&metrics.connections_accepted);
    if let Some(n_suppressed) =
        ingest
            .log_limit()
            .allow(peer.addr.ip(), "connection opened", Level::Info)
    {
        tracing::info!(%peer, via = peer.via.map(|v| v.to_string()), transport = peer.transport(), n_suppressed, "connection opened");
    }
    gate.audit.record(AuditEvent::ConnectionOpened {
        connection: peer.connection,
        peer: peer.addr,
        via: peer.via,
        transport: peer.transport(),
        identity: peer.identity.as_deref().map(str::to_owned),
        tls_version,
        cipher_suite,
    });
}

fn handshake_failed(
    gate: &Gate,
    ingest: &Ingest,
    metrics: &Metrics,
    peer: &Peer,
    reason: &'static str,
    detail: &str,
) {
    Metrics::inc(&metrics.tls_handshake_failures);
    if let Some(n_suppressed) =
        ingest
            .log_limit()
            .allow(peer.addr.ip(), "TLS handshake failed", Level::Warn)
    {
        // rustls's own words (protocol facts, no device text) help whoever debugs a device.
        tracing::warn!(%peer, reason, detail, n_suppressed, "TLS handshake failed");
    }
    gate.audit.record(AuditEvent::NodeAuthenticationFailure {
        peer: peer.addr,
        via: peer.via,
        reason,
    });
}

/// Whether a connection's first bytes are a PROXY header, waiting for them no longer than
/// `deadline` (a device that says nothing until then is not sending one). Peeks: the bytes
/// stay for MLLP or TLS.
async fn sends_proxy_header(stream: &TcpStream, deadline: Instant) -> bool {
    let mut head = [0u8; 16];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut head)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || !proxy::looks_like_header(&head[..n]) {
            return false;
        }
        if proxy::is_header_start(&head[..n]) {
            return true;
        }
        // A header's start split over segments: look again in a moment.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20)))
            .await
            .is_err()
        {
            return false;
        }
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
