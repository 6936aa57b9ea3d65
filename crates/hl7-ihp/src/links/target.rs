//! `--connect`'s values: `NAME=HOST:PORT` (or `HOST:PORT`, named by its address), several
//! separated by commas on the command line, or a TOML array of such strings in the file.

use hl7::bare::Framing;

/// Longest link name.
const MAX_NAME: usize = 64;

/// One configured link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTarget {
    /// Its name on `/metrics` and in the API: letters, digits, `.`, `_`, `-`, `:`.
    pub name: String,
    /// `HOST:PORT`, resolved at each connection.
    pub address: String,
    /// `--connect-framing`.
    pub framing: Framing,
}

/// Whether a name can go into a Prometheus label and a log line as it is.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'[' | b']')
        })
}

impl LinkTarget {
    /// One `NAME=HOST:PORT` or `HOST:PORT`.
    pub fn parse_one(text: &str, framing: Framing) -> Result<LinkTarget, String> {
        let text = text.trim();
        let (name, address) = match text.split_once('=') {
            Some((name, address)) => (name.trim(), address.trim()),
            None => (text, text),
        };
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!(
                "expected NAME=HOST:PORT, found no port in `{address}`"
            ));
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!(
                "expected NAME=HOST:PORT, found no host in `{address}`"
            ));
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => {}
            _ => return Err(format!("expected a port from 1 to 65535 in `{address}`")),
        }
        if !valid_name(name) {
            return Err(format!(
                "a link's name is 1 to {MAX_NAME} letters, digits, `.`, `_`, `-`, `:`, `[` or `]`; found `{name}`"
            ));
        }
        Ok(LinkTarget {
            name: name.to_owned(),
            address: address.to_owned(),
            framing,
        })
    }

    /// A comma-separated list (empty: no links); names must differ.
    pub fn parse_list(text: &str) -> Result<Vec<LinkTarget>, String> {
        let mut out: Vec<LinkTarget> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let target = LinkTarget::parse_one(item, Framing::Auto)?;
            if out.iter().any(|t| t.name == target.name) {
                return Err(format!("two links are named `{}`", target.name));
            }
            out.push(target);
        }
        Ok(out)
    }

    /// The host, without brackets, for the TLS server name.
    pub fn host(&self) -> &str {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host);
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_named_or_named_by_their_address() {
        let links =
            LinkTarget::parse_list("bed-12=10.0.0.5:4001, gw.example:2575,[::1]:7").unwrap();
        assert_eq!(links[0].name, "bed-12");
        assert_eq!(links[0].address, "10.0.0.5:4001");
        assert_eq!(links[1].name, "gw.example:2575");
        assert_eq!(links[1].host(), "gw.example");
        assert_eq!(links[2].host(), "::1");
        assert!(LinkTarget::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn bad_links_are_refused() {
        for bad in [
            "bed=10.0.0.5",
            "bed=10.0.0.5:0",
            "bed=:4001",
            "bed 12=10.0.0.5:4001",
            "a\"b=10.0.0.5:4001",
            "a=h:1,a=h:2",
        ] {
            assert!(LinkTarget::parse_list(bad).is_err(), "{bad}");
        }
    }
}
