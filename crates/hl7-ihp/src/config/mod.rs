//! Settings of each command, declared once and validated into typed values at start
//! (STYLE.md §8). `hl7-ihp receive` merges flags, then `HL7IHP_<NAME>` environment variables,
//! then the TOML file given by `--config`, then defaults (DESIGN.md §10). An invalid setting
//! names itself and where it came from, and stops the program with status 2.
//!
//! - `settings`: `declare_settings!`, the table that gives each setting its flag, variable,
//!   file key, help, default and parser, and the merge.
//! - [`values`]: the validating parsers (address, number, duration, switch, choice, text).
//! - [`receive`]: the command's table and typed config.

mod settings;

pub mod receive;
pub mod values;

pub use receive::{
    ExportConfig, HttpConfig, Limits, LogFormat, MllpConfig, PatientIdentity, ReceiveArgs,
    ReceiveConfig, ReceiveFlags, StoreConfig, log_format,
};
pub use values::parse_duration;

/// An invalid setting: which one, where it came from, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{name}` ({source_name}): {reason}")]
pub struct ConfigError {
    name: &'static str,
    source_name: String,
    reason: String,
}
