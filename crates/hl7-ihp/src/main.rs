//! The `hl7-ihp` binary: picks the allocator, runs one command, maps its result to an exit
//! code: 0 success, 1 a failure of the work, 2 a usage or configuration error.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use hl7_ihp::cli::{Cli, Command};
use hl7_ihp::commands;

/// mimalloc rather than the system allocator: ingest makes a few dozen small strings per
/// message on the async workers and the store frees some on its writer thread, and under
/// load glibc's allocator took about a fifth of the workers' time (measured with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `Cli::parse()`, keeping clap's matches: `config --print` asks them whether a value
    // came from a flag or from its environment variable.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)
        .map_err(|error| error.format(&mut Cli::command()))
        .unwrap_or_else(|error| error.exit());
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(&args),
        Command::Receive(args) => commands::receive::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Send(args) => commands::send::run(&args),
        Command::Patients(args) => commands::inspect::patients(&args),
        Command::Show(args) => commands::inspect::show(&args),
        Command::Messages(args) => commands::inspect::messages(&args),
        Command::Config(args) => commands::config::run(&args, matches.subcommand_matches("config")),
        Command::Completions(args) => commands::manual::completions(&args),
        Command::Man(args) => commands::manual::man(&args),
        Command::Backup(args) => commands::backup::run(&args),
        Command::Replay(args) => commands::replay::run(&args),
        Command::Purge(args) => commands::purge::run(&args),
        Command::Migrate(args) => commands::migrate::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hl7-ihp: {error:#}");
            ExitCode::from(1)
        }
    }
}
