//! One sending connection: send a message, wait for its ACK and check MSA-2, reconnect with
//! back-off and retransmit byte for byte what was not acknowledged (at-least-once, as a real
//! device does). One message is in flight per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hl7::ack::{AckCode, Outcome};
use hl7::mllp::{MllpCodec, MllpItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::shutdown::Shutdown;

use super::load::{MAX_LATENCY_SAMPLES, Plan, Totals};
use super::simulator::{Outgoing, Source};
use crate::terminal;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What became of one attempt to deliver a message.
enum Delivery {
    /// An ACK arrived (or none was asked for).
    Answered(Option<AckCode>),
    /// The connection failed or the ACK did not come: send again on a new connection.
    Retry(&'static str),
}

/// Sleeps until `until`, or less when shutdown is asked for first; true when it was.
async fn pause(stop: &Shutdown, until: Instant) -> bool {
    tokio::select! {
        biased;
        _ = stop.clone().into_requested() => true,
        _ = tokio::time::sleep_until(until.into()) => false,
    }
}

/// An I/O error as a lower-case reason: `connection refused (os error 111)`.
fn reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// One connection's loop: returns its ACK latencies in microseconds. Once shutdown is
/// asked for no new message is sent; the one in flight still gets its ACK (or its timeout).
pub async fn connection(
    plan: Plan,
    mut source: Source,
    totals: Arc<Totals>,
    stop: Shutdown,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut stream: Option<Link> = None;
    let mut sent = 0u64;
    let mut next_at = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        if stop.is_requested()
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
                // Ctrl+C or the deadline during the pause ends it, and the checks above run
                // again right before sending: a stopped sender sends nothing more.
                let until = plan
                    .deadline
                    .map_or(next_at, |deadline| deadline.min(next_at));
                pause(&stop, until).await;
                continue;
            }
            // A fixed schedule: a late message does not push every later one back.
            next_at = next_at.max(now - period) + period;
        }
        let message = source.next_message();
        sent += 1;
        let first_try = Instant::now();
        // Back-off pauses end when the message's time is up, so that it is given up
        // after `retry_for`, not after the next (up to 5 s) pause.
        let give_up_at = first_try + plan.retry_for;
        let mut tried = false;
        let mut written = false;
        let outcome = loop {
            if tried && (Instant::now() >= give_up_at || stop.is_requested()) {
                break None;
            }
            tried = true;
            if stream.is_none() {
                let connected = tokio::select! {
                    biased;
                    _ = stop.clone().into_requested() => break None,
                    connected = Link::connect(&plan.to) => connected,
                };
                match connected {
                    Ok(link) => {
                        stream = Some(link);
                        backoff = Duration::from_millis(50);
                    }
                    Err(error) => {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                        // Why, at once and then now and then: not a line per attempt, nor
                        // one per connection in load mode.
                        if totals.time_to_report() {
                            eprintln!(
                                "hl7-ihp: cannot connect to {}: {}; retrying (a message is given up after {:?})",
                                terminal::escape(&plan.to),
                                reason(&error),
                                plan.retry_for
                            );
                        }
                        if pause(&stop, (Instant::now() + backoff).min(give_up_at)).await {
                            break None;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(link) = stream.as_mut() else {
                unreachable!("connected above or went round again");
            };
            // Sent once, retransmitted each time after: a message that waited for a
            // connection was not sent before it.
            let counter = if written {
                &totals.retransmitted
            } else {
                &totals.sent
            };
            counter.fetch_add(1, Ordering::Relaxed);
            written = true;
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
                        eprintln!(
                            "hl7-ihp: {} {why}; sending it again",
                            terminal::cell(&message.control_id, terminal::ID_WIDTH)
                        );
                    }
                    stream = None;
                    if pause(&stop, (Instant::now() + backoff).min(give_up_at)).await {
                        break None;
                    }
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
            // A file's MSH-10 and name are not ours: escaped and cut like table cells.
            println!(
                "{} {} {}",
                terminal::cell(&message.control_id, terminal::ID_WIDTH),
                terminal::cell(&message.label, terminal::NAME_WIDTH),
                code_text
            );
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
