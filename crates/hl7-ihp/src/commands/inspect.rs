//! The inspection commands: `patients`, `show` and `messages`, reading the store of a data
//! directory (while a receiver runs on it, or not).

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{DataDir, MessagesArgs, PatientsArgs, ShowArgs};
use crate::export;
use crate::store::{self, MessageFilter, StoreLocation, StoreRead, outcome_name, utc_text};
use crate::terminal;

/// The store `--data-dir` or `--store` names, as a location, with the password of
/// `--store-password-file` (read as `receive` reads it) when given.
pub fn location(args: &DataDir) -> anyhow::Result<StoreLocation> {
    let location = named_location(args)?;
    match &args.store_password_file {
        Some(path) => crate::config::receive::with_password_file(Some(location), path)
            .map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(location),
    }
}

fn named_location(args: &DataDir) -> anyhow::Result<StoreLocation> {
    Ok(match &args.store {
        Some(text) => match StoreLocation::parse(text) {
            Ok(location) => location,
            Err(reason) => anyhow::bail!("invalid --store: {reason}"),
        },
        None => {
            if !args.path.exists() {
                anyhow::bail!("no data directory at {}", args.path.display());
            }
            StoreLocation::in_data_dir(&args.path)
        }
    })
}

fn open(args: &DataDir) -> anyhow::Result<std::sync::Arc<dyn StoreRead>> {
    let location = location(args)?;
    store::open_read_only(&location).with_context(|| format!("opening the store {location:?}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `hl7-ihp patients`: one line per patient. Ids and names are the devices' text: escaped,
/// and cut to a column's width. For each kind of patient file the store has positions
/// for, a column says how far that patient's file is behind the store.
pub fn patients(args: &PatientsArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.store)?;
    let runtime = runtime()?;
    let patients = runtime.block_on(store.patients())?;
    let mut outputs = Vec::new();
    for output in [export::Output::Json, export::Output::Ndjson] {
        let files = runtime.block_on(store.export_files(output.name(), None))?;
        if !files.is_empty() {
            outputs.push((output, files));
        }
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let width = terminal::column_width(
        patients.iter().map(|p| p.key.as_str()),
        "PATIENT".len().max(10),
        terminal::ID_WIDTH,
    );
    write!(
        out,
        "{:<width$}  {:>12}  {:<24}",
        "PATIENT", "OBSERVATIONS", "LAST RECEIVED"
    )?;
    for (output, _) in &outputs {
        write!(
            out,
            "  {:<18}",
            format!("{} FILE", output.name().to_uppercase())
        )?;
    }
    writeln!(out, "  NAME")?;
    for patient in &patients {
        write!(
            out,
            "{:<width$}  {:>12}  {:<24}",
            terminal::cell(&patient.key, width),
            patient.n_observations,
            patient.last_received_at.map(utc_text).unwrap_or_default(),
        )?;
        for (_, files) in &outputs {
            let lag = file_lag(&runtime, &*store, patient, files.get(&patient.key), now_ms)?;
            write!(out, "  {lag:<18}")?;
        }
        writeln!(
            out,
            "  {}",
            terminal::cell(&patient.name, terminal::NAME_WIDTH)
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Messages looked at to say how far a file is behind; beyond, it says "over".
const LAG_LOOKBACK: usize = 100;

/// How far a patient's file is behind: `current`, `3 behind, 4.2 s` (messages stored after
/// the newest the file holds, and how long ago the oldest of them arrived), or `none`.
fn file_lag(
    runtime: &tokio::runtime::Runtime,
    store: &dyn StoreRead,
    patient: &store::PatientSummary,
    position: Option<&store::FilePosition>,
    now_ms: i64,
) -> anyhow::Result<String> {
    let Some(position) = position else {
        return Ok("none".into());
    };
    if patient
        .last_message
        .is_none_or(|last| last <= position.through)
    {
        return Ok("current".into());
    }
    let newest = runtime
        .block_on(store.patient_feed(&patient.key, LAG_LOOKBACK))?
        .map(|(_, messages)| messages)
        .unwrap_or_default();
    let behind: Vec<_> = newest.iter().filter(|m| m.id > position.through).collect();
    let Some(oldest) = behind.last() else {
        return Ok("current".into());
    };
    let seconds = (now_ms - oldest.received_at.as_millisecond()).max(0) as f64 / 1000.0;
    let count = if behind.len() >= LAG_LOOKBACK {
        format!("over {LAG_LOOKBACK}")
    } else {
        behind.len().to_string()
    };
    Ok(format!("{count} behind, {seconds:.1} s"))
}

/// `hl7-ihp show <patient>`: the patient's document, the shape of their JSON file.
pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.store)?;
    let limit = if args.all {
        None
    } else {
        export::record_limit(export::DEFAULT_MAX_RECORDS)
    };
    let records = runtime()?.block_on(store.patient_records(&args.patient, limit))?;
    let Some(records) = records else {
        eprintln!("hl7-ihp: no patient with that id");
        return Ok(ExitCode::from(1));
    };
    let mut out = io::stdout().lock();
    let document = crate::documents::patient::render_document(&records, args.fields);
    out.write_all(&terminal::json_text(&document))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `hl7-ihp messages`: stored frames, newest first (the newest 50 unless `--limit` says
/// otherwise); bodies only with `--raw`.
pub fn messages(args: &MessagesArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.store)?;
    // One more than shown tells whether there are older ones, without counting them all.
    let limit = (args.limit > 0).then_some(args.limit);
    let filter = MessageFilter {
        rejected_only: args.rejected,
        with_raw: args.raw,
        limit: limit.map(|n| n.saturating_add(1)),
        ..MessageFilter::default()
    };
    let mut messages = runtime()?.block_on(store.messages(filter))?;
    let more = limit.is_some_and(|n| messages.len() > n);
    if let Some(n) = limit {
        messages.truncate(n);
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let id_width = terminal::column_width(
        messages.iter().map(|m| m.control_id.as_str()),
        "CONTROL ID".len(),
        terminal::ID_WIDTH,
    );
    writeln!(
        out,
        "{:>8}  {:<24}  {:<21}  {:<id_width$}  {:<9}  SENDER / REASON",
        "ID", "RECEIVED", "PEER", "CONTROL ID", "OUTCOME"
    )?;
    for message in &messages {
        let sender = terminal::cell(&message.sender, terminal::NAME_WIDTH);
        let mut detail = match &message.reason {
            Some(reason) => format!(
                "{sender}  ({})",
                terminal::cell(reason, terminal::REASON_WIDTH)
            ),
            None => sender.into_owned(),
        };
        if let Some(merge) = &message.merge {
            // The patient merge this message made: keys are shown by `patients` too.
            detail.push_str(&format!(
                "  merge {} → {}",
                terminal::cell(&merge.prior, terminal::ID_WIDTH),
                terminal::cell(&merge.survivor, terminal::ID_WIDTH)
            ));
        }
        if let Some(kind) = message
            .message_type
            .as_deref()
            .filter(|t| crate::query::is_query(t))
        {
            // A demographic query: kept and answered, never data about a patient.
            detail.push_str(&format!("  [query {}]", terminal::escape(kind)));
        }
        if let Some(identity) = &message.peer_identity {
            // Who the TLS client certificate says it is, or the `--connect` link it came on
            // (`link=NAME`, then the device's certificate over TLS): device text, escaped.
            let label = if identity.starts_with("link=") {
                ""
            } else {
                "TLS "
            };
            detail.push_str(&format!(
                "  [{label}{}]",
                terminal::cell(identity, terminal::REASON_WIDTH)
            ));
        }
        // `hl7-ihp replay`'s links, both ways.
        if let Some(original) = message.replay_of {
            detail.push_str(&format!("  (replay of #{original})"));
        }
        if let Some(replay) = message.replayed_as {
            detail.push_str(&format!("  (replayed as #{replay})"));
        }
        if message.n_received > 1 {
            // The same refused bytes again, counted on this row instead of kept again.
            detail.push_str(&format!("  ×{} received", message.n_received));
        }
        writeln!(
            out,
            "{:>8}  {:<24}  {:<21}  {:<id_width$}  {:<9}  {detail}",
            message.id,
            utc_text(message.received_at),
            terminal::escape(&message.peer),
            terminal::cell(&message.control_id, id_width),
            outcome_name(message.outcome)
        )?;
        if let Some(raw) = &message.raw {
            // The whole body, segments on lines of their own: not cut, only escaped.
            for line in terminal::body_lines(raw) {
                writeln!(out, "          {line}")?;
            }
        }
    }
    out.flush()?;
    if more {
        // On standard error: the table on standard output stays only rows.
        eprintln!("… older messages not shown; --limit N or --limit 0 for all");
    }
    Ok(ExitCode::SUCCESS)
}
