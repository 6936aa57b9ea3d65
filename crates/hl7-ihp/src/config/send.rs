//! The settings of `hl7-ihp send` that need validating, declared as `receive`'s are and
//! checked by the same parsers; the plain ones (`--to`, `--count`, `--file`, …) stay in
//! `cli::SendArgs`, and so does `--tls`, a switch without a value that the TLS files go with.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::settings::{ConfigFile, Reads, declare_settings};
use super::values::{choice, duration, path, positive_duration, positive_real};

declare_settings! {
    /// The flags of `hl7-ihp send` that need validating, as text.
    pub struct SendFlags reads Reads::Flags;
    /// The settings of `hl7-ihp send` one by one, before they are checked together.
    #[derive(Clone, Debug, PartialEq)]
    struct SendSettings;

    /// Pause between messages of a connection, e.g. `100ms`, `0ms`.
    interval: Option<Duration> = duration, "DURATION", optional "1s, none with --connections";
    /// `seed`: the prototype's three glucose messages; `vitals`: IHE PCD-01 bedside monitors.
    scenario: ScenarioKind = scenario, "seed|vitals", default "seed";
    /// Total messages a second over all connections.
    rate: Option<f64> = positive_real, "R", optional "as fast as the receiver answers";
    /// Stop after this long (`30s`, `5m`).
    duration: Option<Duration> = duration, "DURATION", optional "no limit";
    /// How long to wait for an ACK before sending the message again on a new connection.
    ack_timeout: Duration = positive_duration, "DURATION", default "10s";
    /// How long to keep retrying one message before counting it unacknowledged.
    retry_for: Duration = duration, "DURATION", default "60s";
    /// CA certificates that the receiver's certificate must come from, PEM (needs --tls).
    tls_ca: Option<PathBuf> = path, "FILE", optional "the system's CA bundle";
    /// Client certificate chain to present, PEM (needs --tls and --tls-key).
    tls_cert: Option<PathBuf> = path, "FILE", optional "none";
    /// Private key of --tls-cert, PEM (needs --tls and --tls-cert).
    tls_key: Option<PathBuf> = path, "FILE", optional "none";
    /// Name the receiver's certificate must carry, a DNS name or an IP address (needs --tls).
    tls_server_name: Option<String> = server_name, "NAME", optional "the host of --to";
    /// `mllp`, or `none` to write bare HL7 and read bare ACKs, as some monitors do (not
    /// with --tls).
    framing: SendFraming = send_framing, "mllp|none", default "mllp";
}

/// How `send` frames what it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFraming {
    /// MLLP, `0x0B` payload `0x1C 0x0D`.
    Mllp,
    /// Bare HL7: the message's bytes as they are, and the ACK read the same way.
    None,
}

fn send_framing(text: &str) -> Result<SendFraming, String> {
    choice(
        text,
        &[("mllp", SendFraming::Mllp), ("none", SendFraming::None)],
    )
}

/// The validated settings of `hl7-ihp send`.
#[derive(Clone, Debug, PartialEq)]
pub struct SendConfig {
    /// Pause between messages of a connection.
    pub interval: Option<Duration>,
    /// Which built-in messages to send.
    pub scenario: ScenarioKind,
    /// Total messages a second over all connections.
    pub rate: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// How long to wait for an ACK.
    pub ack_timeout: Duration,
    /// How long to keep retrying one message.
    pub retry_for: Duration,
    /// MLLP over TLS (`--tls`), with these files; `None`: plain MLLP.
    pub tls: Option<SendTls>,
    /// MLLP or bare HL7.
    pub framing: SendFraming,
}

/// What `send --tls` connects with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendTls {
    /// Trusted CAs; `None`: the system's bundle.
    pub ca: Option<PathBuf>,
    /// The client certificate chain and its key (mutual TLS), both or neither.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// The name to check the receiver's certificate against; `None`: the host of `--to`.
    pub server_name: Option<String>,
}

/// A name a server certificate can carry: a DNS name or an IP address literal.
fn server_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    rustls::pki_types::ServerName::try_from(text)
        .map(|_| text.to_owned())
        .map_err(|_| "expected a DNS name or an IP address".into())
}

/// Which built-in messages `send` makes when no `--file` is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioKind {
    /// The prototype's three glucose messages.
    Seed,
    /// IHE PCD-01 bedside monitors.
    Vitals,
}

fn scenario(text: &str) -> Result<ScenarioKind, String> {
    choice(
        text,
        &[
            ("seed", ScenarioKind::Seed),
            ("vitals", ScenarioKind::Vitals),
        ],
    )
}

impl SendConfig {
    /// Validates the flags; `tls` is whether `--tls` was given.
    pub fn from_flags(flags: &SendFlags, tls: bool) -> Result<SendConfig, ConfigError> {
        let s = SendSettings::resolve(flags, ConfigFile::none())?;
        let error = |name: &'static str, reason: &str| {
            ConfigError::new(
                name,
                &format!("--{}", name.replace('_', "-")),
                reason.into(),
            )
        };
        let tls = if tls {
            let cert_and_key = match (s.tls_cert, s.tls_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (Some(_), None) => return Err(error("tls_cert", "needs --tls-key FILE too")),
                (None, Some(_)) => return Err(error("tls_key", "needs --tls-cert FILE too")),
                (None, None) => None,
            };
            Some(SendTls {
                ca: s.tls_ca,
                cert_and_key,
                server_name: s.tls_server_name,
            })
        } else {
            for (name, given) in [
                ("tls_ca", s.tls_ca.is_some()),
                ("tls_cert", s.tls_cert.is_some()),
                ("tls_key", s.tls_key.is_some()),
                ("tls_server_name", s.tls_server_name.is_some()),
            ] {
                if given {
                    return Err(error(name, "has no effect without --tls"));
                }
            }
            None
        };
        if tls.is_some() && s.framing == SendFraming::None {
            return Err(error("framing", "none is for plain TCP, not with --tls"));
        }
        Ok(SendConfig {
            interval: s.interval,
            scenario: s.scenario,
            rate: s.rate,
            duration: s.duration,
            ack_timeout: s.ack_timeout,
            retry_for: s.retry_for,
            tls,
            framing: s.framing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(set: impl FnOnce(&mut SendFlags)) -> String {
        let mut flags = SendFlags::default();
        set(&mut flags);
        SendConfig::from_flags(&flags, false)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults() {
        let config = SendConfig::from_flags(&SendFlags::default(), false).unwrap();
        assert_eq!(
            config,
            SendConfig {
                interval: None,
                scenario: ScenarioKind::Seed,
                rate: None,
                duration: None,
                ack_timeout: Duration::from_secs(10),
                retry_for: Duration::from_secs(60),
                tls: None,
                framing: SendFraming::Mllp,
            }
        );
    }

    #[test]
    fn given_values_are_typed() {
        let flags = SendFlags {
            interval: Some("0ms".into()),
            scenario: Some("vitals".into()),
            rate: Some("2.5".into()),
            duration: Some("5m".into()),
            ack_timeout: Some("2s".into()),
            retry_for: Some("0s".into()),
            ..SendFlags::default()
        };
        let config = SendConfig::from_flags(&flags, false).unwrap();
        assert_eq!(config.interval, Some(Duration::ZERO));
        assert_eq!(config.scenario, ScenarioKind::Vitals);
        assert_eq!(config.rate, Some(2.5));
        assert_eq!(config.duration, Some(Duration::from_secs(300)));
        assert_eq!(config.ack_timeout, Duration::from_secs(2));
        assert_eq!(config.retry_for, Duration::ZERO);
    }

    #[test]
    fn invalid_flags_name_themselves() {
        assert_eq!(
            error(|f| f.interval = Some("soon".into())),
            "invalid setting `interval` (--interval): expected a duration such as 0ms, 500ms, 30s, 5m or 1h"
        );
        assert_eq!(
            error(|f| f.scenario = Some("nope".into())),
            "invalid setting `scenario` (--scenario): expected `seed` or `vitals`"
        );
        assert!(
            error(|f| f.rate = Some("0".into())).starts_with("invalid setting `rate` (--rate): ")
        );
        assert!(
            error(|f| f.ack_timeout = Some("0s".into()))
                .starts_with("invalid setting `ack_timeout` (--ack-timeout): ")
        );
        assert!(
            error(|f| f.retry_for = Some("1.5s".into()))
                .starts_with("invalid setting `retry_for` (--retry-for): ")
        );
        assert!(
            error(|f| f.duration = Some("forever".into()))
                .starts_with("invalid setting `duration` (--duration): ")
        );
    }

    #[test]
    fn tls_files_go_with_tls_and_with_each_other() {
        let tls_error = |set: fn(&mut SendFlags)| {
            let mut flags = SendFlags::default();
            set(&mut flags);
            SendConfig::from_flags(&flags, true)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            tls_error(|f| f.tls_cert = Some("device.pem".into())),
            "invalid setting `tls_cert` (--tls-cert): needs --tls-key FILE too"
        );
        assert_eq!(
            tls_error(|f| f.tls_key = Some("device.key".into())),
            "invalid setting `tls_key` (--tls-key): needs --tls-cert FILE too"
        );
        assert_eq!(
            tls_error(|f| f.tls_server_name = Some("not a name".into())),
            "invalid setting `tls_server_name` (--tls-server-name): expected a DNS name or an IP address"
        );
        for (name, set) in [
            (
                "tls_ca",
                (|f| f.tls_ca = Some("ca.pem".into())) as fn(&mut SendFlags),
            ),
            ("tls_cert", |f| f.tls_cert = Some("device.pem".into())),
            ("tls_key", |f| f.tls_key = Some("device.key".into())),
            ("tls_server_name", |f| {
                f.tls_server_name = Some("hl7.example".into())
            }),
        ] {
            assert_eq!(
                error(set),
                format!(
                    "invalid setting `{name}` (--{}): has no effect without --tls",
                    name.replace('_', "-")
                )
            );
        }
        let flags = SendFlags {
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("device.pem".into()),
            tls_key: Some("device.key".into()),
            tls_server_name: Some("127.0.0.1".into()),
            ..SendFlags::default()
        };
        assert_eq!(
            SendConfig::from_flags(&flags, true).unwrap().tls,
            Some(SendTls {
                ca: Some("ca.pem".into()),
                cert_and_key: Some(("device.pem".into(), "device.key".into())),
                server_name: Some("127.0.0.1".into()),
            })
        );
        let plain = SendConfig::from_flags(&SendFlags::default(), true).unwrap();
        assert_eq!(
            plain.tls,
            Some(SendTls {
                ca: None,
                cert_and_key: None,
                server_name: None,
            })
        );
    }
}
