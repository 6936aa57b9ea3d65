//! `hl7-ihp replay`: stored messages through ingest again, into this data directory (each
//! new message linked to its original) or over MLLP to another receiver (`--to`).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::join_all;
use serde::Serialize;

use crate::cli::ReplayArgs;
use crate::config::{ReceiveConfig, SendTls};
use crate::datadir::{self, DataDirError};
use crate::events::Events;
use crate::ingest::{Ingest, IngestSettings, Original, Replayed, oversized_length};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimit;
use crate::sender::link::{Session, TlsClient};
use crate::sender::simulator::Outgoing;
use crate::store::{self, MessageFilter, MessageSummary, Outcome, StoreRead, outcome_name};
use crate::terminal;

/// Messages a local replay runs through ingest at once: the store commits them together.
const REPLAY_GROUP: usize = 64;

/// How long `--to` waits for each message's ACK (writing it included).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `hl7-ihp replay`.
pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let now = jiff::Timestamp::now();
    let (since, until) = match (
        args.since.as_deref().map(|t| time(t, now)).transpose(),
        args.until.as_deref().map(|t| time(t, now)).transpose(),
    ) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(reason), _) => return Ok(usage(&format!("invalid --since: {reason}"))),
        (_, Err(reason)) => return Ok(usage(&format!("invalid --until: {reason}"))),
    };
    let config = match ReceiveConfig::from_args(&args.receive) {
        Ok(config) => config,
        Err(error) => return Ok(super::invalid_setting(&error)),
    };
    let selector = Selector {
        rejected: args.rejected,
        since_ms: since.map(|t| t.as_millisecond()),
        until_ms: until.map(|t| t.as_millisecond()),
        ids: args.ids.clone(),
        limit: usize::try_from(args.limit).unwrap_or(usize::MAX),
    };
    let mut report = match &args.report {
        Some(path) => Some(Report::open(path)?),
        None => None,
    };
    let code = match &args.to {
        Some(to) => remote(args, &config, &selector, to, report.as_mut()),
        None => local(args, config, &selector, report.as_mut()),
    };
    if let Some(report) = report {
        report.finish()?;
    }
    code
}

fn usage(message: &str) -> ExitCode {
    eprintln!("hl7-ihp: {message}");
    ExitCode::from(2)
}

/// `--since`/`--until`: as `purge --before` reads its time.
fn time(text: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, String> {
    crate::retention::parse_time(text, now)
}

/// Which stored messages: every condition given holds (AND).
struct Selector {
    rejected: bool,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    ids: Vec<i64>,
    limit: usize,
}

/// The messages selected, oldest first, with their bytes.
struct Selection {
    messages: Vec<MessageSummary>,
    /// `--id`s the store does not hold.
    unknown: Vec<i64>,
    /// More matched than `--limit`.
    more: bool,
}

impl Selector {
    fn keeps(&self, message: &MessageSummary) -> bool {
        let ms = message.received_at.as_millisecond();
        !(self.rejected && message.outcome == Outcome::Accept)
            && self.since_ms.is_none_or(|since| ms >= since)
            && self.until_ms.is_none_or(|until| ms < until)
    }

    async fn select(&self, store: &dyn StoreRead) -> anyhow::Result<Selection> {
        let mut selection = Selection {
            messages: Vec::new(),
            unknown: Vec::new(),
            more: false,
        };
        if !self.ids.is_empty() {
            let mut ids = self.ids.clone();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                match store.message(id).await? {
                    None => selection.unknown.push(id),
                    Some(detail) if self.keeps(&detail.summary) => {
                        if selection.messages.len() == self.limit {
                            selection.more = true;
                            break;
                        }
                        selection.messages.push(detail.summary);
                    }
                    Some(_) => {}
                }
            }
            return Ok(selection);
        }
        let filter = MessageFilter {
            rejected_only: self.rejected,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            with_raw: true,
            limit: Some(self.limit.saturating_add(1)),
            ..MessageFilter::default()
        };
        let mut messages = store.messages(filter).await?;
        selection.more = messages.len() > self.limit;
        messages.truncate(self.limit);
        messages.reverse();
        selection.messages = messages;
        Ok(selection)
    }
}

/// `#12 ORU^R01 ctl=…`: how a line names a stored message (device text escaped, no names).
fn label(message: &MessageSummary) -> String {
    let message_type = match &message.message_type {
        Some(message_type) => message_type.clone(),
        // A refused frame's type was not extracted: MSH-9 of its first line, if it reads.
        None => message
            .raw
            .as_deref()
            .and_then(header_type)
            .unwrap_or_else(|| "-".to_owned()),
    };
    format!(
        "#{} {} ctl={}",
        message.id,
        terminal::cell(&message_type, 20),
        terminal::cell(&message.control_id, terminal::ID_WIDTH)
    )
}

/// MSH-9 as sent, from the first line of `raw` when it is a readable MSH.
fn header_type(raw: &[u8]) -> Option<String> {
    let end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    let header = hl7::parse(&raw[..end]).ok()?;
    let field = header.get("MSH-9").filter(|f| !f.is_empty())?;
    Some(String::from_utf8_lossy(field).into_owned())
}

fn code_text(code: Option<&str>) -> &str {
    code.unwrap_or("no ACK")
}

/// Why a stored message cannot be replayed, when it cannot: an oversized frame of which only
/// the first bytes were kept.
fn not_replayable(message: &MessageSummary, raw: &[u8]) -> Option<String> {
    let length = message.reason.as_deref().and_then(oversized_length)?;
    (raw.len() < length).then(|| {
        format!(
            "not replayable: only the first {} of its {length} bytes were kept",
            raw.len()
        )
    })
}

/// One JSON line of `--report` per message.
#[derive(Debug, Default, Serialize)]
struct ReportLine {
    /// The original's id.
    original: i64,
    /// Its MSH-10 as stored.
    control_id: String,
    /// `stored`, `duplicate`, `still_refused`, `already_replayed`, `not_replayable`,
    /// `would_store`, `would_send`, `answered`, `failed`.
    result: &'static str,
    /// The new message (stored), the stored one it duplicates, or the earlier replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<i64>,
    /// The ACK code (that a device would get, or that `--to` answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    ack_code: Option<String>,
    /// The refusal's reason, MSA-3 of `--to`'s answer, or why sending failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// `--to`'s address.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

/// The `--report` file.
struct Report {
    out: io::BufWriter<std::fs::File>,
}

impl Report {
    fn open(path: &Path) -> anyhow::Result<Report> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening the report {}", path.display()))?;
        Ok(Report {
            out: io::BufWriter::new(file),
        })
    }

    fn write(&mut self, line: &ReportLine) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(())
    }
}

/// The counts of the summary line.
#[derive(Debug, Default)]
struct Counts {
    selected: usize,
    stored: usize,
    duplicate: usize,
    still_refused: usize,
    already: usize,
    not_replayable: usize,
    would: usize,
    answered: usize,
    negative: usize,
    failed: usize,
}

/// Replays into this data directory: takes its lock (as `receive` does), opens the store
/// and runs each message's bytes through ingest with the receiving settings given. A
/// PostgreSQL store is shared by several receivers by design: no lock is taken, a running
/// receiver is fine, and its exporter (the lease holder's) writes the replayed messages'
/// patient files, as any other receiver's messages.
fn local(
    args: &ReplayArgs,
    config: ReceiveConfig,
    selector: &Selector,
    mut report: Option<&mut Report>,
) -> anyhow::Result<ExitCode> {
    let data_dir = match &config.store.location {
        store::StoreLocation::Postgres(_) => None,
        _ => Some(datadir::prepare(&config.data_dir)),
    };
    let data_dir = match data_dir.transpose() {
        Ok(data_dir) => data_dir,
        Err(error @ DataDirError::Held { .. }) => {
            return Ok(usage(&format!(
                "{error}: stop it first, or replay through it with --to and its MLLP address"
            )));
        }
        Err(error) => return Ok(usage(&error.to_string())),
    };
    let store = store::open(&config.store.location, &config.store.options)
        .with_context(|| format!("opening the store {:?}", config.store.location))?;
    let runtime = super::runtime()?;
    let ingest = Ingest::new(
        Arc::clone(&store),
        IngestSettings {
            ack_mode: config.mllp.ack_mode,
            ack_application: config.mllp.ack_application.clone(),
            ack_facility: config.mllp.ack_facility.clone(),
            patient_identity: config.mllp.patient_identity,
            time_zone: config.mllp.time_zone.clone(),
            placeholder_values: config.mllp.placeholder_values.clone(),
        },
        Arc::new(Metrics::default()),
        Events::new(),
        Arc::new(RateLimit::default()),
    );
    let max_frame_bytes = config.mllp.limits.max_frame_bytes;
    let result = runtime.block_on(async {
        let selection = selector.select(&*store).await?;
        let mut counts = Counts {
            selected: selection.messages.len(),
            ..Counts::default()
        };
        let mut out = io::stdout().lock();
        for chunk in selection.messages.chunks(REPLAY_GROUP) {
            // Concurrently, so that the store's writer commits them together (one sync per
            // group instead of one per message); the lines stay in the selection's order.
            let replays = join_all(chunk.iter().map(|message| async {
                let raw = message.raw.as_deref().unwrap_or_default();
                if message.replayed_as.is_some()
                    || refused_replay(message).is_some()
                    || not_replayable(message, raw).is_some()
                {
                    return None;
                }
                let original = Original {
                    id: message.id,
                    peer: message.peer.clone(),
                    peer_identity: message.peer_identity.clone(),
                };
                Some(
                    ingest
                        .replay(raw, &original, max_frame_bytes, !args.dry_run)
                        .await,
                )
            }))
            .await;
            for (message, replayed) in chunk.iter().zip(replays) {
                let name = label(message);
                let mut line = ReportLine {
                    original: message.id,
                    control_id: message.control_id.clone(),
                    ..ReportLine::default()
                };
                let raw = message.raw.as_deref().unwrap_or_default();
                if let Some(replay) = message.replayed_as {
                    counts.already += 1;
                    writeln!(out, "{name} → already replayed as #{replay}")?;
                    line.result = "already_replayed";
                    line.message = Some(replay);
                    write_report(&mut report, &line)?;
                    continue;
                }
                if let Some(original) = refused_replay(message) {
                    counts.already += 1;
                    writeln!(
                        out,
                        "{name} → is a replay of #{original}, not replayed again"
                    )?;
                    line.result = "already_replayed";
                    line.message = Some(original);
                    write_report(&mut report, &line)?;
                    continue;
                }
                if let Some(why) = not_replayable(message, raw) {
                    counts.not_replayable += 1;
                    writeln!(out, "{name} → {why}")?;
                    line.result = "not_replayable";
                    line.text = Some(why);
                    write_report(&mut report, &line)?;
                    continue;
                }
                let results = match replayed {
                    Some(Ok(results)) => results,
                    Some(Err(error)) => {
                        counts.failed += 1;
                        writeln!(out, "{name} → failed: {error}")?;
                        line.result = "failed";
                        line.text = Some(error.to_string());
                        write_report(&mut report, &line)?;
                        continue;
                    }
                    None => continue,
                };
                for result in results {
                    let mut line = ReportLine {
                        original: message.id,
                        control_id: message.control_id.clone(),
                        ..ReportLine::default()
                    };
                    let text = match &result {
                        Replayed::Stored { id, ack_code } => {
                            counts.stored += 1;
                            line.result = "stored";
                            line.message = Some(*id);
                            line.ack_code.clone_from(ack_code);
                            format!("stored as #{id} ({})", code_text(ack_code.as_deref()))
                        }
                        Replayed::Duplicate { id, ack_code } => {
                            counts.duplicate += 1;
                            line.result = "duplicate";
                            line.message = Some(*id);
                            line.ack_code.clone_from(ack_code);
                            format!(
                                "duplicate of #{id}, nothing stored ({})",
                                code_text(ack_code.as_deref())
                            )
                        }
                        Replayed::StillRefused {
                            outcome,
                            reason,
                            ack_code,
                        } => {
                            counts.still_refused += 1;
                            line.result = "still_refused";
                            line.ack_code.clone_from(ack_code);
                            line.text = Some(reason.clone());
                            format!(
                                "still refused ({}, {}): {}",
                                outcome_name(*outcome),
                                code_text(ack_code.as_deref()),
                                terminal::cell(reason, terminal::REASON_WIDTH)
                            )
                        }
                        Replayed::RefusedByStore {
                            id,
                            reason,
                            ack_code,
                        } => {
                            counts.still_refused += 1;
                            line.result = "refused_by_store";
                            line.message = Some(*id);
                            line.ack_code.clone_from(ack_code);
                            line.text = Some(reason.clone());
                            format!(
                                "kept as #{id}, refused ({}): {}",
                                code_text(ack_code.as_deref()),
                                terminal::cell(reason, terminal::REASON_WIDTH)
                            )
                        }
                        Replayed::WouldStore { ack_code } => {
                            counts.would += 1;
                            line.result = "would_store";
                            line.ack_code.clone_from(ack_code);
                            if message.outcome == Outcome::Accept && config.store.options.dedupe {
                                // Same key and bytes as the original, which is stored and
                                // accepted: the duplicate check finds it.
                                line.result = "would_be_duplicate";
                                line.message = Some(message.id);
                                format!(
                                    "would be a duplicate of #{}, nothing stored ({})",
                                    message.id,
                                    code_text(ack_code.as_deref())
                                )
                            } else {
                                format!(
                                    "would be stored as new ({}), unless a copy is already stored",
                                    code_text(ack_code.as_deref())
                                )
                            }
                        }
                    };
                    writeln!(out, "{name} → {text}")?;
                    write_report(&mut report, &line)?;
                }
            }
        }
        out.flush()?;
        summary(&selection, &counts, args.dry_run, None);
        anyhow::Ok(exit_code(&selection, &counts))
    });
    // The runtime, then the store (it closes and checkpoints), then the lock.
    drop(ingest);
    drop(runtime);
    drop(store);
    drop(data_dir);
    result
}

fn write_report(report: &mut Option<&mut Report>, line: &ReportLine) -> anyhow::Result<()> {
    match report {
        Some(report) => report.write(line),
        None => Ok(()),
    }
}

/// The last line (standard error, so that standard output stays one line per message) and
/// what was not selected.
/// The original of a refused replay's result (a patient merge the store refused is kept
/// so): replaying that again would keep its bytes a third time. An accepted replay is left
/// to the duplicate check.
fn refused_replay(message: &MessageSummary) -> Option<i64> {
    message
        .replay_of
        .filter(|_| message.outcome != Outcome::Accept)
}

/// 1 when a store write or a send failed or an `--id` is not in the store, else 0.
fn exit_code(selection: &Selection, counts: &Counts) -> ExitCode {
    if counts.failed > 0 || !selection.unknown.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(selection: &Selection, counts: &Counts, dry_run: bool, to: Option<&str>) {
    for id in &selection.unknown {
        eprintln!("hl7-ihp: no message #{id} in the store");
    }
    if selection.more {
        eprintln!(
            "hl7-ihp: more messages match than --limit; only the newest {} were taken \
             (narrow with --since/--until, or raise --limit)",
            selection.messages.len()
        );
    }
    let dry = if dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let text = match to {
        Some(to) => format!(
            "replay to {}: {} selected, {} answered ({} negative), {} failed, {} not replayable{}",
            terminal::escape(to),
            counts.selected,
            counts.answered,
            counts.negative,
            counts.failed,
            counts.not_replayable,
            if dry_run {
                format!(", {} would be sent{dry}", counts.would)
            } else {
                String::new()
            },
        ),
        None => format!(
            "replay: {} selected, {} stored, {} duplicate, {} still refused, {} already \
             replayed, {} not replayable, {} failed{}",
            counts.selected,
            counts.stored,
            counts.duplicate,
            counts.still_refused,
            counts.already,
            counts.not_replayable,
            counts.failed,
            if dry_run {
                format!(", {} would be accepted{dry}", counts.would)
            } else {
                String::new()
            },
        ),
    };
    println!("{text}");
}

/// Sends to another receiver: the store is only read (beside a running receiver too), each
/// message's bytes go as stored, one at a time, and what the receiver answered is the
/// report: its store cannot hold our link (the bytes must stay the same).
fn remote(
    args: &ReplayArgs,
    config: &ReceiveConfig,
    selector: &Selector,
    to: &str,
    mut report: Option<&mut Report>,
) -> anyhow::Result<ExitCode> {
    if let store::StoreLocation::Sqlite(path) = &config.store.location
        && !path.exists()
    {
        return Ok(usage(&format!("no store at {}", path.display())));
    }
    let tls = if args.to_tls {
        crate::tls::install_provider();
        let tls = SendTls {
            ca: args.to_tls_ca.clone(),
            cert_and_key: args.to_tls_cert.clone().zip(args.to_tls_key.clone()),
            server_name: args.to_tls_server_name.clone(),
        };
        let name = match super::send::server_name(&tls, to) {
            Ok(name) => name,
            Err(error) => return Ok(super::invalid_setting(&error)),
        };
        let client_config = match crate::tls::client_config(
            tls.ca.as_deref(),
            tls.cert_and_key
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path())),
        ) {
            Ok(client_config) => client_config,
            // Unreadable or bad files are settings to fix, as for `send`.
            Err(error) => return Ok(usage(&error.to_string())),
        };
        Some(TlsClient::new(client_config, name))
    } else {
        None
    };
    let store = store::open_read_only(&config.store.location)
        .with_context(|| format!("opening the store {:?}", config.store.location))?;
    let runtime = super::runtime()?;
    let result = runtime.block_on(async {
        let selection = selector.select(&*store).await?;
        let mut counts = Counts {
            selected: selection.messages.len(),
            ..Counts::default()
        };
        let mut session = Session::new(to, tls);
        let target = terminal::escape(to).into_owned();
        let mut out = io::stdout().lock();
        for message in &selection.messages {
            let name = label(message);
            let raw = message.raw.clone().unwrap_or_default();
            let mut line = ReportLine {
                original: message.id,
                control_id: message.control_id.clone(),
                target: Some(to.to_owned()),
                ..ReportLine::default()
            };
            if let Some(why) = not_replayable(message, &raw) {
                counts.not_replayable += 1;
                writeln!(out, "{name} → {why}")?;
                line.result = "not_replayable";
                line.text = Some(why);
                write_report(&mut report, &line)?;
                continue;
            }
            if args.dry_run {
                counts.would += 1;
                writeln!(out, "{name} → would be sent to {target}")?;
                line.result = "would_send";
                write_report(&mut report, &line)?;
                continue;
            }
            let outgoing = Outgoing::from_bytes(raw, String::new());
            match session.send(&outgoing, ACK_TIMEOUT).await {
                Ok(answer) => {
                    counts.answered += 1;
                    let code = answer.code.map(|c| c.as_str().to_owned());
                    if answer.code.is_some_and(|c| c.outcome() != Outcome::Accept) {
                        counts.negative += 1;
                    }
                    let text = if answer.text.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", terminal::cell(&answer.text, terminal::REASON_WIDTH))
                    };
                    writeln!(
                        out,
                        "{name} → {target} answered {}{text}",
                        code_text(code.as_deref())
                    )?;
                    line.result = "answered";
                    line.ack_code = code;
                    line.text = Some(answer.text);
                }
                Err(why) => {
                    counts.failed += 1;
                    writeln!(out, "{name} → not delivered to {target}: {why}")?;
                    line.result = "failed";
                    line.text = Some(why);
                }
            }
            write_report(&mut report, &line)?;
        }
        out.flush()?;
        summary(&selection, &counts, args.dry_run, Some(to));
        anyhow::Ok(exit_code(&selection, &counts))
    });
    drop(runtime);
    drop(store);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        assert_eq!(
            time("2026-12-01T08:00:00+01:00", now).unwrap(),
            "2026-12-01T07:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(
            time("2h", now).unwrap(),
            "2026-12-01T10:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(
            time("7d", now).unwrap(),
            "2026-11-24T12:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert!(time("yesterday", now).is_err());
    }
}
