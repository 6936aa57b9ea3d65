//! `hl7-ihp config`: `--print` validates `receive`'s settings as `receive` would and prints
//! them with their sources, secrets redacted; `--example` prints the commented config file.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;

use crate::cli::ConfigArgs;
use crate::config::ReceiveConfig;
use crate::config::describe::{self, TokenSource};

/// Runs `hl7-ihp config`; `matches` are clap's for it (`None` only in a caller without
/// them: every value then counts as a flag's).
pub fn run(args: &ConfigArgs, matches: Option<&ArgMatches>) -> anyhow::Result<ExitCode> {
    let text = if args.example {
        describe::example()
    } else {
        // The same merge and validation as `receive`, and the same message and status.
        let config = match ReceiveConfig::from_args(&args.receive) {
            Ok(config) => config,
            Err(error) => return Ok(super::invalid_setting(&error)),
        };
        let sources = match args.receive.sources() {
            Ok(sources) => sources,
            Err(error) => return Ok(super::invalid_setting(&error)),
        };
        let token = match config.http.token {
            None => TokenSource::None,
            Some(_)
                if sources
                    .iter()
                    .any(|s| s.name == "http_token_file" && s.text.is_some()) =>
            {
                TokenSource::File
            }
            Some(_) => TokenSource::Env,
        };
        let from_env = |name: &str| {
            matches.is_some_and(|m| m.value_source(name) == Some(ValueSource::EnvVariable))
        };
        describe::effective(&sources, from_env, args.receive.config.as_deref(), token)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
