//! `send --serve ADDR`: the simulator plays a device that serves (GE-style): it listens, and
//! pushes its messages to whoever connects, one at a time, each after the previous one's
//! ACK, at `--interval`. A receiver that goes away is waited for again; the message that was
//! not acknowledged is sent again, byte for byte, to the next one (at-least-once, as a
//! device does). It stops after `--count` acknowledged messages or on Ctrl+C/SIGTERM.
//!
//! Its first line on standard output is `serving on ADDR` (the bound address, for port 0);
//! then one line per answered message, as `send` prints them.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hl7::ack::{AckCode, Outcome};
use hl7::bare::BareCodec;
use hl7::mllp::{MllpCodec, MllpItem};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::simulator::{Outgoing, Scenario, Source};
use crate::shutdown::Shutdown;
use crate::terminal;

/// How long a bare ACK's bytes must have stopped coming before it is taken as whole.
const BARE_ACK_GAP: Duration = Duration::from_millis(100);
/// Time a receiver has for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the serving device does.
#[derive(Clone)]
pub struct ServePlan {
    /// Pause between two messages on a connection.
    pub period: Option<Duration>,
    /// Stop after this many answered messages.
    pub count: Option<u64>,
    /// How long to wait for an ACK before dropping the connection.
    pub ack_timeout: Duration,
    /// Bare HL7 instead of MLLP.
    pub bare: bool,
    /// Serve over TLS with this configuration (`--tls` with `--tls-cert`/`--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a serving run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ServeSummary {
    /// Receivers that connected.
    pub connections: u64,
    /// Messages written (retransmissions included).
    pub sent: u64,
    /// Messages answered AA/CA (or that asked for no ACK).
    pub acknowledged: u64,
    /// Messages answered AE/AR/CE/CR.
    pub negative: u64,
    /// Messages written again to a new receiver after the last one went away.
    pub retransmitted: u64,
}

/// Serves until `count` answers or shutdown.
pub async fn run(listener: TcpListener, scenario: Scenario, plan: ServePlan) -> ServeSummary {
    let (_trigger, stop) = Shutdown::on_signals();
    let run_id = crate::ids::run_id();
    let mut source = Source::new(scenario, &run_id, 0, 1);
    let mut device = Device {
        pending: None,
        summary: ServeSummary::default(),
        plan: plan.clone(),
    };
    let acceptor = plan.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        if device.done() || stop.is_requested() {
            break;
        }
        let accepted = tokio::select! {
            _ = stop.clone().into_requested() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("hl7-ihp: accepting failed: {error}");
                // EMFILE and its kin: not a busy loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        device.summary.connections += 1;
        eprintln!("hl7-ihp: a receiver connected from {from}");
        let why = match &acceptor {
            None => device.serve(stream, &mut source, &stop).await,
            Some(acceptor) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => device.serve(stream, &mut source, &stop).await,
                    Ok(Err(error)) => format!("TLS: {}", crate::tls::handshake_failure(&error)),
                    Err(_) => "TLS handshake timed out".to_owned(),
                }
            }
        };
        eprintln!("hl7-ihp: the receiver from {from} is gone ({why}); waiting for the next");
    }
    device.summary
}

/// The serving device's state across connections.
struct Device {
    /// The message written but not answered when the last receiver went away.
    pending: Option<Outgoing>,
    summary: ServeSummary,
    plan: ServePlan,
}

impl Device {
    fn done(&self) -> bool {
        self.plan
            .count
            .is_some_and(|count| self.summary.acknowledged + self.summary.negative >= count)
    }

    /// Pushes messages to one receiver until it goes away (the reason is returned), the
    /// count is reached or shutdown is asked for.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        source: &mut Source,
        stop: &Shutdown,
    ) -> String {
        let mut buffer = BytesMut::with_capacity(4096);
        let mut mllp = MllpCodec::new();
        let mut bare = BareCodec::default();
        let mut next_at = Instant::now();
        loop {
            if self.done() {
                return "count reached".into();
            }
            if stop.is_requested() {
                return "shutdown".into();
            }
            // The pause between messages: a receiver that closes meanwhile is noticed.
            if next_at > Instant::now() {
                buffer.reserve(1024);
                tokio::select! {
                    () = tokio::time::sleep_until(next_at) => {}
                    _ = stop.clone().into_requested() => return "shutdown".into(),
                    read = stream.read_buf(&mut buffer) => match read {
                        Ok(0) => return "closed".into(),
                        Err(error) => return error.to_string(),
                        // Something unasked for: dropped.
                        Ok(_) => buffer.clear(),
                    },
                }
                continue;
            }
            next_at = Instant::now() + self.plan.period.unwrap_or(Duration::ZERO);
            let (message, again) = match self.pending.take() {
                Some(message) => (message, true),
                None => (source.next_message(), false),
            };
            let framed = if self.plan.bare {
                message.bytes.clone()
            } else {
                hl7::mllp::frame(&message.bytes)
            };
            let deadline = Instant::now() + self.plan.ack_timeout;
            let written = tokio::time::timeout_at(deadline, async {
                stream.write_all(&framed).await?;
                stream.flush().await
            })
            .await;
            self.summary.sent += 1;
            if again {
                self.summary.retransmitted += 1;
            }
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.pending = Some(message);
                    return error.to_string();
                }
                Err(_) => {
                    self.pending = Some(message);
                    return "could not write in time".into();
                }
            }
            let code = if message.expects_ack {
                match read_ack(
                    &mut stream,
                    &mut buffer,
                    &mut mllp,
                    &mut bare,
                    self.plan.bare,
                    &message,
                    deadline,
                )
                .await
                {
                    Ok(code) => Some(code),
                    Err(why) => {
                        self.pending = Some(message);
                        return why;
                    }
                }
            } else {
                None
            };
            let text = match code {
                None => {
                    self.summary.acknowledged += 1;
                    "no ACK asked for"
                }
                Some(code) if code.outcome() == Outcome::Accept => {
                    self.summary.acknowledged += 1;
                    code.as_str()
                }
                Some(code) => {
                    self.summary.negative += 1;
                    code.as_str()
                }
            };
            println!(
                "{} {} {}",
                terminal::cell(&message.control_id, terminal::ID_WIDTH),
                terminal::cell(&message.label, terminal::NAME_WIDTH),
                text
            );
        }
    }
}

/// Reads the ACK of `message` (MSA-2 its control id; answers to others are skipped).
async fn read_ack<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    mllp: &mut MllpCodec,
    bare: &mut BareCodec,
    is_bare: bool,
    message: &Outgoing,
    deadline: Instant,
) -> Result<AckCode, String> {
    let mut quiet = false;
    loop {
        let decoded = if !is_bare {
            mllp.decode(buffer)
        } else if std::mem::take(&mut quiet) {
            Ok(bare.end_by_gap(buffer))
        } else {
            bare.decode(buffer)
        };
        match decoded {
            Ok(Some(MllpItem::Frame(frame))) => {
                let Ok(ack) = hl7::parse(&frame) else {
                    return Err("an unreadable answer".into());
                };
                if ack.get("MSA-2").unwrap_or_default() != message.control_id.as_bytes() {
                    continue;
                }
                return ack
                    .get("MSA-1")
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(AckCode::parse)
                    .ok_or_else(|| "an ACK without a valid MSA-1".to_owned());
            }
            Ok(Some(MllpItem::Oversized { .. })) | Err(_) => {
                return Err("a malformed answer".into());
            }
            Ok(None) => {}
        }
        buffer.reserve(4096);
        let in_ack = is_bare && bare.in_frame();
        let until = if in_ack {
            deadline.min(Instant::now() + BARE_ACK_GAP)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, stream.read_buf(buffer)).await {
            Err(_) if in_ack && until < deadline => quiet = true,
            Err(_) => return Err("no ACK in time".into()),
            Ok(Ok(0)) => return Err("closed before the ACK".into()),
            Ok(Err(error)) => return Err(error.to_string()),
            Ok(Ok(_)) => {}
        }
    }
}
