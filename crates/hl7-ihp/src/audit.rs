//! The audit trail (`--audit-log FILE`): one JSON line per security-relevant fact, in the
//! spirit of IHE ATNA's audit message. Never patient names nor message bodies: a message is
//! audited by its control id, sender and patient key.
//!
//! [`Audit::record`] never blocks: events go through a bounded queue to a writer task that
//! appends and syncs them in batches; a full queue drops the event and counts it.
//!
//! INTERFACE STUB: the writer is filled in by its own change.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use serde::Serialize;

/// One audited fact. Serialised as `{"time":…,"event":"<snake_case name>",…fields}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The receiver started.
    ReceiverStarted {
        /// hl7-ihp's version.
        version: &'static str,
        /// Each listener, `mllp tcp 0.0.0.0:2575`, `mllp tls …`, `http …`.
        listeners: Vec<String>,
    },
    /// The receiver stopped.
    ReceiverStopped,
    /// TLS authentication of a peer failed.
    NodeAuthenticationFailure {
        /// The device's address.
        peer: SocketAddr,
        /// The load balancer's, when a PROXY header named the device.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<SocketAddr>,
        /// `no certificate`, `unknown CA`, `revoked`, `expired`, `handshake timeout`,
        /// `old TLS version`, `not TLS`, … ([`crate::tls::handshake_failure`]).
        reason: &'static str,
    },
    /// A connection was closed before a byte of it was read.
    ConnectionRefused {
        /// The address refused (the device's, or the socket's peer for a PROXY refusal).
        peer: SocketAddr,
        /// The load balancer's, when a PROXY header named the device.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<SocketAddr>,
        /// `not in the allowlist`, `PROXY header from an untrusted address`,
        /// `invalid PROXY header`, `too many connections from this address`.
        reason: String,
    },
    /// A connection was accepted (after the allowlist, the PROXY header and TLS).
    ConnectionOpened {
        /// The connection's number in this run, which its other events repeat.
        connection: u64,
        /// The device's address.
        peer: SocketAddr,
        /// The load balancer's, when a PROXY header named the device.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<SocketAddr>,
        /// `tcp` or `tls`.
        transport: &'static str,
        /// The client certificate's subject and SANs.
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// `TLSv1_3`, `TLSv1_2`.
        #[serde(skip_serializing_if = "Option::is_none")]
        tls_version: Option<String>,
        /// The negotiated suite.
        #[serde(skip_serializing_if = "Option::is_none")]
        cipher_suite: Option<String>,
    },
    /// A connection ended.
    ConnectionClosed {
        /// As in its `connection_opened`.
        connection: u64,
        /// The device's address.
        peer: SocketAddr,
        /// Why it ended (`peer closed`, `idle timeout`, `shutdown`, …).
        reason: &'static str,
        /// Frames read on it.
        frames: u64,
    },
    /// A message was received and answered.
    MessageReceived {
        /// The connection it came on.
        connection: u64,
        /// The device's address.
        peer: SocketAddr,
        /// The client certificate's identity.
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// The stored message's id (`hl7-ihp show`, `/api/v1/messages/{id}`).
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<i64>,
        /// MSH-10.
        control_id: String,
        /// MSH-3.
        sending_application: String,
        /// MSH-4.
        sending_facility: String,
        /// The patient's key, never the name.
        #[serde(skip_serializing_if = "Option::is_none")]
        patient: Option<String>,
        /// `accepted`, `error`, `rejected`, `duplicate`.
        outcome: &'static str,
        /// The ACK code sent (`AA`, `CE`, …), none when the sender asked for none.
        #[serde(skip_serializing_if = "Option::is_none")]
        ack_code: Option<String>,
    },
    /// A listener's TLS files were loaded again (new connections use them).
    ConfigurationReloaded {
        /// `mllp` or `http`.
        listener: &'static str,
    },
    /// A reload was refused; the old configuration stays.
    ConfigurationReloadFailed {
        /// `mllp` or `http`.
        listener: &'static str,
        /// Why.
        reason: String,
    },
}

/// The handle every part records through; cheap to share.
#[derive(Debug, Default)]
pub struct Audit {
    /// Events written.
    pub n_written: AtomicU64,
    /// Events dropped because the queue was full.
    pub n_dropped: AtomicU64,
}

impl Audit {
    /// An audit trail that records nothing (no `--audit-log`).
    pub fn off() -> std::sync::Arc<Audit> {
        std::sync::Arc::new(Audit::default())
    }

    /// Whether events are kept (callers skip building one when not).
    pub fn is_on(&self) -> bool {
        false
    }

    /// Queues an event; never blocks.
    pub fn record(&self, event: AuditEvent) {
        let _ = event;
    }
}

/// The task that writes the queued events (INTERFACE STUB).
#[derive(Debug)]
pub struct AuditWriter;

impl Audit {
    /// Opens (creates, mode 0600) `path` for appending and returns the handle and the
    /// writer task to spawn.
    pub fn open(path: &std::path::Path) -> std::io::Result<(std::sync::Arc<Audit>, AuditWriter)> {
        let _ = path;
        Ok((Audit::off(), AuditWriter))
    }
}

impl AuditWriter {
    /// Writes events until `stop`, then what is still queued; reopens the file (log
    /// rotation) each time `hangups` changes.
    pub async fn run(
        self,
        hangups: tokio::sync::watch::Receiver<u64>,
        stop: crate::shutdown::Shutdown,
    ) {
        let _ = (hangups, stop);
    }
}
