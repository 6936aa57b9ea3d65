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
    // Boxed: its many settings make it several times the size of the other variants.
    Receive(Box<ReceiveArgs>),
    /// A receiver and bedside monitors in one process, with a live table of their vitals.
    Demo(DemoArgs),
    /// Simulate a device (the prototype's three messages by default, bedside monitors with
    /// `--scenario vitals`), or generate load with `--connections`.
    Send(SendArgs),
    /// List the patients in the store.
    Patients(PatientsArgs),
    /// Print a patient's document (the shape of their JSON file) from the store.
    Show(ShowArgs),
    /// List stored frames, newest first: control id, sender, time, outcome.
    Messages(MessagesArgs),
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

/// `hl7-ihp patients`.
#[derive(Debug, Args)]
pub struct PatientsArgs {
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

/// `hl7-ihp show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The patient's id (PID-3.1, or `authority/id` with `--patient-identity authority-id`).
    pub patient: String,
    /// Every record in the store, not only the newest 10,000 the file holds.
    #[arg(long)]
    pub all: bool,
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

/// `hl7-ihp messages`.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Only messages answered with an error or a reject.
    #[arg(long)]
    pub rejected: bool,
    /// Print each message's bytes under its line.
    #[arg(long)]
    pub raw: bool,
    /// At most this many, newest first.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

/// `hl7-ihp send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where the receiver listens.
    #[arg(long, default_value = "127.0.0.1:2575", value_name = "HOST:PORT")]
    pub to: String,
    /// Send this many messages, then stop (exit 1 if any ended unacknowledged or negative).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Pause between messages of a connection: `1s` (the default without --connections),
    /// `100ms`, `0ms`.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// `seed`: the prototype's three glucose messages; `vitals`: IHE PCD-01 bedside monitors.
    #[arg(long, default_value = "seed", value_name = "seed|vitals")]
    pub scenario: String,
    /// Patients (one monitor each) in the vitals scenario.
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub patients: usize,
    /// Send these HL7 files (or folders of them) as they are, in a loop.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub file: Vec<std::path::PathBuf>,
    /// Send the prototype's bytes unchanged (its shared control id and old time).
    #[arg(long)]
    pub verbatim: bool,
    /// Load mode: this many connections, no line per message, a summary at the end.
    #[arg(long, value_name = "C")]
    pub connections: Option<usize>,
    /// Total messages a second over all connections (default in load mode: as fast as the
    /// receiver answers).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Stop after this long (`30s`, `5m`).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for an ACK before sending the message again on a new connection.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub ack_timeout: String,
    /// How long to keep retrying one message before counting it unacknowledged.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub retry_for: String,
}

/// `hl7-ihp demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the data here (default: a new folder under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Patients, one bedside monitor each.
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub patients: usize,
    /// How often each monitor reports.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// MLLP address of the demo's receiver.
    #[arg(long, default_value = "127.0.0.1:2575", value_name = "ADDR")]
    pub listen: String,
    /// HTTP address of the demo's receiver, or `off`.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR|off")]
    pub http: String,
}

/// `--data-dir` of the commands that read a receiver's store.
#[derive(Debug, Args)]
pub struct DataDir {
    /// The receiver's data directory.
    #[arg(
        long = "data-dir",
        env = "HL7IHP_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    pub path: PathBuf,
}
