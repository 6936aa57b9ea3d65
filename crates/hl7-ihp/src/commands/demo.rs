//! `hl7-ihp demo`: a receiver and bedside monitors in one process, with a live table of each
//! patient's latest vitals: the first thing a newcomer runs.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::config::{ReceiveArgs, ReceiveConfig, parse_duration};
use crate::datadir::{self, DataDir};
use crate::documents::vitals::VITALS;
use crate::sender::link;
use crate::sender::load::{Plan, Totals};
use crate::sender::simulator::{Scenario, Source};
use crate::server;
use crate::store::{self, PatientSummary, StoreLocation, StoreOptions, StoreRead};

/// Runs the demo until Ctrl+C.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => fresh_temp_dir()?,
    };
    let Some(interval) = parse_duration(&args.interval).filter(|d| !d.is_zero()) else {
        eprintln!(
            "hl7-ihp: invalid --interval `{}` (e.g. 1s, 500ms)",
            args.interval
        );
        return Ok(ExitCode::from(2));
    };
    let receive_args = ReceiveArgs {
        listen: Some(args.listen.clone()),
        http: Some(args.http.clone()),
        data_dir: Some(data_dir.clone()),
        ..ReceiveArgs::default()
    };
    let config = match ReceiveConfig::from_args(&receive_args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    // Locked before binding and released after the runtime, as `receive` does.
    let locked = match datadir::prepare(&data_dir) {
        Ok(locked) => Arc::new(locked),
        Err(error) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = super::runtime()?;
    let result = runtime.block_on(demo(
        config,
        Arc::clone(&locked),
        args.patients.max(1),
        interval,
    ));
    drop(runtime);
    drop(locked);
    result?;
    Ok(ExitCode::SUCCESS)
}

fn fresh_temp_dir() -> anyhow::Result<PathBuf> {
    let name = format!(
        "hl7-ihp-demo-{}-{}",
        std::process::id(),
        crate::ids::run_id()
    );
    let dir = std::env::temp_dir().join(name);
    // Owner-only from the start, as a data directory must be (it holds patient data, if
    // simulated ones).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn demo(
    config: ReceiveConfig,
    locked: Arc<DataDir>,
    patients: usize,
    interval: Duration,
) -> anyhow::Result<()> {
    let data_dir = locked.path().to_path_buf();
    let patients_dir = locked.patients_dir().to_path_buf();
    let (mllp, http) = server::bind(&config).await?;
    let mllp_address = mllp.local_addr()?;
    let http_address = http.as_ref().map(|l| l.local_addr()).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_receiver_tx, mut stop_receiver_rx) = tokio::sync::watch::channel(false);
    // Created (and migrated) before the receiver opens it, so that the read-only store
    // below finds the schema; the demo only reads.
    let location = StoreLocation::in_data_dir(&data_dir);
    drop(store::open(&location, &StoreOptions::default()).context("creating the store")?);
    let reader = store::open_read_only(&location).context("opening the store to read it")?;
    let mut receiver = tokio::spawn(async move {
        let stop = async move {
            let _ = stop_receiver_rx.wait_for(|stop| *stop).await;
        };
        server::run(config, &locked, mllp, http, stop).await
    });

    // One connection per monitor, as bedside monitors connect.
    let totals = Arc::new(Totals::default());
    let run_id = crate::ids::run_id();
    let mut monitors = tokio::task::JoinSet::new();
    for index in 0..patients {
        let plan = Plan {
            to: mllp_address.to_string(),
            ack_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(60),
            period: Some(interval),
            count: None,
            deadline: None,
            verbose: false,
        };
        let source = Source::new(Scenario::Vitals { patients }, &run_id, index, patients);
        monitors.spawn(link::connection(
            plan,
            source,
            Arc::clone(&totals),
            Arc::clone(&stop),
        ));
    }

    println!("hl7-ihp demo: {patients} bedside monitors sending IHE PCD-01 vitals to the receiver");
    println!(
        "  MLLP          {mllp_address}   (point your own devices here: hl7-ihp send --to {mllp_address})"
    );
    if let Some(address) = http_address {
        println!("  HTTP          http://{address}/metrics  http://{address}/healthz");
    }
    println!("  JSON files    {}", patients_dir.display());
    println!(
        "  data          {}   (hl7-ihp patients --data-dir {})",
        data_dir.display(),
        data_dir.display()
    );
    println!("Ctrl+C stops both.\n");
    let terminal = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut lines_drawn = 0usize;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ended = &mut receiver => {
                stop.store(true, Ordering::Relaxed);
                return match ended {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the receiver stopped unexpectedly")),
                    Ok(Err(error)) => Err(anyhow::Error::new(error).context("the receiver failed")),
                    Err(error) => Err(anyhow::Error::new(error).context("the receiver task failed")),
                };
            }
            _ = ticker.tick() => {
                let table = render_table(reader.as_ref(), &totals).await;
                let mut out = std::io::stdout().lock();
                if terminal && lines_drawn > 0 {
                    // Move up and redraw in place.
                    let _ = write!(out, "\x1b[{lines_drawn}A\x1b[J");
                }
                let _ = out.write_all(table.as_bytes());
                let _ = out.flush();
                lines_drawn = table.lines().count();
            }
        }
    }
    println!("\nstopping: monitors first, then the receiver (it finishes the messages in hand)");
    stop.store(true, Ordering::Relaxed);
    while monitors.join_next().await.is_some() {}
    let _ = stop_receiver_tx.send(true);
    receiver.await.context("the receiver task failed")??;
    println!("stopped; the data stays in {}", data_dir.display());
    Ok(())
}

async fn render_table(reader: &dyn StoreRead, totals: &Totals) -> String {
    let mut out = String::new();
    let patients: Vec<PatientSummary> = reader.patients().await.unwrap_or_default();
    out.push_str(&format!("{:<10} {:<22}", "PATIENT", "NAME"));
    for vital in &VITALS {
        let title = vital.title;
        out.push_str(&format!(" {title:>6}"));
    }
    out.push_str("  OBSERVATIONS\n");
    for patient in &patients {
        let latest = reader
            .patient_records(&patient.key, Some(VITALS.len() * 2))
            .await
            .ok()
            .flatten();
        let name: String = patient.name.chars().take(22).collect();
        out.push_str(&format!("{:<10} {:<22}", patient.key, name));
        for vital in &VITALS {
            let cell = latest
                .as_ref()
                .and_then(|r| {
                    r.records
                        .iter()
                        .find(|row| row.observation.code == vital.code)
                })
                .map(|row| {
                    let flag = match row.observation.abnormal_flags.as_str() {
                        "H" | "HH" => "↑",
                        "L" | "LL" => "↓",
                        _ => " ",
                    };
                    format!("{}{flag}", row.observation.value)
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(" {cell:>6}"));
        }
        out.push_str(&format!("  {}\n", patient.n_observations));
    }
    out.push_str(&format!(
        "messages sent {} · acknowledged {} · negative {} · errors {}\n",
        totals.sent.load(Ordering::Relaxed),
        totals.accepted.load(Ordering::Relaxed),
        totals.negative.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed)
    ));
    out
}
