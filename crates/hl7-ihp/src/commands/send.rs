//! `hl7-ihp send`: reads the command line, runs the simulator or the load generator of
//! `sender`, and prints the summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::SendArgs;
use crate::config::{ScenarioKind, SendConfig};
use crate::sender::load::{self, Plan, Summary};
use crate::sender::simulator::Scenario;

/// Runs `hl7-ihp send`.
pub fn run(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let config = match SendConfig::from_flags(&args.settings) {
        Ok(config) => config,
        Err(error) => return Ok(super::invalid_setting(&error)),
    };
    let scenario = if !args.file.is_empty() {
        Scenario::Files(read_files(&args.file)?)
    } else {
        match config.scenario {
            ScenarioKind::Seed => Scenario::Seed {
                verbatim: args.verbatim,
            },
            ScenarioKind::Vitals => Scenario::Vitals {
                patients: args.patients.max(1),
            },
        }
    };
    let SendConfig {
        interval,
        rate,
        duration,
        ack_timeout,
        retry_for,
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
    } else if load || summary.sent > 0 {
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

/// Reads `--file` arguments: files, or folders of `.hl7` files (sorted). A file may hold one
/// message, a batch, or MLLP-framed messages; CR or LF.
pub fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
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
                read_one(&entry, &mut out)?;
            }
        } else {
            read_one(path, &mut out)?;
        }
    }
    anyhow::ensure!(!out.is_empty(), "no messages in the given files");
    Ok(out)
}

fn read_one(path: &Path, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for payload in super::parse::payloads(&bytes) {
        out.push((name.clone(), payload));
    }
    Ok(())
}
