//! `hl7-ihp send`: the device simulator and the load generator.
//!
//! Every message waits for its ACK (when its MSH-15/16 ask for one) with a timeout, and MSA-2
//! is checked against MSH-10. A lost connection is reopened with back-off and what was not
//! acknowledged is sent again byte for byte: at-least-once, as a real device does. One
//! message is in flight per connection.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use hl7::ack::{AckCode, Outcome};
use hl7::mllp::{MllpCodec, MllpItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::cli::SendArgs;
use crate::config::parse_duration;
use crate::simulator::{self, Outgoing, Scenario, Source};

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Latencies kept for percentiles; beyond this the summary uses what was kept.
const MAX_LATENCY_SAMPLES: usize = 20_000_000;

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
}

/// What `send` decided and measured.
#[derive(Debug, serde::Serialize)]
struct Summary {
    connections: usize,
    sent: u64,
    acknowledged: u64,
    negative: u64,
    errors: u64,
    retransmitted: u64,
    unacknowledged: u64,
    seconds: f64,
    messages_per_second: f64,
    latency_ms: Latency,
}

#[derive(Debug, Default, serde::Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Runs `hl7-ihp send`.
pub fn run(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let scenario = if !args.file.is_empty() {
        Scenario::Files(simulator::read_files(&args.file)?)
    } else {
        match args.scenario.as_str() {
            "seed" => Scenario::Seed {
                verbatim: args.verbatim,
            },
            "vitals" => Scenario::Vitals {
                patients: args.patients.max(1),
            },
            other => {
                eprintln!("hl7-ihp: unknown scenario `{other}` (expected seed or vitals)");
                return Ok(ExitCode::from(2));
            }
        }
    };
    let parse = |name: &str, value: &Option<String>| -> Result<Option<Duration>, String> {
        value
            .as_deref()
            .map(|v| {
                parse_duration(v)
                    .ok_or_else(|| format!("invalid --{name} `{v}` (e.g. 1s, 100ms, 0ms)"))
            })
            .transpose()
    };
    let (interval, duration, ack_timeout, retry_for) = match (
        parse("interval", &args.interval),
        parse("duration", &args.duration),
        parse("ack-timeout", &Some(args.ack_timeout.clone())),
        parse("retry-for", &Some(args.retry_for.clone())),
    ) {
        (Ok(i), Ok(d), Ok(Some(a)), Ok(Some(r))) => (i, d, a, r),
        (i, d, a, r) => {
            for error in [i.err(), d.err(), a.err(), r.err()].into_iter().flatten() {
                eprintln!("hl7-ihp: {error}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let load = args.connections.is_some();
    let connections = args.connections.unwrap_or(1).max(1);
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        eprintln!("hl7-ihp: --rate must be a positive number of messages a second");
        return Ok(ExitCode::from(2));
    }
    // Simulator mode: one a second by default. Load mode: as fast as possible, or the rate.
    let period = match (load, args.rate, interval) {
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
    let runtime = crate::runtime()?;
    let summary = runtime.block_on(run_connections(
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

async fn run_connections(
    scenario: Scenario,
    plan: Plan,
    connections: usize,
    count: Option<u64>,
    load: bool,
    json: bool,
) -> anyhow::Result<Summary> {
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
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
        let source = Source::new(scenario.clone(), &run_id, index, connections);
        if source.is_empty() {
            continue;
        }
        let totals = Arc::clone(&totals);
        let stop = Arc::clone(&stop);
        tasks.spawn(connection(plan, source, totals, stop));
    }
    let mut latencies: Vec<u32> = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let mut own = result.context("a connection task failed")?;
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

/// What became of one attempt to deliver a message.
enum Delivery {
    /// An ACK arrived (or none was asked for).
    Answered(Option<AckCode>),
    /// The connection failed or the ACK did not come: send again on a new connection.
    Retry(&'static str),
}

/// One connection's loop: returns its ACK latencies in microseconds.
pub async fn connection(
    plan: Plan,
    mut source: Source,
    totals: Arc<Totals>,
    stop: Arc<AtomicBool>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut stream: Option<Link> = None;
    let mut sent = 0u64;
    let mut next_at = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        if stop.load(Ordering::Relaxed)
            || plan.count.is_some_and(|count| sent >= count)
            || plan
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
        {
            break;
        }
        if let Some(period) = plan.period {
            let now = Instant::now();
            if next_at > now {
                tokio::time::sleep(next_at - now).await;
            }
            // A fixed schedule: a late message does not push every later one back.
            next_at = next_at.max(now - period) + period;
        }
        let message = source.next_message();
        sent += 1;
        let first_try = Instant::now();
        let mut attempts = 0u32;
        let outcome = loop {
            if attempts > 0 {
                if first_try.elapsed() > plan.retry_for || stop.load(Ordering::Relaxed) {
                    break None;
                }
                totals.retransmitted.fetch_add(1, Ordering::Relaxed);
            }
            attempts += 1;
            if stream.is_none() {
                match Link::connect(&plan.to).await {
                    Ok(link) => {
                        stream = Some(link);
                        backoff = Duration::from_millis(50);
                    }
                    Err(_) => {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                        if plan.verbose {
                            eprintln!(
                                "hl7-ihp: cannot connect to {}; retrying in {:?}",
                                plan.to, backoff
                            );
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(link) = stream.as_mut() else {
                unreachable!("connected above or went round again");
            };
            totals
                .sent
                .fetch_add(u64::from(attempts == 1), Ordering::Relaxed);
            let sent_at = Instant::now();
            match link.deliver(&message, plan.ack_timeout).await {
                Delivery::Answered(code) => {
                    if code.is_some() && latencies.len() < MAX_LATENCY_SAMPLES {
                        latencies
                            .push(u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    break Some(code);
                }
                Delivery::Retry(why) => {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    if plan.verbose {
                        eprintln!("hl7-ihp: {} {why}; sending it again", message.control_id);
                    }
                    stream = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let code_text = match outcome {
            None => {
                totals.unacknowledged.fetch_add(1, Ordering::Relaxed);
                "unacknowledged"
            }
            Some(None) => {
                totals.accepted.fetch_add(1, Ordering::Relaxed);
                "no ACK asked for"
            }
            Some(Some(code)) => {
                if code.outcome() == Outcome::Accept {
                    totals.accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    totals.negative.fetch_add(1, Ordering::Relaxed);
                }
                code.as_str()
            }
        };
        if plan.verbose {
            println!("{} {} {}", message.control_id, message.label, code_text);
        }
    }
    latencies
}

/// An open MLLP connection with its read buffer.
struct Link {
    stream: TcpStream,
    codec: MllpCodec,
    buffer: BytesMut,
}

impl Link {
    async fn connect(to: &str) -> std::io::Result<Link> {
        let address: SocketAddr = match to.parse() {
            Ok(address) => address,
            Err(_) => tokio::net::lookup_host(to)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("no address for host"))?,
        };
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            codec: MllpCodec::new(),
            buffer: BytesMut::with_capacity(4096),
        })
    }

    async fn deliver(&mut self, message: &Outgoing, timeout: Duration) -> Delivery {
        let framed = hl7::mllp::frame(&message.bytes);
        if self.stream.write_all(&framed).await.is_err() {
            return Delivery::Retry("could not be written");
        }
        if !message.expects_ack {
            return Delivery::Answered(None);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(MllpItem::Frame(frame))) => {
                    let Ok(ack) = hl7::parse(&frame) else {
                        return Delivery::Retry("got an unreadable answer");
                    };
                    let code = ack
                        .get("MSA-1")
                        .and_then(|c| std::str::from_utf8(c).ok())
                        .and_then(AckCode::parse);
                    let control_id = ack.get("MSA-2").unwrap_or_default();
                    if control_id != message.control_id.as_bytes() {
                        // An answer to something else (a late ACK of a retransmission):
                        // keep waiting for ours.
                        continue;
                    }
                    return match code {
                        Some(code) => Delivery::Answered(Some(code)),
                        None => Delivery::Retry("got an ACK without a valid MSA-1"),
                    };
                }
                Ok(Some(MllpItem::Oversized { .. })) | Err(_) => {
                    return Delivery::Retry("got a malformed answer");
                }
                Ok(None) => {}
            }
            self.buffer.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer)).await {
                Err(_) => return Delivery::Retry("got no ACK in time"),
                Ok(Ok(0)) | Ok(Err(_)) => return Delivery::Retry("lost its connection"),
                Ok(Ok(_)) => {}
            }
        }
    }
}
