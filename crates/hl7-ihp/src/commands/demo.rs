//! `hl7-ihp demo`: a receiver and bedside monitors in one process, with a live table of each
//! patient's latest vitals: the first thing a newcomer runs.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::config::{DemoConfig, ReceiveConfig};
use crate::datadir::{self, DataDir};
use crate::documents::vitals::VITALS;
use crate::sender::link;
use crate::sender::load::{Plan, Totals};
use crate::sender::simulator::{Scenario, Source};
use crate::server;
use crate::shutdown::Shutdown;
use crate::store::{self, PatientSummary, StoreRead};
use crate::terminal;

/// Runs the demo until Ctrl+C.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let demo_config = match DemoConfig::from_flags(&args.settings) {
        Ok(config) => config,
        Err(error) => return Ok(super::invalid_setting(&error)),
    };
    let data_dir = match &demo_config.data_dir {
        Some(dir) => dir.clone(),
        None => fresh_temp_dir()?,
    };
    let _cleanup = RemoveUnlessStored(demo_config.data_dir.is_none().then(|| data_dir.clone()));
    let config = match demo_config.receive_config(&data_dir) {
        Ok(config) => config,
        Err(error) => return Ok(super::invalid_setting(&error)),
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
        demo_config.interval,
    ));
    drop(runtime);
    drop(locked);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's own temporary folder, removed at the end if it holds no database: a demo
/// that could not start (its port taken, a bad flag) leaves nothing behind, and one that
/// stored anything keeps its data. Before the database exists the folder holds only what
/// the start made (the lock file, an empty `patients/`).
struct RemoveUnlessStored(Option<PathBuf>);

impl Drop for RemoveUnlessStored {
    fn drop(&mut self) {
        if let Some(dir) = &self.0
            && !dir.join(crate::store::SQLITE_FILE_NAME).exists()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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
    let listeners = server::bind(&config).await?;
    let mllp_address = listeners
        .mllp_addr()
        .context("the demo's MLLP listener has no address")?;
    let http_address = listeners.http_addr();
    // The monitors stop first, then the receiver, each through its own shutdown; Ctrl+C or
    // SIGTERM starts both.
    let (stop_monitors, monitors_stop) = Shutdown::new();
    let (stop_receiver, receiver_stop) = Shutdown::new();
    // Created (and migrated) before the receiver opens it, so that the read-only store
    // below finds the schema; the demo only reads.
    let location = &config.store.location;
    drop(store::open(location, &config.store.options).context("creating the store")?);
    let reader = store::open_read_only(location).context("opening the store to read it")?;
    let mut receiver = tokio::spawn(async move {
        server::run(config, &locked, listeners, receiver_stop.into_requested()).await
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
            tls: None,
            bare: false,
            alarm_every: 0,
            values: Default::default(),
        };
        let source = Source::new(Scenario::Vitals { patients }, &run_id, index, patients);
        monitors.spawn(link::connection(
            plan,
            source,
            Arc::clone(&totals),
            monitors_stop.clone(),
        ));
    }

    println!("hl7-ihp demo: {patients} bedside monitors sending IHE PCD-01 vitals to the receiver");
    println!(
        "  MLLP          {mllp_address}   (point your own devices here: hl7-ihp send --to {mllp_address})"
    );
    if let Some(address) = http_address {
        println!(
            "  dashboard     http://{address}/   (open it in a browser: the ward's live vitals)"
        );
        println!(
            "  API           http://{address}/api/v1/patients   (docs: http://{address}/api/v1/openapi.json)"
        );
        println!("  metrics       http://{address}/metrics  http://{address}/healthz");
    }
    println!("  JSON files    {}", patients_dir.display());
    println!(
        "  data          {}   (hl7-ihp patients --data-dir {})",
        data_dir.display(),
        data_dir.display()
    );
    println!("Ctrl+C stops both.\n");
    // One signal future for the whole loop: a Ctrl+C that arrives while the table is being
    // drawn is kept, not lost between two `select!`s.
    let (_trigger, signals) = Shutdown::on_signals();
    let shutdown = signals.into_requested();
    tokio::pin!(shutdown);
    let terminal = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut lines_drawn = 0usize;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ended = &mut receiver => {
                stop_monitors.trigger();
                return match ended {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the receiver stopped unexpectedly")),
                    Ok(Err(error)) => Err(anyhow::Error::new(error).context("the receiver failed")),
                    Err(error) => Err(anyhow::Error::new(error).context("the receiver task failed")),
                };
            }
            _ = ticker.tick() => {
                lines_drawn = draw(reader.as_ref(), &totals, terminal, lines_drawn).await;
            }
        }
    }
    stop_monitors.trigger();
    while monitors.join_next().await.is_some() {}
    // Once more now that the monitors have stopped and every message they sent is answered:
    // the last table shows the final counts, not those of up to a second before.
    draw(reader.as_ref(), &totals, terminal, lines_drawn).await;
    println!("\nmonitors stopped; stopping the receiver (it finishes the messages in hand)");
    stop_receiver.trigger();
    receiver.await.context("the receiver task failed")??;
    println!("stopped; the data stays in {}", data_dir.display());
    Ok(())
}

/// Prints the table, over the previous one (`lines_drawn` lines) on a terminal; returns
/// how many lines it drew.
async fn draw(
    reader: &dyn StoreRead,
    totals: &Totals,
    terminal: bool,
    lines_drawn: usize,
) -> usize {
    let table = render_table(reader, totals).await;
    let mut out = std::io::stdout().lock();
    if terminal && lines_drawn > 0 {
        // To the start of the line (after a `^C` the terminal echoed), up, and clear.
        let _ = write!(out, "\r\x1b[{lines_drawn}A\x1b[J");
    }
    let _ = out.write_all(table.as_bytes());
    let _ = out.flush();
    table.lines().count()
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
        // Any device may send to the demo's port: its text is escaped and cut to the columns.
        out.push_str(&format!(
            "{:<10} {:<22}",
            terminal::cell(&patient.key, 10),
            terminal::cell(&patient.name, 22)
        ));
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
                    format!("{}{flag}", terminal::cell(&row.observation.value, 5))
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
