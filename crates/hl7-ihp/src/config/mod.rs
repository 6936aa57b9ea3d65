//! Settings of `hl7-ihp receive`: flags, then `HL7IHP_<NAME>` environment variables, then the
//! TOML file given by `--config`, then defaults (DESIGN.md §10), merged once and validated
//! into typed values. An invalid setting names itself and stops the program with status 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hl7::ack::AckMode;
use serde::Deserialize;

/// Default MLLP address: the prototype's port on every interface.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:2575";
/// Default HTTP address for `/healthz`, `/metrics` and the API.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default largest MLLP payload (1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Default limit on open connections in total.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default limit on open connections from one peer address.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 1024;
/// Default time after the last complete frame before a connection outside a frame is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default deadline from a frame's first byte to its end.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default budget for bytes held in unfinished frames by all connections together (256 MiB).
///
/// Sized for the 2-core, 4 GB host the receiver is planned for: devices send messages of a
/// few KiB that arrive in one read, so in normal use almost nothing is held; 256 MiB still
/// lets 200 connections each hold a 1 MiB frame at once, and keeps what a flood of unfinished
/// frames can take to a sixteenth of memory, leaving the rest to SQLite's page cache and
/// the system. (Without it, 4,096 connections × 1 MiB would be 4 GiB.)
pub const DEFAULT_MAX_PARTIAL_BYTES: usize = 256 * 1024 * 1024;
/// Default time an HTTP client has to send a request's head (also between keep-alive
/// requests).
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an HTTP connection may move no byte either way before it is closed.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit on open HTTP connections: a few dashboards and scrapers need a handful; 256
/// keeps HTTP far from the descriptors that 4,096 MLLP connections need.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
/// Default number of newest records a patient's JSON file holds.
pub const DEFAULT_JSON_MAX_RECORDS: usize = 10_000;
/// Default MSH-3 of our ACKs where the sender left MSH-5 empty.
pub const DEFAULT_ACK_APPLICATION: &str = "HL7IHP";

/// The flags of `hl7-ihp receive`. Each is also read from `HL7IHP_<NAME>` and from the
/// config file's `<name>` key (snake case); none has a clap default so that the file can
/// fill in what neither flag nor environment gave.
#[derive(Debug, Default, Args)]
pub struct ReceiveArgs {
    /// TOML file with settings (keys are the flag names in snake case).
    #[arg(long, env = "HL7IHP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// MLLP address to listen on [default: 0.0.0.0:2575].
    #[arg(long, env = "HL7IHP_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the database and the patient files [default: ./data].
    #[arg(long, env = "HL7IHP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address for /healthz, /metrics and the API, or `off` [default: 127.0.0.1:8080].
    #[arg(long, env = "HL7IHP_HTTP", value_name = "ADDR|off")]
    pub http: Option<String>,
    /// Recognise retransmissions (same MSH-3, MSH-4, MSH-10 and bytes) [default: on].
    #[arg(long, env = "HL7IHP_DEDUPE", value_name = "on|off")]
    pub dedupe: Option<String>,
    /// `auto` follows MSH-15/16; `original` answers AA/AE/AR to everything [default: auto].
    #[arg(long, env = "HL7IHP_ACK_MODE", value_name = "auto|original")]
    pub ack_mode: Option<String>,
    /// Newest records per patient JSON file, 0 for all [default: 10000].
    #[arg(long, env = "HL7IHP_JSON_MAX_RECORDS", value_name = "N")]
    pub json_max_records: Option<String>,
    /// Largest MLLP payload in bytes [default: 1048576].
    #[arg(long, env = "HL7IHP_MAX_FRAME_BYTES", value_name = "N")]
    pub max_frame_bytes: Option<String>,
    /// Bytes all connections together may hold in unfinished frames; past it the
    /// connections holding the most are closed [default: 268435456, 256 MiB].
    #[arg(long, env = "HL7IHP_MAX_PARTIAL_BYTES", value_name = "N")]
    pub max_partial_bytes: Option<String>,
    /// Open connections in total [default: 4096].
    #[arg(long, env = "HL7IHP_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// Open connections from one peer address [default: 1024].
    #[arg(long, env = "HL7IHP_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    pub max_connections_per_peer: Option<String>,
    /// Time since the last complete frame before a connection is closed; bytes outside frames
    /// do not reset it, e.g. `300s`, `5m` [default: 300s].
    #[arg(long, env = "HL7IHP_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Deadline from a frame's first byte to its end [default: 30s].
    #[arg(long, env = "HL7IHP_FRAME_TIMEOUT", value_name = "DURATION")]
    pub frame_timeout: Option<String>,
    /// Time an HTTP client has to send a request's head, also between keep-alive requests
    /// [default: 10s].
    #[arg(long, env = "HL7IHP_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    pub http_header_timeout: Option<String>,
    /// Time an HTTP connection may move no byte either way before it is closed [default: 60s].
    #[arg(long, env = "HL7IHP_HTTP_IDLE_TIMEOUT", value_name = "DURATION")]
    pub http_idle_timeout: Option<String>,
    /// Open HTTP connections; more wait in the kernel's backlog [default: 256].
    #[arg(long, env = "HL7IHP_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<String>,
    /// Our MSH-3 in ACKs where the sender left MSH-5 empty [default: HL7IHP].
    #[arg(long, env = "HL7IHP_ACK_APPLICATION", value_name = "NAME")]
    pub ack_application: Option<String>,
    /// Our MSH-4 in ACKs where the sender left MSH-6 empty [default: empty].
    #[arg(long, env = "HL7IHP_ACK_FACILITY", value_name = "NAME")]
    pub ack_facility: Option<String>,
    /// What identifies a patient: `id` (PID-3.1, the prototype's rule) or `authority-id`
    /// (PID-3.4 and PID-3.1, for ids from several authorities) [default: id].
    #[arg(long, env = "HL7IHP_PATIENT_IDENTITY", value_name = "id|authority-id")]
    pub patient_identity: Option<String>,
    /// Log lines as `text` or `json` [default: text].
    #[arg(long, env = "HL7IHP_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
}

/// The config file: the same settings, snake case, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<toml::Value>,
    data_dir: Option<toml::Value>,
    http: Option<toml::Value>,
    dedupe: Option<toml::Value>,
    ack_mode: Option<toml::Value>,
    json_max_records: Option<toml::Value>,
    max_frame_bytes: Option<toml::Value>,
    max_partial_bytes: Option<toml::Value>,
    max_connections: Option<toml::Value>,
    max_connections_per_peer: Option<toml::Value>,
    idle_timeout: Option<toml::Value>,
    frame_timeout: Option<toml::Value>,
    http_header_timeout: Option<toml::Value>,
    http_idle_timeout: Option<toml::Value>,
    http_max_connections: Option<toml::Value>,
    ack_application: Option<toml::Value>,
    ack_facility: Option<toml::Value>,
    patient_identity: Option<toml::Value>,
    log_format: Option<toml::Value>,
}

/// How a patient is identified (DESIGN.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatientIdentity {
    /// PID-3.1 of the first repetition with an id.
    Id,
    /// PID-3.4 and PID-3.1, as `authority/id`.
    AuthorityAndId,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits on connections and frames (DESIGN.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest MLLP payload.
    pub max_frame_bytes: usize,
    /// Bytes all connections together may hold in unfinished frames.
    pub max_partial_bytes: usize,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections per peer address.
    pub max_connections_per_peer: usize,
    /// Time since the last complete frame before closing (outside a frame).
    pub idle_timeout: Duration,
    /// Deadline from a frame's first byte to its end.
    pub frame_timeout: Duration,
    /// Time an HTTP client has to send a request's head.
    pub http_header_timeout: Duration,
    /// Time an HTTP connection may move no byte before it is closed.
    pub http_idle_timeout: Duration,
    /// Open HTTP connections.
    pub http_max_connections: usize,
}

/// The validated settings of `hl7-ihp receive`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// MLLP address.
    pub listen: SocketAddr,
    /// Database and patient files.
    pub data_dir: PathBuf,
    /// HTTP address, `None` when off.
    pub http: Option<SocketAddr>,
    /// Duplicate recognition.
    pub dedupe: bool,
    /// ACK mode.
    pub ack_mode: AckMode,
    /// Newest records per JSON file, 0 for all.
    pub json_max_records: usize,
    /// Connection and frame limits.
    pub limits: Limits,
    /// Our MSH-3 in ACKs.
    pub ack_application: String,
    /// Our MSH-4 in ACKs.
    pub ack_facility: String,
    /// Patient identity rule.
    pub patient_identity: PatientIdentity,
    /// Log format.
    pub log_format: LogFormat,
}

/// An invalid setting: which one, where it came from, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{name}` ({source_name}): {reason}")]
pub struct ConfigError {
    name: &'static str,
    source_name: String,
    reason: String,
}

/// Where a value came from, for the error message.
#[derive(Clone, Copy)]
enum Origin {
    Flag,
    File,
}

struct Setting {
    name: &'static str,
    value: String,
    origin: Origin,
}

impl Setting {
    fn error(&self, reason: impl fmt::Display) -> ConfigError {
        let source_name = match self.origin {
            Origin::Flag => format!(
                "--{} or HL7IHP_{}",
                self.name.replace('_', "-"),
                self.name.to_uppercase()
            ),
            Origin::File => format!("`{}` in the config file", self.name),
        };
        ConfigError {
            name: self.name,
            source_name,
            reason: reason.to_string(),
        }
    }
}

fn file_value(name: &'static str, value: &toml::Value) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(if *b { "on" } else { "off" }.to_owned()),
        _ => Err(ConfigError {
            name,
            source_name: format!("`{name}` in the config file"),
            reason: "expected a string, a number or a boolean".into(),
        }),
    }
}

impl ReceiveConfig {
    /// Merges flags (and environment, which clap reads), the config file and defaults, and
    /// validates every value.
    pub fn from_args(args: &ReceiveArgs) -> Result<ReceiveConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let pick = |name: &'static str,
                    flag: Option<String>,
                    file: &Option<toml::Value>|
         -> Result<Option<Setting>, ConfigError> {
            if let Some(value) = flag {
                return Ok(Some(Setting {
                    name,
                    value,
                    origin: Origin::Flag,
                }));
            }
            file.as_ref()
                .map(|v| {
                    Ok(Setting {
                        name,
                        value: file_value(name, v)?,
                        origin: Origin::File,
                    })
                })
                .transpose()
        };
        let listen = pick("listen", args.listen.clone(), &file.listen)?;
        let data_dir = pick(
            "data_dir",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
            &file.data_dir,
        )?;
        let http = pick("http", args.http.clone(), &file.http)?;
        let dedupe = pick("dedupe", args.dedupe.clone(), &file.dedupe)?;
        let ack_mode = pick("ack_mode", args.ack_mode.clone(), &file.ack_mode)?;
        let json_max_records = pick(
            "json_max_records",
            args.json_max_records.clone(),
            &file.json_max_records,
        )?;
        let max_frame_bytes = pick(
            "max_frame_bytes",
            args.max_frame_bytes.clone(),
            &file.max_frame_bytes,
        )?;
        let max_partial_bytes = pick(
            "max_partial_bytes",
            args.max_partial_bytes.clone(),
            &file.max_partial_bytes,
        )?;
        let max_connections = pick(
            "max_connections",
            args.max_connections.clone(),
            &file.max_connections,
        )?;
        let max_connections_per_peer = pick(
            "max_connections_per_peer",
            args.max_connections_per_peer.clone(),
            &file.max_connections_per_peer,
        )?;
        let idle_timeout = pick(
            "idle_timeout",
            args.idle_timeout.clone(),
            &file.idle_timeout,
        )?;
        let frame_timeout = pick(
            "frame_timeout",
            args.frame_timeout.clone(),
            &file.frame_timeout,
        )?;
        let http_header_timeout = pick(
            "http_header_timeout",
            args.http_header_timeout.clone(),
            &file.http_header_timeout,
        )?;
        let http_idle_timeout = pick(
            "http_idle_timeout",
            args.http_idle_timeout.clone(),
            &file.http_idle_timeout,
        )?;
        let http_max_connections = pick(
            "http_max_connections",
            args.http_max_connections.clone(),
            &file.http_max_connections,
        )?;
        let ack_application = pick(
            "ack_application",
            args.ack_application.clone(),
            &file.ack_application,
        )?;
        let ack_facility = pick(
            "ack_facility",
            args.ack_facility.clone(),
            &file.ack_facility,
        )?;
        let patient_identity = pick(
            "patient_identity",
            args.patient_identity.clone(),
            &file.patient_identity,
        )?;
        let log_format = pick("log_format", args.log_format.clone(), &file.log_format)?;

        let max_frame_bytes = positive(max_frame_bytes, DEFAULT_MAX_FRAME_BYTES)?;
        let limits = Limits {
            max_frame_bytes,
            max_partial_bytes: partial_budget(max_partial_bytes, max_frame_bytes)?,
            max_connections: positive(max_connections, DEFAULT_MAX_CONNECTIONS)?,
            max_connections_per_peer: positive(
                max_connections_per_peer,
                DEFAULT_MAX_CONNECTIONS_PER_PEER,
            )?,
            idle_timeout: duration(idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
            frame_timeout: duration(frame_timeout, DEFAULT_FRAME_TIMEOUT)?,
            http_header_timeout: duration(http_header_timeout, DEFAULT_HTTP_HEADER_TIMEOUT)?,
            http_idle_timeout: duration(http_idle_timeout, DEFAULT_HTTP_IDLE_TIMEOUT)?,
            http_max_connections: positive(http_max_connections, DEFAULT_HTTP_MAX_CONNECTIONS)?,
        };
        Ok(ReceiveConfig {
            listen: address(listen, DEFAULT_LISTEN)?,
            data_dir: match data_dir {
                Some(s) if s.value.trim().is_empty() => return Err(s.error("empty path")),
                Some(s) => PathBuf::from(s.value),
                None => PathBuf::from(DEFAULT_DATA_DIR),
            },
            http: match http {
                Some(s) if s.value == "off" => None,
                other => Some(address(other, DEFAULT_HTTP)?),
            },
            dedupe: switch(dedupe, true)?,
            ack_mode: match ack_mode {
                None => AckMode::Auto,
                Some(s) => match s.value.as_str() {
                    "auto" => AckMode::Auto,
                    "original" => AckMode::Original,
                    _ => return Err(s.error("expected `auto` or `original`")),
                },
            },
            json_max_records: number(json_max_records, DEFAULT_JSON_MAX_RECORDS)?,
            limits,
            ack_application: text(ack_application, DEFAULT_ACK_APPLICATION)?,
            ack_facility: text(ack_facility, "")?,
            patient_identity: match patient_identity {
                None => PatientIdentity::Id,
                Some(s) => match s.value.as_str() {
                    "id" => PatientIdentity::Id,
                    "authority-id" => PatientIdentity::AuthorityAndId,
                    _ => return Err(s.error("expected `id` or `authority-id`")),
                },
            },
            log_format: log_format_of(log_format)?,
        })
    }
}

/// Reads `--log-format` alone, before the rest is validated, so that errors can be logged
/// in the chosen format.
pub fn log_format(args: &ReceiveArgs) -> LogFormat {
    match args.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

fn log_format_of(setting: Option<Setting>) -> Result<LogFormat, ConfigError> {
    match setting {
        None => Ok(LogFormat::Text),
        Some(s) => match s.value.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(s.error("expected `text` or `json`")),
        },
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let error = |reason: String| ConfigError {
        name: "config",
        source_name: "--config or HL7IHP_CONFIG".into(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| error(format!("{}: {}", path.display(), e.message())))
}

fn address(setting: Option<Setting>, default: &str) -> Result<SocketAddr, ConfigError> {
    match setting {
        None => Ok(default
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))),
        Some(s) => s
            .value
            .parse()
            .map_err(|_| s.error("expected an address such as 0.0.0.0:2575 or [::1]:2575")),
    }
}

fn number(setting: Option<Setting>, default: usize) -> Result<usize, ConfigError> {
    match setting {
        None => Ok(default),
        Some(s) => s
            .value
            .trim()
            .parse()
            .map_err(|_| s.error("expected a whole number")),
    }
}

fn positive(setting: Option<Setting>, default: usize) -> Result<usize, ConfigError> {
    match setting {
        None => Ok(default),
        Some(s) => match s.value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(s.error("expected a whole number above 0")),
        },
    }
}

/// The partial-frame budget must hold two of the largest frames, so that one frame at the
/// limit (whose buffer is a little larger than the frame) is never closed for being alone.
fn partial_budget(setting: Option<Setting>, max_frame_bytes: usize) -> Result<usize, ConfigError> {
    let least = max_frame_bytes.saturating_mul(2);
    match setting {
        None if DEFAULT_MAX_PARTIAL_BYTES >= least => Ok(DEFAULT_MAX_PARTIAL_BYTES),
        None => Ok(least),
        Some(s) => match s.value.trim().parse::<usize>() {
            Ok(n) if n >= least => Ok(n),
            _ => Err(s.error(format!(
                "expected a whole number of at least {least} (twice max_frame_bytes)"
            ))),
        },
    }
}

fn switch(setting: Option<Setting>, default: bool) -> Result<bool, ConfigError> {
    match setting {
        None => Ok(default),
        Some(s) => match s.value.as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            _ => Err(s.error("expected `on` or `off`")),
        },
    }
}

fn text(setting: Option<Setting>, default: &str) -> Result<String, ConfigError> {
    match setting {
        None => Ok(default.to_owned()),
        Some(s) if s.value.chars().any(|c| c.is_control()) => {
            Err(s.error("control characters are not allowed"))
        }
        Some(s) => Ok(s.value),
    }
}

fn duration(setting: Option<Setting>, default: Duration) -> Result<Duration, ConfigError> {
    match setting {
        None => Ok(default),
        Some(s) => match parse_duration(&s.value) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(s.error("expected a duration above zero such as 500ms, 30s, 5m or 1h")),
        },
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a whole number and a unit; a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_prototypes() {
        let config = ReceiveConfig::from_args(&ReceiveArgs::default()).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:2575");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(
            config.http.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8080")
        );
        assert!(config.dedupe);
        assert_eq!(config.ack_mode, AckMode::Auto);
        assert_eq!(config.json_max_records, 10_000);
        assert_eq!(config.limits.max_frame_bytes, 1024 * 1024);
        assert_eq!(config.limits.max_connections, 4096);
        assert_eq!(config.limits.max_connections_per_peer, 1024);
        assert_eq!(config.limits.max_partial_bytes, 256 * 1024 * 1024);
        assert_eq!(config.limits.http_header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(config.limits.http_max_connections, 256);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl7-ihp.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:3000\"\nhttp = \"off\"\ndedupe = false\njson_max_records = 5\nidle_timeout = \"2m\"\nmax_partial_bytes = 4194304\nhttp_header_timeout = \"2s\"\nhttp_idle_timeout = \"90s\"\nhttp_max_connections = 8\n",
        )
        .unwrap();
        let args = ReceiveArgs {
            config: Some(path),
            listen: Some("127.0.0.1:4000".into()),
            ..ReceiveArgs::default()
        };
        let config = ReceiveConfig::from_args(&args).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(config.http, None);
        assert!(!config.dedupe);
        assert_eq!(config.json_max_records, 5);
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.limits.max_partial_bytes, 4 * 1024 * 1024);
        assert_eq!(config.limits.http_header_timeout, Duration::from_secs(2));
        assert_eq!(config.limits.http_idle_timeout, Duration::from_secs(90));
        assert_eq!(config.limits.http_max_connections, 8);
    }

    #[test]
    fn invalid_settings_name_themselves() {
        let error = |args: ReceiveArgs| ReceiveConfig::from_args(&args).unwrap_err().to_string();
        let message = error(ReceiveArgs {
            listen: Some("nowhere".into()),
            ..ReceiveArgs::default()
        });
        assert!(
            message.contains("`listen`") && message.contains("--listen"),
            "{message}"
        );
        let message = error(ReceiveArgs {
            ack_mode: Some("sometimes".into()),
            ..ReceiveArgs::default()
        });
        assert!(message.contains("`ack_mode`"), "{message}");
        let message = error(ReceiveArgs {
            max_connections: Some("0".into()),
            ..ReceiveArgs::default()
        });
        assert!(message.contains("`max_connections`"), "{message}");
        let message = error(ReceiveArgs {
            max_partial_bytes: Some("1048576".into()),
            ..ReceiveArgs::default()
        });
        assert!(
            message.contains("`max_partial_bytes`") && message.contains("2097152"),
            "{message}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let message = error(ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        });
        assert!(message.contains("config"), "{message}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("0ms"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("10d"), None);
    }
}
