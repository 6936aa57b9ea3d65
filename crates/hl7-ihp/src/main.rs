//! The `hl7-ihp` binary: parses the command line and runs one command.
//!
//! Exit codes (DESIGN.md §10): 0 success, 1 a failure of the work, 2 a usage or
//! configuration error.

mod cli;
mod parse_command;
mod store;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Parse(args) => parse_command::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hl7-ihp: {error:#}");
            ExitCode::from(1)
        }
    }
}
