//! One sending connection: send a message, wait for its ACK and check MSA-2, reconnect with
//! back-off and retransmit byte for byte what was not acknowledged (at-least-once, as a real
//! device does). One message is in flight per connection, over plain TCP or TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hl7::ack::{AckCode, Outcome};
use hl7::bare::BareCodec;
use hl7::mllp::{MllpCodec, MllpItem};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;

use crate::shutdown::Shutdown;

use super::load::{MAX_LATENCY_SAMPLES, Plan, Totals};
use super::simulator::{Outgoing, Source};
use crate::terminal;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the TCP connection and the TLS handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `send --tls` connects with: the client configuration, loaded once per run and shared
/// by every connection, and the name the receiver's certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// Connects with `config`, checking the receiver's certificate against `server_name`.
    pub fn new(config: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> TlsClient {
        TlsClient {
            connector: TlsConnector::from(config),
            server_name,
        }
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What became of one attempt to deliver a message.
enum Delivery {
    /// An ACK arrived (or none was asked for).
    Answered(Option<AckCode>),
    /// The connection failed or the ACK did not come: send again on a new connection.
    Retry(&'static str),
    /// The receiver refused the TLS connection after the handshake (with TLS 1.3 a client
    /// certificate is checked then): a connection failure, reported as one, and retried.
    Refused(String),
}

/// Sleeps until `until`, or less when shutdown is asked for first; true when it was.
async fn pause(stop: &Shutdown, until: Instant) -> bool {
    tokio::select! {
        biased;
        _ = stop.clone().into_requested() => true,
        _ = tokio::time::sleep_until(until.into()) => false,
    }
}

/// Reports a connection problem: at once and then now and then, not a line per attempt, nor
/// one per connection in load mode.
fn report(totals: &Totals, plan: &Plan, why: &str) {
    if totals.time_to_report() {
        eprintln!(
            "hl7-ihp: cannot connect to {}: {why}; retrying (a message is given up after {:?})",
            terminal::escape(&plan.to),
            plan.retry_for
        );
    }
}

/// An I/O error as a lower-case reason: `connection refused (os error 111)`, or what went
/// wrong with TLS in a few words.
fn reason(error: &std::io::Error, tls: Option<&TlsClient>) -> String {
    if let Some(why) = tls_reason(error, tls) {
        return why;
    }
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
            // (`checked_sub`: an interval longer than the machine's uptime has no instant
            // before it.)
            next_at = now
                .checked_sub(period)
                .map_or(next_at, |before| next_at.max(before))
                + period;
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
                    connected = Link::connect(&plan.to, plan.tls.as_ref(), plan.bare) => connected,
                };
                match connected {
                    Ok(link) => {
                        stream = Some(link);
                        backoff = Duration::from_millis(50);
                    }
                    Err(error) => {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                        report(&totals, &plan, &reason(&error, plan.tls.as_ref()));
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
            let delivery = link.deliver(&message, plan.ack_timeout).await;
            match delivery {
                Delivery::Answered(code) => {
                    if code.is_some() && latencies.len() < MAX_LATENCY_SAMPLES {
                        latencies
                            .push(u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    break Some(code);
                }
                Delivery::Retry(_) | Delivery::Refused(_) => {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    match &delivery {
                        Delivery::Refused(why) => report(&totals, &plan, why),
                        Delivery::Retry(why) if plan.verbose => eprintln!(
                            "hl7-ihp: {} {why}; sending it again",
                            terminal::cell(&message.control_id, terminal::ID_WIDTH)
                        ),
                        _ => {}
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

/// A connection to the receiver, plain or TLS.
enum Transport {
    Plain(TcpStream),
    // Boxed: a TLS stream carries its buffers and is many times the size of a socket.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// Writes all of `bytes`; over TLS, flushes too, as the record is only sent then.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.write_all(bytes).await,
            Transport::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    async fn read_buf(&mut self, buffer: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read_buf(buffer).await,
            Transport::Tls(stream) => stream.read_buf(buffer).await,
        }
    }
}

/// What went wrong with TLS, in a few words, when `error` is a TLS error; what came from
/// the receiver (names in its certificate) is escaped.
fn tls_reason(error: &std::io::Error, tls: Option<&TlsClient>) -> Option<String> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    let tls_error = error.get_ref()?.downcast_ref::<Error>()?;
    let name = tls.map_or_else(String::new, |tls| tls.server_name.to_str().into_owned());
    let why = match tls_error {
        Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "the receiver's certificate is not from a trusted CA (see --tls-ca)".to_owned()
        }
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            format!(
                "the receiver's certificate is not for {} (see --tls-server-name)",
                terminal::escape(&name)
            )
        }
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the receiver's certificate has expired".to_owned()
        }
        Error::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "the receiver's certificate is not valid yet".to_owned()
        }
        Error::InvalidCertificate(Cert::Revoked) => {
            "the receiver's certificate is revoked".to_owned()
        }
        Error::AlertReceived(Alert::CertificateRequired) => {
            "the receiver wants a client certificate (give --tls-cert and --tls-key)".to_owned()
        }
        Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied),
        ) => format!("the receiver refused our certificate ({alert:?})"),
        Error::AlertReceived(alert) => format!("the receiver ended the handshake ({alert:?})"),
        other => terminal::escape(&other.to_string()).into_owned(),
    };
    Some(format!("TLS: {why}"))
}

/// How long a bare ACK's bytes must have stopped coming before it is taken as whole.
const BARE_ACK_GAP: Duration = Duration::from_millis(100);

/// An open MLLP (or bare HL7) connection with its read buffer.
struct Link {
    stream: Transport,
    codec: MllpCodec,
    /// `Some` on a bare connection: messages go out and ACKs come back without MLLP bytes.
    bare: Option<BareCodec>,
    buffer: BytesMut,
    /// Whether an ACK came on this connection yet.
    answered: bool,
    /// The text of the last ACK read (MSA-3, else ERR-8), for `replay --to`'s report.
    last_text: String,
    /// The bytes of the last ACK read, for `send --query` (a query's answer is its ACK).
    last_answer: Vec<u8>,
}

impl Link {
    /// Connects, and over TLS completes the handshake, within [`CONNECT_TIMEOUT`].
    async fn connect(to: &str, tls: Option<&TlsClient>, bare: bool) -> std::io::Result<Link> {
        let address: SocketAddr = match to.parse() {
            Ok(address) => address,
            Err(_) => tokio::net::lookup_host(to)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("no address for host"))?,
        };
        let connect = async {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(match tls {
                None => Transport::Plain(stream),
                Some(tls) => Transport::Tls(Box::new(
                    tls.connector
                        .connect(tls.server_name.clone(), stream)
                        .await?,
                )),
            })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Link {
            stream,
            codec: MllpCodec::new(),
            bare: bare.then(BareCodec::default),
            buffer: BytesMut::with_capacity(4096),
            answered: false,
            last_text: String::new(),
            last_answer: Vec::new(),
        })
    }

    /// A connection that failed with `error` (or closed, `None`) while `fallback` was going
    /// on: a TLS refusal when it says so, or when a new TLS connection is closed before its
    /// first answer (with TLS 1.3 the receiver checks a client certificate after the
    /// handshake, and its alert can be lost in the reset of the connection).
    fn failed(&self, error: Option<&std::io::Error>, fallback: &'static str) -> Delivery {
        if let Some(why) = error.and_then(|e| tls_reason(e, None)) {
            return Delivery::Refused(why);
        }
        if matches!(self.stream, Transport::Tls(_)) && !self.answered {
            return Delivery::Refused(
                "TLS: the receiver closed the connection after the handshake (does it want \
                 another client certificate?)"
                    .to_owned(),
            );
        }
        Delivery::Retry(fallback)
    }

    async fn deliver(&mut self, message: &Outgoing, timeout: Duration) -> Delivery {
        let framed = if self.bare.is_some() {
            message.bytes.to_vec()
        } else {
            hl7::mllp::frame(&message.bytes)
        };
        // One deadline for writing and for the ACK: a receiver that stops reading cannot
        // hold the message (nor Ctrl+C, which waits for it) longer than the ACK timeout.
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.stream.write(&framed)).await {
            Err(_) => return Delivery::Retry("could not be written in time"),
            Ok(Err(error)) => return self.failed(Some(&error), "could not be written"),
            Ok(Ok(())) => {}
        }
        if !message.expects_ack {
            return Delivery::Answered(None);
        }
        // Set when a bare ACK's bytes stopped coming: what is buffered is the whole ACK.
        let mut quiet = false;
        loop {
            let decoded = match self.bare.as_mut() {
                None => self.codec.decode(&mut self.buffer),
                Some(codec) if std::mem::take(&mut quiet) => Ok(codec.end_by_gap(&mut self.buffer)),
                Some(codec) => codec.decode(&mut self.buffer),
            };
            match decoded {
                Ok(Some(MllpItem::Frame(frame))) => {
                    self.answered = true;
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
                    self.last_text = ack_text(&ack);
                    self.last_answer.clear();
                    self.last_answer.extend_from_slice(&frame);
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
            let in_ack = self.bare.as_ref().is_some_and(BareCodec::in_frame);
            let until = if in_ack {
                deadline.min(tokio::time::Instant::now() + BARE_ACK_GAP)
            } else {
                deadline
            };
            match tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buffer)).await {
                Err(_) if in_ack && until < deadline => quiet = true,
                Err(_) => return Delivery::Retry("got no ACK in time"),
                Ok(Ok(0)) => return self.failed(None, "lost its connection"),
                Ok(Err(error)) => return self.failed(Some(&error), "lost its connection"),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// An ACK's text: MSA-3, else the first ERR-8 (where 2.5 and later put it), as sent.
fn ack_text(ack: &hl7::Message<'_>) -> String {
    ["MSA-3", "ERR-8"]
        .into_iter()
        .filter_map(|path| ack.get(path))
        .find(|text| !text.is_empty())
        .map(|text| String::from_utf8_lossy(text).into_owned())
        .unwrap_or_default()
}

/// What a receiver answered to one message ([`Session::send`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// MSA-1; `None` when the message asked for no ACK (nothing was awaited).
    pub code: Option<AckCode>,
    /// MSA-3, else ERR-8, as sent (device text: escape it before printing).
    pub text: String,
    /// The answer's bytes (not framed), empty when none was awaited: a query's answer
    /// (`ADR^A19`, `RSP^K22`) carries the patients found.
    pub bytes: Vec<u8>,
}

/// One connection for sending messages one at a time and reading each one's answer, with
/// one reconnection per message (`hl7-ihp replay --to`): unlike [`connection`], a message
/// is not retried for long, and what the receiver answered is handed back.
pub struct Session {
    to: String,
    tls: Option<TlsClient>,
    link: Option<Link>,
}

impl Session {
    /// A session with the receiver at `to` (`HOST:PORT`); it connects on the first send.
    pub fn new(to: &str, tls: Option<TlsClient>) -> Session {
        Session {
            to: to.to_owned(),
            tls,
            link: None,
        }
    }

    /// Sends one message and waits up to `timeout` for its ACK; a connection that fails is
    /// opened again once. The error is a lower-case reason.
    pub async fn send(&mut self, message: &Outgoing, timeout: Duration) -> Result<Answer, String> {
        let mut why = String::new();
        for _ in 0..2 {
            let link = match self.link.as_mut() {
                Some(link) => link,
                None => match Link::connect(&self.to, self.tls.as_ref(), false).await {
                    Ok(link) => self.link.insert(link),
                    Err(error) => {
                        why = reason(&error, self.tls.as_ref());
                        continue;
                    }
                },
            };
            match link.deliver(message, timeout).await {
                Delivery::Answered(code) => {
                    let (text, bytes) = if code.is_some() {
                        (
                            std::mem::take(&mut link.last_text),
                            std::mem::take(&mut link.last_answer),
                        )
                    } else {
                        (String::new(), Vec::new())
                    };
                    return Ok(Answer { code, text, bytes });
                }
                Delivery::Retry(reason) => why = reason.to_owned(),
                Delivery::Refused(reason) => why = reason,
            }
            self.link = None;
        }
        Err(why)
    }
}
