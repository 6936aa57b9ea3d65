//! One function per subcommand: each reads its arguments, runs the library's pieces and says
//! what happened on the terminal. The only modules that use `anyhow`.

pub mod backup;
pub mod config;
pub mod demo;
pub mod inspect;
pub mod manual;
pub mod migrate;
pub mod parse;
pub mod purge;
pub mod receive;
pub mod replay;
pub mod send;

use std::process::ExitCode;

use anyhow::Context;

use crate::config::ConfigError;

/// The multi-threaded async runtime of the commands that serve or send.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Says which setting is invalid and gives the usage error's exit status, 2.
pub fn invalid_setting(error: &ConfigError) -> ExitCode {
    eprintln!("hl7-ihp: {error}");
    ExitCode::from(2)
}
