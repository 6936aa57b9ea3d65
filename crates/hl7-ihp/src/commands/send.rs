//! `hl7-ihp send`: reads the command line, runs the simulator or the load generator of
//! `sender`, and prints the summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use rustls::pki_types::ServerName;

use crate::cli::SendArgs;
use crate::config::{ConfigError, ScenarioKind, SendConfig, SendFraming, SendTls};
use crate::query::QueryKind;
use crate::sender::link::{Session, TlsClient};
use crate::sender::load::{self, Plan, Summary};
use crate::sender::query::{QueryAnswer, QuerySpec};
use crate::sender::serve::ServePlan;
use crate::sender::simulator::Outgoing;
use crate::sender::simulator::Scenario;

/// Runs `hl7-ihp send`.
pub fn run(args: &SendArgs) -> anyhow::Result<ExitCode> {
    crate::tls::install_provider();
    let config = match SendConfig::from_flags(&args.settings, args.tls) {
        Ok(config) => config,
        Err(error) => return Ok(super::invalid_setting(&error)),
    };
    if let Some(address) = args.serve {
        return serve(args, &config, address);
    }
    // Loaded once per run: every connection and reconnection shares it.
    let tls = match &config.tls {
        None => None,
        Some(tls) => {
            let name = match server_name(tls, &args.to) {
                Ok(name) => name,
                Err(error) => return Ok(super::invalid_setting(&error)),
            };
            let client_config = crate::tls::client_config(
                tls.ca.as_deref(),
                tls.cert_and_key
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
            )?;
            Some(TlsClient::new(client_config, name))
        }
    };
    if let Some(id) = &args.query {
        return query(args, &config, tls, id);
    }
    let scenario = scenario_of(args, &config)?;
    let SendConfig {
        interval,
        rate,
        duration,
        ack_timeout,
        retry_for,
        framing,
        ..
    } = config;
    let load = args.connections.is_some();
    let connections = args.connections.unwrap_or(1).max(1);
    // Simulator mode: one a second by default. Load mode: as fast as possible, or the rate.
    let period = match (load, rate, interval) {
        (_, Some(rate), _) => Some(Duration::from_secs_f64(connections as f64 / rate)),
        (_, None, Some(interval)) => Some(interval),
        (false, None, None) => Some(Duration::from_secs(1)),
        (true, None, None) => None,
    };
    let started = Instant::now();
    let plan = Plan {
        to: args.to.clone(),
        ack_timeout,
        retry_for,
        period: period.filter(|p| !p.is_zero()),
        count: None,
        deadline: duration.map(|d| started + d),
        verbose: !load,
        tls,
        bare: framing == SendFraming::None,
        alarm_every: if args.alarm {
            crate::sender::alarms::ALARM_EVERY
        } else {
            0
        },
        values: crate::sender::values::ValueFlags {
            demo: args.demo,
            placeholders: args.placeholders,
        },
    };
    let runtime = super::runtime()?;
    let summary = runtime.block_on(load::run_connections(
        scenario,
        plan,
        connections,
        args.count,
        load,
        args.json,
    ))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if load || summary.sent > 0 || summary.unacknowledged > 0 {
        // Also when nothing could be sent: the summary says what was given up.
        print_summary(&summary);
    }
    let bounded = args.count.is_some() || duration.is_some();
    let failed = summary.negative > 0 || summary.unacknowledged > 0;
    Ok(if bounded && failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What to send: `--file`s, else the scenario.
fn scenario_of(args: &SendArgs, config: &SendConfig) -> anyhow::Result<Scenario> {
    Ok(if !args.file.is_empty() {
        Scenario::Files(read_files(&args.file)?)
    } else if args.no_patient {
        Scenario::Unassigned {
            devices: args.patients.max(1),
        }
    } else {
        match config.scenario {
            ScenarioKind::Seed => Scenario::Seed {
                verbatim: args.verbatim,
            },
            ScenarioKind::Vitals => Scenario::Vitals {
                patients: args.patients.max(1),
            },
        }
    })
}

/// `send --serve ADDR`: the simulator as a device that serves (`sender::serve`).
fn serve(
    args: &SendArgs,
    config: &SendConfig,
    address: std::net::SocketAddr,
) -> anyhow::Result<ExitCode> {
    let tls = match &config.tls {
        None => None,
        Some(tls) => {
            let Some((cert, key)) = tls.cert_and_key.clone() else {
                return Ok(super::invalid_setting(&ConfigError::new(
                    "tls_cert",
                    "--tls-cert",
                    "--serve with --tls needs this device's --tls-cert FILE and --tls-key FILE"
                        .into(),
                )));
            };
            let files = crate::tls::ServerTlsFiles {
                cert,
                key,
                client_ca: None,
                crl: None,
            };
            Some(crate::tls::ServerTls::load(files)?.config())
        }
    };
    let scenario = scenario_of(args, config)?;
    let plan = ServePlan {
        period: Some(config.interval.unwrap_or(Duration::from_secs(1))).filter(|p| !p.is_zero()),
        count: args.count,
        ack_timeout: config.ack_timeout,
        bare: config.framing == SendFraming::None,
        tls,
    };
    let runtime = super::runtime()?;
    let summary = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let bound = listener.local_addr()?;
        println!("serving on {bound}");
        anyhow::Ok(crate::sender::serve::run(listener, scenario, plan).await)
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "served {} receiver(s) · sent {} · acknowledged {} · negative {} · retransmitted {}",
            summary.connections,
            summary.sent,
            summary.acknowledged,
            summary.negative,
            summary.retransmitted
        );
    }
    Ok(if summary.negative > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `send --query ID`: one demographic query (`sender::query`) to `--to`, its answer printed.
fn query(
    args: &SendArgs,
    config: &SendConfig,
    tls: Option<TlsClient>,
    id: &str,
) -> anyhow::Result<ExitCode> {
    let kind = if args.query_kind == "q22" {
        QueryKind::Q22
    } else {
        QueryKind::A19
    };
    if args.query_name.is_some() && kind == QueryKind::A19 {
        return Ok(super::invalid_setting(&ConfigError::new(
            "query_name",
            "--query-name",
            "a QRY^A19 asks for an id only: give --query-kind q22 with --query-name".into(),
        )));
    }
    if config.framing == SendFraming::None {
        return Ok(super::invalid_setting(&ConfigError::new(
            "framing",
            "--framing",
            "--query is sent with MLLP framing only: leave --framing at mllp".into(),
        )));
    }
    let spec = QuerySpec {
        kind,
        id: id.to_owned(),
        family: args.query_name.clone(),
    };
    let now = crate::sender::simulator::hl7_now();
    let control_id = format!("Q-{now}-{}", std::process::id());
    let bytes = crate::sender::query::build(&spec, &control_id, &now);
    let outgoing = Outgoing::from_bytes(bytes, "query".into());
    let runtime = super::runtime()?;
    let answer = runtime.block_on(async {
        Session::new(&args.to, tls)
            .send(&outgoing, config.ack_timeout)
            .await
    });
    let answer = match answer {
        Ok(answer) => answer,
        Err(why) => {
            eprintln!(
                "hl7-ihp: no answer from {}: {why}",
                crate::terminal::escape(&args.to)
            );
            return Ok(ExitCode::from(1));
        }
    };
    let Some(read) = QueryAnswer::read(&answer.bytes) else {
        eprintln!("hl7-ihp: the answer is not an HL7 message");
        return Ok(ExitCode::from(1));
    };
    println!("{}", read.headline());
    if !answer.text.is_empty() {
        println!("  {}", crate::terminal::escape(&answer.text));
    }
    for patient in &read.patients {
        println!("{patient}");
    }
    Ok(if read.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The name to check the receiver's certificate against: `--tls-server-name`, else the
/// host of `--to` (an IP address is checked against the certificate's IP SANs).
pub(super) fn server_name(tls: &SendTls, to: &str) -> Result<ServerName<'static>, ConfigError> {
    let name = tls.server_name.as_deref().unwrap_or_else(|| host_of(to));
    ServerName::try_from(name.to_owned()).map_err(|_| {
        ConfigError::new(
            "tls_server_name",
            "--tls-server-name",
            format!(
                "the host of --to, {}, is not a DNS name or an IP address: give a name",
                crate::terminal::escape(host_of(to))
            ),
        )
    })
}

/// The host of `host:port` or `[v6]:port`, without the brackets.
fn host_of(to: &str) -> &str {
    let host = to.rsplit_once(':').map_or(to, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn print_summary(summary: &Summary) {
    println!(
        "sent {} · acknowledged {} · negative {} · errors {} · retransmitted {} · unacknowledged {}",
        summary.sent,
        summary.acknowledged,
        summary.negative,
        summary.errors,
        summary.retransmitted,
        summary.unacknowledged
    );
    println!(
        "{} connection(s), {:.1} s, {:.0} msg/s, ACK latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        summary.connections,
        summary.seconds,
        summary.messages_per_second,
        summary.latency_ms.p50,
        summary.latency_ms.p90,
        summary.latency_ms.p99,
        summary.latency_ms.max
    );
}

/// Reads `--file` arguments: files, or folders of files (sorted). A file may hold one
/// message, a batch, or MLLP-framed messages; CR or LF. Only files that look like HL7 are
/// sent (a folder of samples has its README too); the others are named on standard error.
pub fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for entry in entries {
                read_one(&entry, &mut out, &mut skipped)?;
            }
        } else {
            read_one(path, &mut out, &mut skipped)?;
        }
    }
    if !skipped.is_empty() {
        let names: Vec<_> = skipped
            .iter()
            .map(|name| crate::terminal::cell(name, crate::terminal::NAME_WIDTH))
            .collect();
        eprintln!(
            "hl7-ihp: skipped {} file{} that {} not HL7: {}",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" },
            if skipped.len() == 1 { "is" } else { "are" },
            names.join(", ")
        );
    }
    anyhow::ensure!(!out.is_empty(), "no HL7 messages in the given files");
    Ok(out)
}

/// True when a file holds HL7: MLLP-framed (`0x0B` first), or a message or batch header
/// (`MSH`, `FHS`, `BHS` and a field separator, which is punctuation) after an optional UTF-8
/// byte order mark and white space, as the parser reads them.
fn looks_like_hl7(bytes: &[u8]) -> bool {
    let start = |bytes: &[u8]| bytes.iter().position(|b| !b.is_ascii_whitespace());
    if start(bytes).is_some_and(|at| bytes[at] == hl7::mllp::START_BLOCK) {
        return true;
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    start(text).is_some_and(|at| {
        let head = &text[at..];
        [b"MSH", b"FHS", b"BHS"]
            .iter()
            .any(|id| head.starts_with(*id))
            && head.get(3).is_some_and(u8::is_ascii_punctuation)
    })
}

fn read_one(
    path: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
    skipped: &mut Vec<String>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !looks_like_hl7(&bytes) {
        skipped.push(name);
        return Ok(());
    }
    for payload in super::parse::payloads(&bytes) {
        out.push((name.clone(), payload));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_to() {
        assert_eq!(host_of("127.0.0.1:2575"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2575"), "::1");
        assert_eq!(host_of("hl7.example:2575"), "hl7.example");
        assert_eq!(host_of("hl7.example"), "hl7.example");
    }

    #[test]
    fn hl7_files_are_told_from_others() {
        for hl7 in [
            &b"MSH|^~\\&|A"[..],
            b"\xEF\xBB\xBFMSH|^~\\&|A",
            b"\xEF\xBB\xBF\r\n  FHS|^~\\&",
            b"BHS|^~\\&",
            b"\n\x0BMSH|^~\\&|A\x1C\r",
        ] {
            assert!(looks_like_hl7(hl7), "{hl7:?}");
        }
        for other in [
            &b"# Samples\n"[..],
            b"",
            b"   ",
            b"msh|^~\\&|A",
            b"MS",
            b"The MSH segment",
            b"MSH is how a message starts",
            b"MSH",
            b"\xEF\xBB\xBF# MSH",
        ] {
            assert!(!looks_like_hl7(other), "{other:?}");
        }
    }
}
