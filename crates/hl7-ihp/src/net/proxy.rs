//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a TCP
//! load balancer puts before a connection's first byte to say whose connection it is.
//!
//! The reader takes exactly the header's bytes from the stream and not one more: what
//! follows is MLLP or a TLS ClientHello that someone else reads, and there is no buffer to
//! hand back. So it reads in steps whose sizes the header itself announces (v2), or one
//! byte at a time up to the line's end (v1, at most [`V1_MAX_LEN`] bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

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
    /// The load balancer's own connection (v2 `LOCAL`: a health check): the socket's peer
    /// is the peer.
    Local,
    /// A relayed connection whose source the balancer does not know (v1 `UNKNOWN`, v2
    /// `PROXY` with an unspecified family, e.g. from a unix socket front): the socket's
    /// peer is the peer, and unlike `Local` it is someone else's connection.
    Unknown,
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

/// The v1 signature: the text line starts with it.
pub const V1_SIGNATURE: &[u8; 6] = b"PROXY ";

/// The v2 signature: twelve bytes no text protocol starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 line, `PROXY ` and `\r\n` included (the spec's own limit:
/// `PROXY TCP6` with two full IPv6 addresses and two five-digit ports).
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 address block (addresses, ports and TLVs after the 16 fixed bytes) taken.
/// The addresses are at most 36 bytes for TCP over IPv6; the rest is TLVs (ALPN, authority,
/// TLS details, a cloud's endpoint id), which a balancer keeps short. A longer block is
/// refused rather than read.
pub const V2_MAX_LEN: usize = 512;

/// Reads one header, v1 or v2, consuming exactly its bytes and nothing after it. The caller
/// bounds the time it may take.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    // The first byte tells the versions apart; a stream that starts with neither is refused
    // at once, without waiting for more bytes.
    let first = stream.read_u8().await?;
    if first == V1_SIGNATURE[0] {
        let mut rest = [0u8; V1_SIGNATURE.len() - 1];
        stream.read_exact(&mut rest).await?;
        if rest != V1_SIGNATURE[1..] {
            return Err(ProxyError::Invalid("bad signature"));
        }
        read_v1(stream).await
    } else if first == V2_SIGNATURE[0] {
        let mut rest = [0u8; V2_SIGNATURE.len() - 1];
        stream.read_exact(&mut rest).await?;
        if rest != V2_SIGNATURE[1..] {
            return Err(ProxyError::Invalid("bad signature"));
        }
        read_v2(stream).await
    } else {
        Err(ProxyError::Invalid("bad signature"))
    }
}

/// The rest of a v1 header after `PROXY `: the line up to `\r\n`, then its fields.
async fn read_v1<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    // The line without its signature and its `\r\n`.
    let mut line = [0u8; V1_MAX_LEN - V1_SIGNATURE.len() - 2];
    let mut n = 0;
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\r' {
            if stream.read_u8().await? != b'\n' {
                return Err(ProxyError::Invalid(
                    "v1 line has a carriage return without a line feed",
                ));
            }
            break;
        }
        if !(b' '..=b'~').contains(&byte) {
            return Err(ProxyError::Invalid(
                "v1 line has a byte that is not printable ascii",
            ));
        }
        if n == line.len() {
            return Err(ProxyError::Invalid("v1 line longer than 107 bytes"));
        }
        line[n] = byte;
        n += 1;
    }
    // Printable ASCII only, so this cannot fail.
    let line =
        std::str::from_utf8(&line[..n]).map_err(|_| ProxyError::Invalid("v1 line is not ascii"))?;
    parse_v1_line(line)
}

/// The fields of a v1 line (between `PROXY ` and `\r\n`): `TCP4 src dst sport dport`,
/// `TCP6 …`, or `UNKNOWN` and anything.
fn parse_v1_line(line: &str) -> Result<ProxyHeader, ProxyError> {
    // The receiver ignores whatever follows UNKNOWN (the spec: the sender may put the
    // addresses there, or nothing).
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(ProxyHeader::Unknown);
    }
    // Split on single spaces: two spaces in a row give an empty field, which fails below.
    let mut fields = line.split(' ');
    let (
        Some(protocol),
        Some(source),
        Some(destination),
        Some(source_port),
        Some(destination_port),
        None,
    ) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    )
    else {
        return Err(ProxyError::Invalid("v1 line does not have five fields"));
    };
    let (source, destination) = match protocol {
        "TCP4" => (
            IpAddr::V4(v1_address(source)?),
            IpAddr::V4(v1_address(destination)?),
        ),
        "TCP6" => (
            IpAddr::V6(v1_address(source)?),
            IpAddr::V6(v1_address(destination)?),
        ),
        _ => {
            return Err(ProxyError::Invalid(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(source, v1_port(source_port)?),
        destination: SocketAddr::new(destination, v1_port(destination_port)?),
    })
}

/// A v1 address of the family its protocol named (`TCP4` takes only dotted IPv4 text,
/// `TCP6` only IPv6 text).
fn v1_address<A: std::str::FromStr>(text: &str) -> Result<A, ProxyError> {
    text.parse()
        .map_err(|_| ProxyError::Invalid("v1 address does not parse as its protocol's family"))
}

/// A v1 port: decimal digits without sign or leading zero, at most 65535.
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(ProxyError::Invalid("v1 port is not a decimal number"));
    }
    text.parse()
        .map_err(|_| ProxyError::Invalid("v1 port is above 65535"))
}

/// The v2 command `LOCAL`: the balancer's own connection.
const V2_LOCAL: u8 = 0x0;
/// The v2 command `PROXY`: a relayed connection.
const V2_PROXY: u8 = 0x1;
/// The v2 family and protocol byte for "unspecified".
const V2_UNSPEC: u8 = 0x00;
/// TCP over IPv4.
const V2_TCP4: u8 = 0x11;
/// TCP over IPv6.
const V2_TCP6: u8 = 0x21;
/// The valid family and protocol bytes this does not take: UDP over IPv4 and IPv6, unix
/// stream and datagram sockets.
const V2_UNSUPPORTED: [u8; 4] = [0x12, 0x22, 0x31, 0x32];

/// The rest of a v2 header after its signature: version and command, family and
/// protocol, the block's length, then the block.
async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut fixed = [0u8; 4];
    stream.read_exact(&mut fixed).await?;
    let [version_command, family, length_high, length_low] = fixed;
    if version_command >> 4 != 2 {
        return Err(ProxyError::Invalid("v2 version is not 2"));
    }
    let command = version_command & 0x0f;
    if command != V2_LOCAL && command != V2_PROXY {
        return Err(ProxyError::Invalid("v2 command is neither LOCAL nor PROXY"));
    }
    let length = usize::from(u16::from_be_bytes([length_high, length_low]));
    if length > V2_MAX_LEN {
        return Err(ProxyError::Invalid(
            "v2 address block longer than 512 bytes",
        ));
    }
    // Read the whole block before judging it, so that a refused header is still consumed
    // whole (nothing depends on that, but it keeps the stream's position well defined).
    let mut block = [0u8; V2_MAX_LEN];
    let block = &mut block[..length];
    stream.read_exact(block).await?;
    if command == V2_LOCAL {
        // The spec: the receiver uses the real endpoints and discards the block, family
        // included.
        return Ok(ProxyHeader::Local);
    }
    match family {
        V2_UNSPEC => Ok(ProxyHeader::Unknown),
        V2_TCP4 => {
            let Some(addresses) = block.get(..12) else {
                return Err(ProxyError::Invalid("v2 block too short for ipv4 addresses"));
            };
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    addresses[at],
                    addresses[at + 1],
                    addresses[at + 2],
                    addresses[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        V2_TCP6 => {
            let Some(addresses) = block.get(..36) else {
                return Err(ProxyError::Invalid("v2 block too short for ipv6 addresses"));
            };
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        family if V2_UNSUPPORTED.contains(&family) => Err(ProxyError::Invalid(
            "v2 family is not tcp over ipv4 or ipv6 (udp or unix)",
        )),
        _ => Err(ProxyError::Invalid("v2 family or protocol is not defined")),
    }
}

/// Whether `bytes` (the first bytes a connection sent) are, or may still become, the start
/// of a PROXY header of either version: a prefix of a signature, or a signature and more.
/// An empty slice is a prefix of both, so it gives `true` (more bytes will tell).
pub fn looks_like_header(bytes: &[u8]) -> bool {
    let agrees = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    agrees(V1_SIGNATURE) || agrees(V2_SIGNATURE)
}

/// Whether `bytes` begin with a whole signature: `PROXY ` (v1) or the 12-byte v2 one.
pub fn is_header_start(bytes: &[u8]) -> bool {
    bytes.starts_with(V1_SIGNATURE) || bytes.starts_with(V2_SIGNATURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What comes after the header on the wire: an MLLP frame's start.
    const AFTER: &[u8] = b"\x0bMSH|^~\\&|";

    /// Reads a header from `bytes` and returns it with the bytes left unread.
    fn read(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let mut rest = bytes;
        let result = runtime.block_on(read_header(&mut rest));
        (result, rest.to_vec())
    }

    /// Reads a header that must be valid and checks that `AFTER` is all that is left.
    fn read_valid(header: &[u8]) -> ProxyHeader {
        let (result, rest) = read(&[header, AFTER].concat());
        let header = result.expect("a valid header");
        assert_eq!(rest, AFTER, "the bytes after the header stay unread");
        header
    }

    /// The reason of a header that must be invalid.
    fn read_invalid(header: &[u8]) -> &'static str {
        match read(&[header, AFTER].concat()).0 {
            Err(ProxyError::Invalid(reason)) => reason,
            other => panic!("expected an invalid header, got {other:?}"),
        }
    }

    fn v1(line: &str) -> Vec<u8> {
        format!("PROXY {line}\r\n").into_bytes()
    }

    /// A v2 header: version and command, family, then `block`.
    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(version_command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(block);
        bytes
    }

    /// The v2 address block of a proxied connection, TLVs after it.
    fn v2_block(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> (u8, Vec<u8>) {
        let mut block = Vec::new();
        let family = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                V2_TCP4
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                V2_TCP6
            }
            _ => panic!("one family for both addresses"),
        };
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
        block.extend_from_slice(tlvs);
        (family, block)
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v1_tcp4() {
        assert_eq!(
            read_valid(&v1("TCP4 192.0.2.7 198.51.100.1 56324 2575")),
            proxied("192.0.2.7:56324", "198.51.100.1:2575")
        );
    }

    #[test]
    fn v1_tcp6() {
        assert_eq!(
            read_valid(&v1("TCP6 2001:db8::7 2001:db8::1 65535 0")),
            proxied("[2001:db8::7]:65535", "[2001:db8::1]:0")
        );
    }

    #[test]
    fn v1_longest_lines_are_taken() {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = v1(&format!("TCP6 {full} {full} 65535 65535"));
        assert!(matches!(read_valid(&tcp6), ProxyHeader::Proxied { .. }));
        // The spec's worst case, 107 bytes.
        let unknown = v1(&format!("UNKNOWN {full} {full} 65535 65535"));
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(read_valid(&unknown), ProxyHeader::Unknown);
    }

    #[test]
    fn v1_too_long() {
        let long = v1(&format!("UNKNOWN {}", "x".repeat(V1_MAX_LEN)));
        assert_eq!(read_invalid(&long), "v1 line longer than 107 bytes");
        // The 106th byte is not the carriage return that would end the line at 107: refused
        // there, without reading further.
        let mut just_over = b"PROXY UNKNOWN ".to_vec();
        just_over.resize(V1_MAX_LEN - 1, b'x');
        let (result, rest) = read(&[&just_over[..], b"\r\n"].concat());
        assert!(matches!(
            result,
            Err(ProxyError::Invalid("v1 line longer than 107 bytes"))
        ));
        assert_eq!(rest, b"\r\n");
    }

    #[test]
    fn v1_strict_fields() {
        for line in [
            "TCP4 192.0.2.7  198.51.100.1 56324 2575",
            "TCP4 192.0.2.7 198.51.100.1 56324 2575 ",
            " TCP4 192.0.2.7 198.51.100.1 56324 2575",
            "TCP4 192.0.2.7 198.51.100.1 56324",
            "TCP4 192.0.2.7 198.51.100.1 56324 2575 1",
        ] {
            assert_eq!(
                read_invalid(&v1(line)),
                "v1 line does not have five fields",
                "{line:?}"
            );
        }
        for line in [
            "TCP4 2001:db8::7 198.51.100.1 56324 2575",
            "TCP6 192.0.2.7 2001:db8::1 56324 2575",
            "TCP4 192.0.2.256 198.51.100.1 56324 2575",
            "TCP4 192.0.2.07 198.51.100.1 56324 2575",
        ] {
            assert_eq!(
                read_invalid(&v1(line)),
                "v1 address does not parse as its protocol's family",
                "{line:?}"
            );
        }
        for line in [
            "TCP4 192.0.2.7 198.51.100.1 +5632 2575",
            "TCP4 192.0.2.7 198.51.100.1 056324 2575",
            "TCP4 192.0.2.7 198.51.100.1 0080 2575",
            "TCP4 192.0.2.7 198.51.100.1 -1 2575",
        ] {
            assert_eq!(
                read_invalid(&v1(line)),
                "v1 port is not a decimal number",
                "{line:?}"
            );
        }
        assert_eq!(
            read_invalid(&v1("TCP4 192.0.2.7 198.51.100.1 65536 2575")),
            "v1 port is above 65535"
        );
        assert_eq!(
            read_invalid(&v1("UDP4 192.0.2.7 198.51.100.1 56324 2575")),
            "v1 protocol is not TCP4, TCP6 or UNKNOWN"
        );
        assert_eq!(
            read_invalid(b"PROXY UNKNOWN\n"),
            "v1 line has a byte that is not printable ascii"
        );
        assert_eq!(
            read_invalid(b"PROXY UNKNOWN\rx\n"),
            "v1 line has a carriage return without a line feed"
        );
    }

    #[test]
    fn v2_ipv4() {
        let (family, block) = v2_block(
            "192.0.2.7:56324".parse().unwrap(),
            "198.51.100.1:2575".parse().unwrap(),
            &[],
        );
        assert_eq!(
            read_valid(&v2(0x21, family, &block)),
            proxied("192.0.2.7:56324", "198.51.100.1:2575")
        );
    }

    #[test]
    fn v2_ipv6() {
        let (family, block) = v2_block(
            "[2001:db8::7]:56324".parse().unwrap(),
            "[2001:db8::1]:2575".parse().unwrap(),
            &[],
        );
        assert_eq!(
            read_valid(&v2(0x21, family, &block)),
            proxied("[2001:db8::7]:56324", "[2001:db8::1]:2575")
        );
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        // PP2_TYPE_ALPN "hl7", PP2_TYPE_AUTHORITY "ihp.example", PP2_TYPE_NOOP.
        let tlvs = b"\x01\x00\x03hl7\x02\x00\x0bihp.example\x04\x00\x02\0\0";
        let (family, block) = v2_block(
            "192.0.2.7:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
            tlvs,
        );
        assert_eq!(
            read_valid(&v2(0x21, family, &block)),
            proxied("192.0.2.7:1", "198.51.100.1:2")
        );
    }

    #[test]
    fn v2_local() {
        assert_eq!(read_valid(&v2(0x20, V2_UNSPEC, &[])), ProxyHeader::Local);
        // LOCAL discards the block, whatever family it names.
        let (family, block) = v2_block(
            "192.0.2.7:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
            &[],
        );
        assert_eq!(read_valid(&v2(0x20, family, &block)), ProxyHeader::Local);
        // PROXY with an unspecified family: the balancer did not know the addresses.
        assert_eq!(
            read_valid(&v2(0x21, V2_UNSPEC, &[1, 2, 3])),
            ProxyHeader::Unknown
        );
    }

    #[test]
    fn v2_bad_version_command_family() {
        assert_eq!(
            read_invalid(&v2(0x11, V2_UNSPEC, &[])),
            "v2 version is not 2"
        );
        assert_eq!(
            read_invalid(&v2(0x22, V2_UNSPEC, &[])),
            "v2 command is neither LOCAL nor PROXY"
        );
        for family in V2_UNSUPPORTED {
            assert_eq!(
                read_invalid(&v2(0x21, family, &[0; 216])),
                "v2 family is not tcp over ipv4 or ipv6 (udp or unix)"
            );
        }
        for family in [0x01, 0x10, 0x13, 0x41, 0xff] {
            assert_eq!(
                read_invalid(&v2(0x21, family, &[0; 36])),
                "v2 family or protocol is not defined"
            );
        }
        assert_eq!(
            read_invalid(&v2(0x21, V2_TCP4, &[0; 11])),
            "v2 block too short for ipv4 addresses"
        );
        assert_eq!(
            read_invalid(&v2(0x21, V2_TCP6, &[0; 35])),
            "v2 block too short for ipv6 addresses"
        );
    }

    #[test]
    fn v2_length_too_large() {
        assert!(read_valid(&v2(0x20, V2_UNSPEC, &[0; V2_MAX_LEN])) == ProxyHeader::Local);
        let mut header = v2(0x21, V2_TCP4, &[]);
        header[14..16].copy_from_slice(&u16::try_from(V2_MAX_LEN + 1).unwrap().to_be_bytes());
        assert_eq!(
            read_invalid(&header),
            "v2 address block longer than 512 bytes"
        );
        header[14..16].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(
            read_invalid(&header),
            "v2 address block longer than 512 bytes"
        );
    }

    #[test]
    fn bad_signature() {
        for bytes in [
            &b"\x0bMSH|^~\\&|"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROXY\tTCP4",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIT\r",
            b"\r\nMSH",
        ] {
            assert_eq!(read_invalid(bytes), "bad signature", "{bytes:?}");
        }
        // A stream that starts with neither signature is refused after its first byte.
        let (_, rest) = read(b"\x0bMSH");
        assert_eq!(rest, b"MSH");
    }

    #[test]
    fn truncated_is_unexpected_eof() {
        let (family, block) = v2_block(
            "192.0.2.7:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
            b"\x04\0\0",
        );
        let whole_v2 = v2(0x21, family, &block);
        let whole_v1 = v1("TCP4 192.0.2.7 198.51.100.1 56324 2575");
        for whole in [whole_v1, whole_v2] {
            for n in 0..whole.len() {
                match read(&whole[..n]).0 {
                    Err(ProxyError::Io(error)) => {
                        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{n}")
                    }
                    other => panic!("cut at {n}: expected eof, got {other:?}"),
                }
            }
            assert!(read(&whole).0.is_ok());
        }
    }

    #[tokio::test]
    async fn reads_exactly_the_header_from_a_stream() {
        // Over a pipe the bytes come in pieces; the reader waits for the rest of the header
        // and leaves what follows it in the pipe.
        let (mut client, mut server) = tokio::io::duplex(64);
        let (family, block) = v2_block(
            "192.0.2.7:56324".parse().unwrap(),
            "198.51.100.1:2575".parse().unwrap(),
            &[],
        );
        let wire = [v2(0x21, family, &block), AFTER.to_vec()].concat();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in wire.chunks(5) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let header = read_header(&mut server).await.unwrap();
        assert_eq!(header, proxied("192.0.2.7:56324", "198.51.100.1:2575"));
        drop(writer.await.unwrap());
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, AFTER);
    }

    #[test]
    fn signature_prefixes() {
        assert!(looks_like_header(b""));
        assert!(looks_like_header(b"P"));
        assert!(looks_like_header(b"PROX"));
        assert!(looks_like_header(b"PROXY TCP4 1"));
        assert!(looks_like_header(b"\r\n\r"));
        assert!(looks_like_header(b"\r\n\r\n\0\r\nQUIT\n\x21\x11"));
        assert!(!looks_like_header(b"\x0bMSH"));
        assert!(!looks_like_header(b"\x16\x03\x01"));
        assert!(!looks_like_header(b"PROXX"));
        assert!(!looks_like_header(b"PROXYTCP4"));
        assert!(!looks_like_header(b"\r\n\r\n\0\r\nQUIT\r"));

        assert!(!is_header_start(b""));
        assert!(!is_header_start(b"PROXY"));
        assert!(is_header_start(b"PROXY "));
        assert!(is_header_start(b"PROXY UNKNOWN\r\n"));
        assert!(!is_header_start(b"\r\n\r\n\0\r\nQUIT"));
        assert!(is_header_start(b"\r\n\r\n\0\r\nQUIT\n"));
        assert!(is_header_start(b"\r\n\r\n\0\r\nQUIT\n\x20"));
    }

    /// Any socket address of either family.
    fn address() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    /// `destination` in `source`'s family (one header has one family).
    fn same_family(source: SocketAddr, destination: SocketAddr) -> SocketAddr {
        match (source, destination) {
            (SocketAddr::V4(_), SocketAddr::V6(d)) => {
                let low = d.ip().to_bits() as u32;
                SocketAddr::from((Ipv4Addr::from(low), d.port()))
            }
            (SocketAddr::V6(_), SocketAddr::V4(d)) => {
                SocketAddr::from((d.ip().to_ipv6_mapped(), d.port()))
            }
            _ => destination,
        }
    }

    proptest! {
        #[test]
        fn v2_round_trips(
            source in address(),
            destination in address(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..100),
            after in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let destination = same_family(source, destination);
            let (family, block) = v2_block(source, destination, &tlvs);
            let (result, rest) = read(&[v2(0x21, family, &block), after.clone()].concat());
            prop_assert_eq!(result.unwrap(), ProxyHeader::Proxied { source, destination });
            prop_assert_eq!(rest, after);
        }

        #[test]
        fn v1_round_trips(
            source in address(),
            destination in address(),
            after in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let destination = same_family(source, destination);
            let protocol = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = v1(&format!(
                "{protocol} {} {} {} {}",
                source.ip(), destination.ip(), source.port(), destination.port()
            ));
            prop_assert!(line.len() <= V1_MAX_LEN);
            let (result, rest) = read(&[line, after.clone()].concat());
            prop_assert_eq!(result.unwrap(), ProxyHeader::Proxied { source, destination });
            prop_assert_eq!(rest, after);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, rest) = read(&bytes);
            prop_assert!(rest.len() <= bytes.len());
        }

        #[test]
        fn arbitrary_after_a_signature_never_panic(
            v2_signature in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let signature: &[u8] = if v2_signature { V2_SIGNATURE } else { V1_SIGNATURE };
            let (result, rest) = read(&[signature, &bytes].concat());
            prop_assert!(rest.len() <= bytes.len());
            if result.is_ok() && !v2_signature {
                prop_assert!(bytes.len() - rest.len() <= V1_MAX_LEN - V1_SIGNATURE.len());
            }
        }
    }
}
