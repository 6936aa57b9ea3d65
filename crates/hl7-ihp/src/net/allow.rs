//! Address lists: `--allow` (who may connect) and `--proxy-protocol-from` (whose PROXY
//! headers are believed). A list of CIDR blocks, `10.1.0.0/16,192.0.2.7,2001:db8::/32`; an
//! address without a prefix length is one host. IPv4-mapped IPv6 addresses
//! (`::ffff:192.0.2.7`, what a dual-stack socket reports) match the IPv4 blocks.

use std::fmt;
use std::net::IpAddr;

/// One CIDR block: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `2001:db8::/32` or a single address. Host bits set below the
    /// prefix (`192.0.2.7/24`) are refused: they usually mean a typo.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR block"))?;
        let network = canonical(network);
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        let cidr = Cidr { network, prefix };
        if !cidr.contains(network) || mask(network, prefix) != network {
            return Err(format!(
                "`{text}` has host bits set; did you mean {}/{prefix}?",
                mask(network, prefix)
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A list of blocks; `Any` allows every address.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AddressList {
    /// Every address (the default of `--allow`).
    #[default]
    Any,
    /// Only these blocks.
    Only(Vec<Cidr>),
}

impl AddressList {
    /// Parses `any` or a comma-separated list of blocks.
    pub fn parse(text: &str) -> Result<AddressList, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("any") {
            return Ok(AddressList::Any);
        }
        let blocks = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if blocks.is_empty() {
            return Err("expected `any` or CIDR blocks, e.g. 10.0.0.0/8,192.0.2.7".into());
        }
        Ok(AddressList::Only(blocks))
    }

    /// Whether the list holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            AddressList::Any => true,
            AddressList::Only(blocks) => blocks.iter().any(|block| block.contains(ip)),
        }
    }
}

impl fmt::Display for AddressList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressList::Any => f.write_str("any"),
            AddressList::Only(blocks) => {
                for (n, block) in blocks.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{block}")?;
                }
                Ok(())
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - u32::from(prefix)))
            };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - u32::from(prefix)))
            };
            IpAddr::V6(kept.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_hold_what_their_prefix_says() {
        let list = AddressList::parse("10.1.0.0/16, 192.0.2.7,2001:db8::/32").unwrap();
        assert!(list.contains(ip("10.1.255.3")));
        assert!(!list.contains(ip("10.2.0.1")));
        assert!(list.contains(ip("192.0.2.7")));
        assert!(!list.contains(ip("192.0.2.8")));
        assert!(list.contains(ip("2001:db8:1::5")));
        assert!(!list.contains(ip("2001:db9::1")));
        // A dual-stack socket's view of an IPv4 peer.
        assert!(list.contains(ip("::ffff:10.1.2.3")));
        assert_eq!(list.to_string(), "10.1.0.0/16,192.0.2.7/32,2001:db8::/32");
        assert!(
            AddressList::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        assert!(!AddressList::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(AddressList::parse("any").unwrap().contains(ip("::1")));
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        for (text, says) in [
            ("", "expected `any`"),
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("ward-3", "not an address"),
            ("::/129", "0 to 128"),
        ] {
            let error = AddressList::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
