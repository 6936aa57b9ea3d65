//! The settings of `hl7-ihp demo`, declared as `receive`'s are and checked by the same
//! parsers; its receiver is `receive`'s defaults with the demo's addresses and folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::receive::{ReceiveConfig, ReceiveSettings};
use super::settings::{ConfigFile, Reads, declare_settings};
use super::values::{address, address_or_off, path, positive_duration};

declare_settings! {
    /// The flags of `hl7-ihp demo` that need validating, as text.
    pub struct DemoFlags reads Reads::Flags;
    /// The validated settings of `hl7-ihp demo`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct DemoConfig;

    /// Keep the data here.
    data_dir: Option<PathBuf> = path, "DIR",
        optional "a new folder under the system's temporary directory";
    /// How often each monitor reports.
    interval: Duration = positive_duration, "DURATION", default "1s";
    /// MLLP address of the demo's receiver.
    listen: SocketAddr = address, "ADDR", default "127.0.0.1:2575";
    /// HTTP address of the demo's receiver, or `off`.
    http: Option<SocketAddr> = address_or_off, "ADDR|off", default "127.0.0.1:8080";
}

impl DemoConfig {
    /// Validates the flags.
    pub fn from_flags(flags: &DemoFlags) -> Result<DemoConfig, ConfigError> {
        DemoConfig::resolve(flags, ConfigFile::none())
    }

    /// The demo's receiver over `data_dir`: every other setting at `receive`'s default.
    pub fn receive_config(&self, data_dir: &Path) -> Result<ReceiveConfig, ConfigError> {
        let mut settings = ReceiveSettings::defaults()?;
        settings.listen = Some(self.listen);
        settings.http = self.http;
        settings.data_dir = data_dir.to_owned();
        // The demo has no token settings: its HTTP side stays on loopback.
        if let Some(address) = self.http
            && !address.ip().is_loopback()
        {
            return Err(ConfigError::new(
                "http",
                "--http",
                format!(
                    "{address} is not a loopback address, and the demo has no token for its \
                     HTTP side; use 127.0.0.1, or `hl7-ihp receive` with --http-token-file"
                ),
            ));
        }
        Ok(ReceiveConfig::from_settings(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreLocation;

    #[test]
    fn the_receiver_uses_the_demo_settings() {
        let flags = DemoFlags {
            listen: Some("127.0.0.1:0".into()),
            http: Some("off".into()),
            ..DemoFlags::default()
        };
        let demo = DemoConfig::from_flags(&flags).unwrap();
        assert_eq!(demo.interval, Duration::from_secs(1));
        assert_eq!(demo.data_dir, None);
        let receive = demo.receive_config(Path::new("/tmp/demo")).unwrap();
        assert_eq!(receive.mllp.listen.unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(receive.http.listen, None);
        assert_eq!(
            receive.store.location,
            StoreLocation::in_data_dir(Path::new("/tmp/demo"))
        );
        assert_eq!(receive.mllp.limits.max_connections, 4096);
    }

    #[test]
    fn the_demo_keeps_http_on_loopback() {
        let flags = DemoFlags {
            http: Some("0.0.0.0:8080".into()),
            ..DemoFlags::default()
        };
        let demo = DemoConfig::from_flags(&flags).unwrap();
        let message = demo
            .receive_config(Path::new("/tmp/demo"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("invalid setting `http`") && message.contains("token"),
            "{message}"
        );
    }

    #[test]
    fn invalid_flags_name_themselves() {
        let error = |flags: DemoFlags| DemoConfig::from_flags(&flags).unwrap_err().to_string();
        assert_eq!(
            error(DemoFlags {
                interval: Some("0ms".into()),
                ..DemoFlags::default()
            }),
            "invalid setting `interval` (--interval): expected a duration above zero such as 500ms, 30s, 5m or 1h"
        );
        assert!(
            error(DemoFlags {
                http: Some("on".into()),
                ..DemoFlags::default()
            })
            .starts_with("invalid setting `http` (--http): ")
        );
    }
}
