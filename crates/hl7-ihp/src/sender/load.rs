//! The load generator: many connections of `link`, a shared tally, a progress line, and the
//! summary with ACK latency percentiles.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

use super::link::connection;
use super::simulator::{Scenario, Source};

/// Latencies kept for percentiles; beyond this the summary uses what was kept.
pub const MAX_LATENCY_SAMPLES: usize = 20_000_000;

/// Counters shared by all connections.
#[derive(Debug, Default)]
pub struct Totals {
    /// Messages sent (retransmissions not counted).
    pub sent: AtomicU64,
    /// Answered AA/CA (or sent when no ACK was asked for).
    pub accepted: AtomicU64,
    /// Answered AE/AR/CE/CR.
    pub negative: AtomicU64,
    /// Connection failures, timeouts and unreadable answers.
    pub errors: AtomicU64,
    /// Messages sent again after a failure.
    pub retransmitted: AtomicU64,
    /// Messages given up on after `retry_for`.
    pub unacknowledged: AtomicU64,
    /// When a connection problem was last reported on standard error.
    reported_at: Mutex<Option<Instant>>,
}

/// How often a lasting connection problem is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(10);

impl Totals {
    /// True for the first problem of a run, then at most once every [`REPORT_EVERY`] over all
    /// connections: a receiver that is down is said once, not by 64 connections 20 times.
    pub fn time_to_report(&self) -> bool {
        let mut reported_at = self
            .reported_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if reported_at.is_some_and(|at| now.duration_since(at) < REPORT_EVERY) {
            return false;
        }
        *reported_at = Some(now);
        true
    }
}

/// How one connection runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `host:port` of the receiver.
    pub to: String,
    /// Wait this long for an ACK.
    pub ack_timeout: Duration,
    /// Give a message up after retrying this long.
    pub retry_for: Duration,
    /// Pause between messages of one connection (simulator mode, or load mode with a rate).
    pub period: Option<Duration>,
    /// Messages this connection sends; `None`: until the deadline or stop.
    pub count: Option<u64>,
    /// Stop at this moment.
    pub deadline: Option<Instant>,
    /// Print a line per message.
    pub verbose: bool,
    /// Connect over TLS with this; `None`: plain MLLP.
    pub tls: Option<super::link::TlsClient>,
    /// Write bare HL7 and read bare ACKs (`--framing none`), as some monitors do.
    pub bare: bool,
    /// `--alarm`: every this many messages of a vitals connection is an `ORU^R40`; 0: none.
    pub alarm_every: u64,
    /// `--demo`, `--placeholders`: how the messages' values are rewritten.
    pub values: super::values::ValueFlags,
}

/// What a run sent and measured.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// connections.
    pub connections: usize,
    /// sent.
    pub sent: u64,
    /// acknowledged.
    pub acknowledged: u64,
    /// negative.
    pub negative: u64,
    /// errors.
    pub errors: u64,
    /// retransmitted.
    pub retransmitted: u64,
    /// unacknowledged.
    pub unacknowledged: u64,
    /// seconds.
    pub seconds: f64,
    /// messages per second.
    pub messages_per_second: f64,
    /// latency ms.
    pub latency_ms: Latency,
}

/// ACK latency percentiles in milliseconds.
#[derive(Debug, Default, serde::Serialize)]
pub struct Latency {
    /// p50.
    pub p50: f64,
    /// p90.
    pub p90: f64,
    /// p99.
    pub p99: f64,
    /// max.
    pub max: f64,
}

pub async fn run_connections(
    scenario: Scenario,
    plan: Plan,
    connections: usize,
    count: Option<u64>,
    load: bool,
    json: bool,
) -> Result<Summary, tokio::task::JoinError> {
    let totals = Arc::new(Totals::default());
    // Installed before the first message: a Ctrl+C or SIGTERM at any moment stops the
    // sending and still prints the summary.
    let (_trigger, stop) = Shutdown::on_signals();
    let run_id = crate::ids::run_id();
    let started = Instant::now();
    let progress = (load && !json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let ticker = progress.clone().map(|bar| {
        let totals = Arc::clone(&totals);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let elapsed = started.elapsed().as_secs_f64().max(0.001);
                let accepted = totals.accepted.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "sent {} acknowledged {} negative {} errors {} ({:.0} msg/s)",
                    totals.sent.load(Ordering::Relaxed),
                    accepted,
                    totals.negative.load(Ordering::Relaxed),
                    totals.errors.load(Ordering::Relaxed),
                    accepted as f64 / elapsed
                ));
                bar.tick();
            }
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..connections {
        let mut plan = plan.clone();
        // Split the count over the connections; the first ones take the remainder.
        plan.count = count
            .map(|n| n / connections as u64 + u64::from((index as u64) < n % connections as u64));
        if plan.count == Some(0) {
            continue;
        }
        let source = Source::new(scenario.clone(), &run_id, index, connections)
            .with_alarms(plan.alarm_every)
            .with_values(plan.values);
        if source.is_empty() {
            continue;
        }
        let totals = Arc::clone(&totals);
        tasks.spawn(connection(plan, source, totals, stop.clone()));
    }
    let mut latencies: Vec<u32> = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let mut own = result?;
        let room = MAX_LATENCY_SAMPLES.saturating_sub(latencies.len());
        own.truncate(room);
        latencies.append(&mut own);
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let accepted = get(&totals.accepted);
    Ok(Summary {
        connections,
        sent: get(&totals.sent),
        acknowledged: accepted,
        negative: get(&totals.negative),
        errors: get(&totals.errors),
        retransmitted: get(&totals.retransmitted),
        unacknowledged: get(&totals.unacknowledged),
        seconds,
        messages_per_second: if seconds > 0.0 {
            accepted as f64 / seconds
        } else {
            0.0
        },
        latency_ms: percentiles(&mut latencies),
    })
}

fn percentiles(latencies: &mut [u32]) -> Latency {
    if latencies.is_empty() {
        return Latency::default();
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies[index.min(latencies.len() - 1)]) / 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}
