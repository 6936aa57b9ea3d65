//! The command line: one subcommand per job, parsed by clap.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::config::{DemoFlags, ReceiveArgs, SendFlags};

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
    // Boxed as `Receive` is: with its TLS settings it is the largest of the others.
    Send(Box<SendArgs>),
    /// List the patients in the store.
    Patients(PatientsArgs),
    /// Print a patient's document (the shape of their JSON file) from the store.
    Show(ShowArgs),
    /// List stored frames, newest first: control id, sender, time, outcome.
    Messages(MessagesArgs),
    /// Copy the store, also while a receiver runs on it, into one self-contained file, and
    /// check the copy.
    Backup(BackupArgs),
    /// Remove old messages once (what `receive --retention` does in the background), or
    /// with `--dry-run` count what would go; the receiver must be stopped.
    Purge(PurgeArgs),
    /// Print the structure of HL7 v2 files (one message, a batch, or MLLP-framed messages).
    Parse(ParseArgs),
    /// Show `receive`'s effective settings (`--print`, with receive's flags) or a commented
    /// config file with every setting (`--example`).
    // Boxed as `Receive` is: it carries receive's flags.
    Config(Box<ConfigArgs>),
    /// Print a shell completion script for bash, zsh or fish.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command with `--dir`.
    Man(ManArgs),
    /// Run stored messages through ingest again (refused ones after a setting was fixed),
    /// into this data directory or to another receiver with `--to`; each new message is
    /// linked to the original, and replaying twice stores nothing twice.
    // Boxed as `Receive` is: it carries receive's flags.
    Replay(Box<ReplayArgs>),
    /// Copy a SQLite store (a stopped receiver's) into an empty PostgreSQL store, keeping
    /// message ids; resumable, and verified by counts at the end.
    Migrate(MigrateArgs),
}

/// `hl7-ihp config`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["print", "example"])))]
pub struct ConfigArgs {
    /// Print the settings `receive` would run with, given the same flags, environment and
    /// `--config` file, as TOML with each one's source (secrets redacted); exit 2 when one
    /// is invalid.
    #[arg(long)]
    pub print: bool,
    /// Print a config file with every setting of `receive` commented out with its default
    /// and its help (deploy/hl7-ihp.toml).
    #[arg(long)]
    pub example: bool,
    /// `receive`'s flags, for `--print`.
    #[command(flatten)]
    pub receive: ReceiveArgs,
}

/// `hl7-ihp completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell (bash, zsh, fish; also elvish, powershell).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `hl7-ihp man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `hl7-ihp.1` and one `hl7-ihp-<command>.1` per command into this directory
    /// instead of printing the top page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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
    /// Every record in the store, not only the newest 200 a JSON file holds by default.
    #[arg(long)]
    pub all: bool,
    /// The records' keys: `prototype` (the files' default) or `full` (as `--json-fields`).
    #[arg(long = "json-fields", value_name = "prototype|full", default_value = "prototype", value_parser = parse_fields)]
    pub fields: crate::export::Fields,
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

/// Messages `hl7-ihp messages` lists unless told otherwise: a store holds millions, and
/// what one looks for is usually among the newest.
pub const DEFAULT_MESSAGES_LIMIT: usize = 50;

/// `hl7-ihp messages`.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Only messages answered with an error or a reject.
    #[arg(long)]
    pub rejected: bool,
    /// Print each message's bytes under its line.
    #[arg(long)]
    pub raw: bool,
    /// At most this many, newest first; 0 for all.
    #[arg(long, default_value_t = DEFAULT_MESSAGES_LIMIT, value_name = "N")]
    pub limit: usize,
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

/// `hl7-ihp backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write the copy to; an existing one is refused unless `--force`.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// Replace an existing DEST (atomically: the copy is written beside it, then renamed).
    #[arg(long)]
    pub force: bool,
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

/// Messages `hl7-ihp replay` takes at most unless told otherwise, so that no selection runs
/// unbounded.
pub const DEFAULT_REPLAY_LIMIT: u64 = 10_000;

/// `hl7-ihp replay`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("selection")
        .required(true)
        .multiple(true)
        .args(["rejected", "since", "until", "ids"])
))]
pub struct ReplayArgs {
    /// Only messages that were refused (answered with an error or a reject).
    #[arg(long)]
    pub rejected: bool,
    /// Only messages received at or after TIME: RFC 3339 (`2026-12-01T08:00:00Z`) or a
    /// duration ago (`2h`, `90m`, `7d`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only messages received before TIME (as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// This message (its id, as `hl7-ihp messages` shows it); repeat for more.
    #[arg(long = "id", value_name = "N")]
    pub ids: Vec<i64>,
    /// At most this many messages, the newest that match.
    #[arg(long, default_value_t = DEFAULT_REPLAY_LIMIT, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Send the messages over MLLP to the receiver at HOST:PORT instead of storing them
    /// here (the store is then only read, also while a receiver runs on it).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// MLLP over TLS to --to (see --to-tls-ca, --to-tls-cert, --to-tls-key,
    /// --to-tls-server-name; as `send --tls`).
    #[arg(long, requires = "to")]
    pub to_tls: bool,
    /// CA certificates, PEM, that --to's certificate must chain to [default: the system's].
    #[arg(long, value_name = "FILE", requires = "to_tls")]
    pub to_tls_ca: Option<PathBuf>,
    /// Our client certificate chain, PEM, for a receiver that wants one (with --to-tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["to_tls", "to_tls_key"])]
    pub to_tls_cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[arg(long, value_name = "FILE", requires_all = ["to_tls", "to_tls_cert"])]
    pub to_tls_key: Option<PathBuf>,
    /// The name --to's certificate must carry [default: the host of --to].
    #[arg(long, value_name = "NAME", requires = "to_tls")]
    pub to_tls_server_name: Option<String>,
    /// Say what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write one JSON line per message to FILE (created 0600; appended to).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The receiving settings a local replay runs ingest with (`--config`, environment,
    /// flags, as `receive` reads them), and `--data-dir` / `--store`.
    #[command(flatten)]
    pub receive: ReceiveArgs,
}

/// `hl7-ihp purge`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["before", "rejected_before"])))]
pub struct PurgeArgs {
    /// Remove accepted messages (and their observations) received before TIME: an RFC 3339
    /// time (`2026-01-31T00:00:00Z`) or a duration ago (`30d`, `12h`).
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Remove refused frames (errors and rejects) received before TIME.
    #[arg(long, value_name = "TIME")]
    pub rejected_before: Option<String>,
    /// Only count what would go, and what is held back and why.
    #[arg(long)]
    pub dry_run: bool,
    /// The patient files that must hold a message before it goes, as `receive
    /// --patient-files` keeps them: `json`, `ndjson`, `both` or `off` (no such bound).
    #[arg(
        long,
        env = "HL7IHP_PATIENT_FILES",
        default_value = "json",
        value_name = "json|ndjson|both|off",
        value_parser = parse_patient_files
    )]
    pub patient_files: crate::export::PatientFiles,
    /// The receiver's data directory.
    #[command(flatten)]
    pub store: DataDir,
}

fn parse_patient_files(text: &str) -> Result<crate::export::PatientFiles, String> {
    use crate::export::PatientFiles;
    crate::config::values::choice(
        text,
        &[
            ("json", PatientFiles::Json),
            ("ndjson", PatientFiles::Ndjson),
            ("both", PatientFiles::Both),
            ("off", PatientFiles::Off),
        ],
    )
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
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// MLLP over TLS (see --tls-ca, --tls-cert, --tls-key, --tls-server-name).
    #[arg(long)]
    pub tls: bool,
    /// Play --patients monitors whose messages name no patient (an empty PID, PV1-3 and
    /// OBX-18's EUI-64, no ADT), as an XH80X sends: the receiver shows them as unassigned
    /// devices. Implies the vitals scenario's messages.
    #[arg(long, conflicts_with = "file")]
    pub no_patient: bool,
    /// Vitals scenario: every 10th message of a monitor is an ORU^R40 alarm report (IHE
    /// PCD-04, SpO2 low) for its patient, alternately raised and cleared.
    #[arg(long)]
    pub alarm: bool,
    /// Play a monitor in demo mode: every OBX flagged `DEMO` in OBX-8.
    #[arg(long)]
    pub demo: bool,
    /// Play a monitor that sends placeholders: every other numeric value is `-999`.
    #[arg(long)]
    pub placeholders: bool,
    /// The settings validated by `config::SendConfig`.
    #[command(flatten)]
    pub settings: SendFlags,
    /// Play a device that serves: listen on ADDR (port 0: any; the first line printed is
    /// `serving on ADDR`) and push the messages to whoever connects, waiting for each ACK
    /// (with --tls, --tls-cert and --tls-key are this device's certificate).
    #[arg(long, value_name = "ADDR", conflicts_with = "connections")]
    pub serve: Option<std::net::SocketAddr>,
    /// Send one demographic query for the patient id ID to --to and print the answer: the
    /// MSA code, QAK-2 where there is one, and a line per patient found (exit 0 when the
    /// answer is MSA AA, found or not, 1 otherwise).
    #[arg(
        long,
        value_name = "ID",
        conflicts_with_all = ["serve", "connections", "file", "count", "no_patient", "alarm"]
    )]
    pub query: Option<String>,
    /// Which query --query sends: a19 (QRY^A19, v2.3.1, the id in QRD-8, as a Mindray VS8
    /// sends it) or q22 (QBP^Q22, IHE PDQ, `@PID.3.1^ID` in QPD-3).
    #[arg(
        long,
        value_name = "KIND",
        default_value = "a19",
        value_parser = ["a19", "q22"],
        requires = "query"
    )]
    pub query_kind: String,
    /// With --query-kind q22: ask for this family name too (`@PID.5.1` in QPD-3).
    #[arg(long, value_name = "FAMILY", requires = "query")]
    pub query_name: Option<String>,
}

/// `hl7-ihp demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Patients, one bedside monitor each.
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub patients: usize,
    /// The settings validated by `config::DemoConfig`.
    #[command(flatten)]
    pub settings: DemoFlags,
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
    /// The store to read, when the receiver was given `--store` [default: hl7-ihp.sqlite3
    /// in the data directory].
    #[arg(long = "store", env = "HL7IHP_STORE", value_name = "LOCATION")]
    pub store: Option<String>,
    /// File whose first line is the PostgreSQL password of --store (instead of the URL's).
    #[arg(
        long = "store-password-file",
        env = "HL7IHP_STORE_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub store_password_file: Option<PathBuf>,
}

fn parse_fields(text: &str) -> Result<crate::export::Fields, String> {
    match text {
        "prototype" => Ok(crate::export::Fields::Prototype),
        "full" => Ok(crate::export::Fields::Full),
        _ => Err("expected prototype or full".into()),
    }
}

/// Messages `hl7-ihp migrate` copies per transaction unless told otherwise.
pub const DEFAULT_MIGRATE_BATCH: u64 = 2_000;

/// `hl7-ihp migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite store: a data directory (its hl7-ihp.sqlite3) or a database file. A data
    /// directory's lock is taken: its receiver must be stopped.
    #[arg(long, value_name = "DIR|FILE")]
    pub from: PathBuf,
    /// The PostgreSQL store to fill: postgres://user[:password]@host[:port]/db. Created or
    /// brought to the current schema; it must hold no messages but those of an unfinished
    /// migration of the same store, which this run continues.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The database password, from the first line of FILE (instead of in --to).
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Messages per transaction.
    #[arg(long, default_value_t = DEFAULT_MIGRATE_BATCH, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// At most N messages per second, to spare a database that serves others meanwhile.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rate: Option<u32>,
}
