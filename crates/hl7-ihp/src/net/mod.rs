//! Who is on the other end of a connection: the device's address (the socket's peer, or the
//! one a trusted load balancer's PROXY header gave), the load balancer's when there is one,
//! and the TLS client certificate's identity. Also the allowlist ([`allow`]) and the PROXY
//! protocol header ([`proxy`]).

pub mod allow;
pub mod proxy;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// One connection's peer, as stored with each of its messages, logged and audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The connection's number in this run (audit events of one connection share it).
    pub connection: u64,
    /// The device's address: the socket's peer, or the source a trusted PROXY header named.
    pub addr: SocketAddr,
    /// The load balancer's address, when a PROXY header gave `addr`.
    pub via: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The TLS client certificate's subject and subject alternative names
    /// (`CN=monitor-7,O=Ward 3; DNS:monitor-7.example`), when the client sent one.
    pub identity: Option<Arc<str>>,
    /// The `--connect` link's name, when we connected to the device (client mode).
    pub link: Option<Arc<str>>,
}

impl Peer {
    /// A plain TCP peer seen directly.
    pub fn tcp(connection: u64, addr: SocketAddr) -> Peer {
        Peer {
            connection,
            addr,
            via: None,
            tls: false,
            identity: None,
            link: None,
        }
    }

    /// The transport's name for logs and the audit trail: `tcp` or `tls`.
    pub fn transport(&self) -> &'static str {
        if self.tls { "tls" } else { "tcp" }
    }
}

impl fmt::Display for Peer {
    /// The device's address, as logs show it (never the identity: that is for the audit
    /// trail and the store).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr, f)
    }
}
