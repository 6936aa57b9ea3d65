//! The `hl7-ihp` binary: parses the command line and runs one command.
//!
//! Exit codes (DESIGN.md §10): 0 success, 1 a failure of the work, 2 a usage or
//! configuration error.

mod cli;
mod config;
mod connection;
mod demo;
mod export;
mod http;
mod ids;
mod ingest;
mod inspect;
mod listener;
mod logging;
mod metrics;
mod parse_command;
mod receive;
mod send;
mod simulator;
mod store;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::config::{ReceiveArgs, ReceiveConfig};

/// mimalloc rather than the system allocator: ingest makes a few dozen small strings per
/// message on the async workers and the store frees some on its writer thread, and under
/// load glibc's allocator took about a fifth of the workers' time (measured with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Parse(args) => parse_command::run(&args),
        cli::Command::Receive(args) => receive_main(&args),
        cli::Command::Demo(args) => demo::run(&args),
        cli::Command::Send(args) => send::run(&args),
        cli::Command::Patients(args) => inspect::patients(&args),
        cli::Command::Show(args) => inspect::show(&args),
        cli::Command::Messages(args) => inspect::messages(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hl7-ihp: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// The multi-threaded async runtime of the commands that serve or send.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn receive_main(args: &ReceiveArgs) -> anyhow::Result<ExitCode> {
    logging::init(config::log_format(args));
    let config = match ReceiveConfig::from_args(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let open_files = listener::raise_open_file_limit();
    runtime()?.block_on(async move {
        let (mllp, http) = receive::bind(&config).await?;
        let mllp_address = mllp.local_addr()?;
        let http_address = http.as_ref().map(|l| l.local_addr()).transpose()?;
        tracing::info!(
            mllp = %mllp_address,
            http = %http_address.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            data_dir = %config.data_dir.display(),
            open_files_limit = open_files.unwrap_or(0),
            "listening"
        );
        if !listener::is_loopback(&mllp_address) {
            tracing::warn!(mllp = %mllp_address, "MLLP on a non-loopback address without TLS: messages cross the network unencrypted");
        }
        if let Some(address) = http_address
            && !listener::is_loopback(&address)
        {
            tracing::warn!(http = %address, "HTTP on a non-loopback address: /metrics and /healthz are reachable from the network");
        }
        receive::run(config, mllp, http, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on Ctrl+C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
