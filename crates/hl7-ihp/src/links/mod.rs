//! Client mode (`--connect`): links out to devices and gateways that serve HL7 (the device is
//! the TCP server and pushes its messages to whoever connects, GE-style). Each link is one
//! task that connects (plain TCP or TLS), reads what the device pushes through the same
//! per-connection loop as an accepted connection ([`crate::mllp::connection`]: framing,
//! timeouts, `Ingest`, the ACK rules), and when the connection drops or cannot be made,
//! waits a bounded, jittered, doubling back-off (0.5 s to 30 s) and connects again; every
//! wait ends at shutdown.
//!
//! A link only ever goes to its configured address: nothing a device sends chooses where we
//! connect. Each link's open and close is audited like an accepted connection's, with the
//! link's name as part of the peer's identity, and its state is kept in [`Links`] for
//! `/metrics`, `/api/v1/devices` and the dashboard. Link names are configuration, never
//! patient data; a link's last error is an I/O or TLS reason, never message content.
//!
//! With several receivers on one store, each link is read by one of them at a time: a link
//! connects only while this receiver holds its lease `link:<name>` ([`crate::store::lease`]),
//! is shown as `standby` while another receiver holds it, and when the lease is lost its
//! connection finishes the message in hand and closes, so a device is never read twice.
//! When the holder dies, its lock is released and another receiver's link connects within
//! seconds. On SQLite every lease is held.

pub mod target;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::audit::{Audit, AuditEvent};
use crate::config::Limits;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::mllp::budget::PartialBudget;
use crate::mllp::connection::{self, Close};
use crate::net::Peer;

pub use target::LinkTarget;

/// The first pause after a failed or lost connection.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the TCP connection and the TLS handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that stayed up this long starts the next back-off from the beginning.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Longest last error kept for the API.
const MAX_ERROR_CHARS: usize = 200;

/// TLS for every link (`--connect-tls`): the client configuration and, when given, the name
/// every device's certificate must carry (else each link's host).
#[derive(Clone)]
pub struct LinkTls {
    /// The client configuration, loaded once.
    pub config: Arc<rustls::ClientConfig>,
    /// `--connect-tls-server-name`.
    pub server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Where a link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkPhase {
    /// The first attempt is under way.
    Connecting,
    /// Connected: the device's messages are read and answered.
    Connected,
    /// Not connected; waiting to try again (since `since`).
    Retrying,
    /// Shut down.
    Stopped,
    /// Held by another receiver on the same store (its lease `link:<name>`): not connected
    /// here, ready to take over.
    Standby,
}

/// One link's state as `/api/v1/devices` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LinkStatus {
    /// The link's configured name (`bed-12`).
    pub name: String,
    /// The configured `HOST:PORT`.
    pub address: String,
    /// `connecting`, `connected`, `retrying`, `stopped`, or `standby` (another receiver
    /// holds the link).
    pub state: LinkPhase,
    /// When the link entered this state (RFC 3339, UTC).
    pub since: String,
    /// When the last message arrived on it (RFC 3339, UTC).
    pub last_message_at: Option<String>,
    /// Messages (frames) read on it since start.
    pub n_messages: u64,
    /// Connections made again after one was lost or failed.
    pub n_reconnects: u64,
    /// Attempts that failed (refused, timed out, TLS refused).
    pub n_failures: u64,
    /// Why the last connection failed or ended: an I/O or TLS reason, no message content.
    pub last_error: Option<String>,
    /// `tcp` or `tls`.
    pub transport: &'static str,
}

/// What a link's task updates and the readers read.
#[derive(Debug)]
pub struct LinkState {
    name: String,
    address: String,
    tls: bool,
    up: AtomicBool,
    n_messages: AtomicU64,
    n_reconnects: AtomicU64,
    n_failures: AtomicU64,
    status: Mutex<Mutable>,
}

#[derive(Debug)]
struct Mutable {
    phase: LinkPhase,
    since: i64,
    last_message_at: Option<i64>,
    last_error: Option<String>,
}

/// Unix milliseconds as the API writes times.
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl LinkState {
    fn new(target: &LinkTarget, tls: bool) -> LinkState {
        LinkState {
            name: target.name.clone(),
            address: target.address.clone(),
            tls,
            up: AtomicBool::new(false),
            n_messages: AtomicU64::new(0),
            n_reconnects: AtomicU64::new(0),
            n_failures: AtomicU64::new(0),
            status: Mutex::new(Mutable {
                phase: LinkPhase::Connecting,
                since: now_ms(),
                last_message_at: None,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        // A panic while holding it leaves plain values behind: still readable.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_phase(&self, phase: LinkPhase, error: Option<String>) {
        self.up
            .store(phase == LinkPhase::Connected, Ordering::Relaxed);
        let mut status = self.lock();
        if status.phase != phase {
            status.phase = phase;
            status.since = now_ms();
        }
        if let Some(error) = error {
            status.last_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
        }
    }

    fn message(&self) {
        self.n_messages.fetch_add(1, Ordering::Relaxed);
        self.lock().last_message_at = Some(now_ms());
    }

    /// The state now.
    pub fn status(&self) -> LinkStatus {
        let status = self.lock();
        LinkStatus {
            name: self.name.clone(),
            address: self.address.clone(),
            state: status.phase,
            since: rfc3339(status.since),
            last_message_at: status.last_message_at.map(rfc3339),
            n_messages: self.n_messages.load(Ordering::Relaxed),
            n_reconnects: self.n_reconnects.load(Ordering::Relaxed),
            n_failures: self.n_failures.load(Ordering::Relaxed),
            last_error: status.last_error.clone(),
            transport: if self.tls { "tls" } else { "tcp" },
        }
    }
}

/// Every link's state, in configuration order (none without `--connect`).
#[derive(Debug, Default)]
pub struct Links {
    links: Vec<Arc<LinkState>>,
}

impl Links {
    /// The states of these targets, before any task runs.
    pub fn new(targets: &[LinkTarget], tls: bool) -> Arc<Links> {
        Arc::new(Links {
            links: targets
                .iter()
                .map(|t| Arc::new(LinkState::new(t, tls)))
                .collect(),
        })
    }

    /// Each link's state now.
    pub fn statuses(&self) -> Vec<LinkStatus> {
        self.links.iter().map(|l| l.status()).collect()
    }

    /// Appends the links' series to a Prometheus text (nothing without links). Link names
    /// are configuration, checked to be plain (`target::valid_name`), so they need no
    /// escaping in a label.
    pub fn render_metrics(&self, out: &mut String) {
        if self.links.is_empty() {
            return;
        }
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&LinkStatus) -> i64,
        );
        let series: [Series; 5] = [
            (
                "hl7ihp_link_up",
                "gauge",
                "1 while the link to the device is connected.",
                |s| i64::from(s.state == LinkPhase::Connected),
            ),
            (
                "hl7ihp_link_messages_total",
                "counter",
                "Messages read on the link.",
                |s| s.n_messages as i64,
            ),
            (
                "hl7ihp_link_reconnects_total",
                "counter",
                "Connections made again after the link was lost or failed.",
                |s| s.n_reconnects as i64,
            ),
            (
                "hl7ihp_link_connect_failures_total",
                "counter",
                "Connection attempts of the link that failed.",
                |s| s.n_failures as i64,
            ),
            (
                "hl7ihp_link_last_message_seconds",
                "gauge",
                "Unix time of the last message on the link (0: none yet).",
                |s| {
                    s.last_message_at
                        .as_deref()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map_or(0, |t| t.as_second())
                },
            ),
        ];
        let statuses = self.statuses();
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for status in &statuses {
                let _ = writeln!(out, "{name}{{link=\"{}\"}} {}", status.name, value(status));
            }
        }
    }
}

/// What every link task shares.
#[derive(Clone)]
pub struct LinkContext {
    /// The same ingest as the listeners'.
    pub ingest: Arc<Ingest>,
    /// The connection limits (`--connect-framing` replaces the framing).
    pub limits: Limits,
    /// The receiver's metrics.
    pub metrics: Arc<Metrics>,
    /// The budget for unfinished frames, shared with the listeners.
    pub budget: Arc<PartialBudget>,
    /// The audit trail.
    pub audit: Arc<Audit>,
    /// TLS for every link, when `--connect-tls`.
    pub tls: Option<LinkTls>,
    /// Hands out connection numbers, shared with the listeners'.
    pub numbers: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Where each link's lease comes from.
    pub leases: Arc<crate::store::lease::Leases>,
}

/// Runs every link until shutdown; returns when all have stopped.
pub async fn run(
    targets: Vec<LinkTarget>,
    links: Arc<Links>,
    context: LinkContext,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (target, state) in targets.into_iter().zip(links.links.iter().cloned()) {
        tasks.spawn(run_link(target, state, context.clone(), shutdown.clone()));
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            tracing::error!(%error, "a link task failed");
        }
    }
}

/// A small generator for the back-off's jitter; not for anything secret.
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Jitter {
        let mut state = now_ms() as u64 ^ 0x9E37_79B9_7F4A_7C15;
        for byte in seed.bytes() {
            state = (state ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3);
        }
        Jitter(state | 1)
    }

    /// A factor in [0.5, 1.0).
    fn factor(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        0.5 + (self.0 >> 11) as f64 / (1u64 << 53) as f64 / 2.0
    }
}

/// The pause after `failures` failed or lost connections in a row: 0.5 s doubling to 30 s,
/// times a jitter factor in [0.5, 1), so devices restarted together are not all asked at once.
fn backoff(failures: u32, factor: f64) -> Duration {
    let doubled = BACKOFF_MIN.saturating_mul(1u32 << failures.min(10));
    doubled.min(BACKOFF_MAX).mul_f64(factor)
}

/// One link's loop: connect, serve, back off, again, until shutdown.
async fn run_link(
    target: LinkTarget,
    state: Arc<LinkState>,
    context: LinkContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut jitter = Jitter::new(&target.name);
    let mut failures: u32 = 0;
    let mut connected_before = false;
    let limits = Limits {
        framing: target.framing,
        ..context.limits
    };
    let mut lease = context
        .leases
        .take(&crate::store::lease::link_lease(&target.name));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(fence) = lease.fence() else {
            // Another receiver reads this device (or the store cannot say): wait for the lease.
            state.set_phase(LinkPhase::Standby, None);
            tokio::select! {
                _ = lease.acquired() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(&target, context.tls.as_ref())) => attempt,
            _ = shutdown.changed() => break,
        };
        let failure = match attempt {
            Err(_) => Some("connect timed out".to_owned()),
            Ok(Err(error)) => Some(error),
            Ok(Ok(stream)) => {
                if connected_before {
                    state.n_reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
                let started = tokio::time::Instant::now();
                let close = serve_leased(
                    &target,
                    &state,
                    &context,
                    limits,
                    stream,
                    shutdown.clone(),
                    &lease,
                    fence,
                )
                .await;
                if *shutdown.borrow() {
                    break;
                }
                if close == Close::Shutdown {
                    // The lease was lost: closed after the message in hand, no back-off.
                    tracing::info!(link = %target.name, "link handed over: its lease is lost");
                    continue;
                }
                if started.elapsed() >= STABLE_AFTER {
                    failures = 0;
                }
                state.set_phase(
                    LinkPhase::Retrying,
                    Some(format!("connection ended: {}", close.as_str())),
                );
                None
            }
        };
        if let Some(error) = failure {
            state.n_failures.fetch_add(1, Ordering::Relaxed);
            if state.lock().last_error.as_deref() != Some(error.as_str()) {
                tracing::warn!(link = %target.name, address = %target.address, %error, "cannot connect to the device; retrying");
            }
            state.set_phase(LinkPhase::Retrying, Some(error));
        }
        let pause = backoff(failures, jitter.factor());
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
    state.set_phase(LinkPhase::Stopped, None);
}

/// A connected link's stream.
enum Stream {
    Plain(TcpStream, SocketAddr),
    Tls(
        Box<tokio_rustls::client::TlsStream<TcpStream>>,
        SocketAddr,
        Option<Arc<str>>,
    ),
}

/// Connects to the target's address (resolved now, so a device's new DHCP address is
/// found), and over TLS completes the handshake with the certificate checks.
async fn connect(target: &LinkTarget, tls: Option<&LinkTls>) -> Result<Stream, String> {
    let address = tokio::net::lookup_host(&target.address)
        .await
        .map_err(|e| format!("cannot resolve the address: {e}"))?
        .next()
        .ok_or_else(|| "no address for the host".to_owned())?;
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::Plain(stream, address));
    };
    let name = match &tls.server_name {
        Some(name) => name.clone(),
        None => ServerName::try_from(target.host().to_owned())
            .map_err(|_| "the host is not a DNS name or an IP address".to_owned())?,
    };
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {}", crate::tls::handshake_failure(&e)))?;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| crate::tls::identity::describe(cert))
        .map(Arc::from);
    Ok(Stream::Tls(Box::new(stream), address, identity))
}

/// Serves a connected link while this receiver holds its lease (taken with `fence`): when
/// the lease is lost, the connection is asked to stop as at shutdown (the message in hand
/// is answered, then it closes).
#[allow(clippy::too_many_arguments)]
async fn serve_leased(
    target: &LinkTarget,
    state: &LinkState,
    context: &LinkContext,
    limits: Limits,
    stream: Stream,
    mut shutdown: watch::Receiver<bool>,
    lease: &crate::store::lease::Lease,
    fence: i64,
) -> Close {
    let (stop, stopped) = watch::channel(*shutdown.borrow());
    let serving = serve(target, state, context, limits, stream, stopped);
    tokio::pin!(serving);
    let mut watching_shutdown = true;
    let mut watching_lease = true;
    loop {
        tokio::select! {
            close = &mut serving => return close,
            changed = shutdown.changed(), if watching_shutdown => {
                if changed.is_err() || *shutdown.borrow() {
                    watching_shutdown = false;
                    let _ = stop.send(true);
                }
            }
            () = lease.lost(fence), if watching_lease => {
                watching_lease = false;
                let _ = stop.send(true);
            }
        }
    }
}

/// Serves one connected link with the listeners' connection loop; audits its open and close.
async fn serve(
    target: &LinkTarget,
    state: &LinkState,
    context: &LinkContext,
    limits: Limits,
    stream: Stream,
    shutdown: watch::Receiver<bool>,
) -> Close {
    let connection = (context.numbers)();
    let (addr, tls, device_identity) = match &stream {
        Stream::Plain(_, addr) => (*addr, false, None),
        Stream::Tls(_, addr, identity) => (*addr, true, identity.clone()),
    };
    // The link's name goes with the device's identity into the store and the audit trail.
    let identity: Arc<str> = match &device_identity {
        Some(identity) => format!("link={}; {identity}", target.name).into(),
        None => format!("link={}", target.name).into(),
    };
    let peer = Peer {
        connection,
        addr,
        via: None,
        tls,
        identity: Some(identity),
        link: Some(Arc::from(target.name.as_str())),
    };
    state.set_phase(LinkPhase::Connected, None);
    tracing::info!(link = %target.name, %peer, transport = peer.transport(), "link connected");
    Metrics::inc(&context.metrics.connections_accepted);
    context.audit.record(AuditEvent::ConnectionOpened {
        connection,
        peer: addr,
        via: None,
        transport: peer.transport(),
        identity: peer.identity.as_deref().map(str::to_owned),
        tls_version: None,
        cipher_suite: None,
    });
    let charge = context.budget.open();
    let ingest = Arc::clone(&context.ingest);
    let metrics = Arc::clone(&context.metrics);
    let on_frame = || state.message();
    let (close, frames) = match stream {
        Stream::Plain(stream, _) => {
            connection::serve_observed(
                stream, &peer, ingest, limits, metrics, charge, shutdown, &on_frame,
            )
            .await
        }
        Stream::Tls(stream, _, _) => {
            connection::serve_observed(
                *stream, &peer, ingest, limits, metrics, charge, shutdown, &on_frame,
            )
            .await
        }
    };
    tracing::info!(link = %target.name, %peer, reason = close.as_str(), frames, "link closed");
    context.audit.record(AuditEvent::ConnectionClosed {
        connection,
        peer: addr,
        identity: peer.identity.as_deref().map(str::to_owned),
        reason: close.as_str(),
        frames,
    });
    close
}

#[cfg(test)]
mod tests {
    use super::*;
    use hl7::bare::Framing;

    #[test]
    fn the_backoff_doubles_to_its_bound_with_jitter_below_it() {
        assert_eq!(backoff(0, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(6, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(2, 0.5), Duration::from_secs(1));
        let mut jitter = Jitter::new("bed-12");
        for _ in 0..1000 {
            let f = jitter.factor();
            assert!((0.5..1.0).contains(&f), "{f}");
        }
    }

    #[test]
    fn metrics_name_each_link() {
        let links = Links::new(
            &[LinkTarget::parse_one("bed-12=127.0.0.1:4001", Framing::Auto).unwrap()],
            false,
        );
        links.links[0].message();
        let mut text = String::new();
        links.render_metrics(&mut text);
        assert!(text.contains("hl7ihp_link_up{link=\"bed-12\"} 0"), "{text}");
        assert!(
            text.contains("hl7ihp_link_messages_total{link=\"bed-12\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hl7ihp_link_reconnects_total{link=\"bed-12\"} 0"),
            "{text}"
        );
        let mut none = String::new();
        Links::default().render_metrics(&mut none);
        assert!(none.is_empty());
    }
}
