//! Settings of each command, declared once and validated into typed values at start
//! (STYLE.md §8). `hl7-ihp receive` merges flags, then `HL7IHP_<NAME>` environment variables,
//! then the TOML file given by `--config`, then defaults (README, "Settings"); `send` and `demo`
//! read only their flags. An invalid setting names itself and where it came from, and stops
//! the program with status 2.
//!
//! - `settings`: `declare_settings!`, the table that gives each setting its flag, variable,
//!   file key, help, default and parser, and the merge.
//! - [`values`]: the validating parsers (address, number, duration, switch, choice, text).
//! - [`receive`], [`send`], [`demo`]: each command's table and typed config.
//! - [`describe`]: `receive`'s table as text: the commented example file and the effective
//!   settings, secrets redacted (`hl7-ihp config`).

mod settings;

pub mod demo;
pub mod describe;
pub mod receive;
pub mod send;
pub mod values;

pub use demo::{DemoConfig, DemoFlags};
pub use receive::{
    ConnectTls, ExportConfig, HTTP_TOKEN_ENV, HttpConfig, HttpLimits, HttpToken, Limits,
    LinksConfig, LogFormat, MllpConfig, PatientIdentity, RECEIVE_SETTINGS, ReceiveArgs,
    ReceiveConfig, ReceiveFlags, StoreConfig, log_format,
};
pub use send::{ScenarioKind, SendConfig, SendFlags, SendFraming, SendTls};
pub use settings::{Effective, Fallback, SettingDoc, Source};
pub use values::parse_duration;

/// An invalid setting: which one, where it came from, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{name}` ({source_name}): {reason}")]
pub struct ConfigError {
    name: &'static str,
    source_name: String,
    reason: String,
}

impl ConfigError {
    /// A setting that is valid alone but not with the others.
    pub(crate) fn new(name: &'static str, source_name: &str, reason: String) -> ConfigError {
        ConfigError {
            name,
            source_name: source_name.to_owned(),
            reason,
        }
    }
}
