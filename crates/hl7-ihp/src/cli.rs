//! The command line: one subcommand per job, parsed by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ReceiveArgs;

/// Receives HL7 v2 data from medical devices over MLLP and hands it to the IHP platform.
#[derive(Debug, Parser)]
#[command(name = "hl7-ihp", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MLLP receiver: store every message durably, answer with HL7 ACKs, keep the
    /// patient JSON files current.
    Receive(ReceiveArgs),
    /// Print the structure of HL7 v2 files (one message, a batch, or MLLP-framed messages).
    Parse(ParseArgs),
}

/// `hl7-ihp parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Print one JSON document per message: segments, fields, repetitions, components,
    /// subcomponent strings.
    #[arg(long)]
    pub json: bool,
    /// Decode escape sequences (`\F\`, `\X0D\`, …); by default they are printed as sent.
    #[arg(long)]
    pub decoded: bool,
    /// Files to read; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}
