//! `hl7-ihp receive`: validates the settings, prepares and locks the data directory, binds,
//! logs where it listens, and runs the server until Ctrl+C or SIGTERM.

use std::process::ExitCode;

use crate::config::{self, ReceiveArgs, ReceiveConfig};
use crate::mllp::listener;
use crate::shutdown::Shutdown;
use crate::{datadir, logging, server};

/// Runs `hl7-ihp receive`.
pub fn run(args: &ReceiveArgs) -> anyhow::Result<ExitCode> {
    logging::init(config::log_format(args));
    let config = match ReceiveConfig::from_args(args) {
        Ok(config) => config,
        Err(error) => return Ok(super::invalid_setting(&error)),
    };
    // Before binding: a directory the receiver cannot use, or one another receiver holds,
    // is a configuration error, not a server that says "listening" and then fails.
    // With PostgreSQL, receivers on one store may share the directory: its lease decides who
    // writes the patient files (docs/storage.md, "Leases").
    let prepare = match config.store.location {
        crate::store::StoreLocation::Postgres(_) => datadir::prepare_shared,
        crate::store::StoreLocation::Sqlite(_) => datadir::prepare,
    };
    let data_dir = match prepare(&config.data_dir) {
        Ok(data_dir) => data_dir,
        Err(error) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let open_files = listener::raise_open_file_limit();
    let runtime = super::runtime()?;
    let result = runtime.block_on(async {
        let listeners = match server::bind(&config).await {
            Ok(listeners) => listeners,
            // Bad TLS files are a setting to fix, like any other.
            Err(server::ServerError::Tls(error)) => {
                eprintln!("hl7-ihp: {error}");
                return Ok(ExitCode::from(2));
            }
            Err(error) => return Err(error.into()),
        };
        let mllp_address = listeners.mllp_addr();
        let tls_address = listeners.mllp_tls_addr();
        let http_address = listeners.http_addr();
        let off = |address: Option<std::net::SocketAddr>| {
            address.map_or_else(|| "off".to_owned(), |a| a.to_string())
        };
        tracing::info!(
            mllp = %off(mllp_address),
            mllp_tls = %off(tls_address),
            mllp_query = %off(listeners.mllp_query_addr()),
            mutual_tls = listeners.mllp_tls.as_ref().is_some_and(|(_, tls)| tls.requires_client_certificate()),
            http = %off(http_address),
            https = listeners.http_tls.is_some(),
            allow = %config.mllp.access.allow,
            proxy_protocol_from = %config.mllp.access.proxy_from.as_ref().map_or_else(|| "none".to_owned(), |l| l.to_string()),
            audit_log = config.audit_log.is_some(),
            data_dir = %config.data_dir.display(),
            store = ?config.store.location,
            http_token = config.http.token.is_some(),
            open_files_limit = open_files.unwrap_or(0),
            "listening"
        );
        if let Some(address) = mllp_address
            && !listener::is_loopback(&address)
        {
            tracing::warn!(mllp = %address, "MLLP on a non-loopback address without TLS: messages cross the network unencrypted (--listen-tls; --require-tls makes this an error)");
        }
        if let Some(address) = http_address
            && !listener::is_loopback(&address)
            && listeners.http_tls.is_none()
        {
            tracing::warn!(http = %address, "HTTP on a non-loopback address without TLS: the token and the data cross the network unencrypted (--http-tls-cert)");
        }
        let (_trigger, shutdown) = Shutdown::on_signals();
        server::run(config, &data_dir, listeners, shutdown.into_requested()).await?;
        Ok(ExitCode::SUCCESS)
    });
    // The runtime first: any task still holding the store ends with it, the store closes
    // (and checkpoints), and only then is the data directory's lock released.
    drop(runtime);
    drop(data_dir);
    result
}
