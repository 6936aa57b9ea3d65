//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a TCP
//! load balancer puts before a connection's first byte to say whose connection it is.
//!
//! INTERFACE STUB: filled in by its own change.

use std::net::SocketAddr;

use tokio::io::AsyncRead;

/// What a header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection from `source` to `destination`.
    Proxied {
        /// The device's address.
        source: SocketAddr,
        /// The address the device connected to (the load balancer's front).
        destination: SocketAddr,
    },
    /// The load balancer's own connection (v2 `LOCAL`, v1 `UNKNOWN`: a health check): the
    /// socket's peer is the peer.
    Local,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Reading failed or the peer closed first.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid header.
    #[error("invalid PROXY header: {0}")]
    Invalid(&'static str),
}

/// Reads one header, v1 or v2, consuming exactly its bytes and nothing after it. The caller
/// bounds the time it may take.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let _ = stream;
    Err(ProxyError::Invalid("not implemented yet"))
}

/// Whether `bytes` (the first bytes a connection sent) are, or may still become, the start
/// of a PROXY header of either version: a prefix of a signature, or a signature and more.
pub fn looks_like_header(bytes: &[u8]) -> bool {
    let _ = bytes;
    false
}

/// Whether `bytes` begin with a whole signature: `PROXY ` (v1) or the 12-byte v2 one.
pub fn is_header_start(bytes: &[u8]) -> bool {
    let _ = bytes;
    false
}
