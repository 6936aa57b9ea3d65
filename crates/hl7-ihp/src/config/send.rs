//! The settings of `hl7-ihp send` that need validating, declared as `receive`'s are and
//! checked by the same parsers; the plain ones (`--to`, `--count`, `--file`, …) stay in
//! `cli::SendArgs`.

use std::time::Duration;

use super::ConfigError;
use super::settings::{ConfigFile, Reads, declare_settings};
use super::values::{choice, duration, positive_duration, positive_real};

declare_settings! {
    /// The flags of `hl7-ihp send` that need validating, as text.
    pub struct SendFlags reads Reads::Flags;
    /// The validated settings of `hl7-ihp send`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct SendConfig;

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
    /// Validates the flags.
    pub fn from_flags(flags: &SendFlags) -> Result<SendConfig, ConfigError> {
        SendConfig::resolve(flags, ConfigFile::none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(set: impl FnOnce(&mut SendFlags)) -> String {
        let mut flags = SendFlags::default();
        set(&mut flags);
        SendConfig::from_flags(&flags).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let config = SendConfig::from_flags(&SendFlags::default()).unwrap();
        assert_eq!(
            config,
            SendConfig {
                interval: None,
                scenario: ScenarioKind::Seed,
                rate: None,
                duration: None,
                ack_timeout: Duration::from_secs(10),
                retry_for: Duration::from_secs(60),
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
        };
        let config = SendConfig::from_flags(&flags).unwrap();
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
}
