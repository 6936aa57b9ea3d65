//! One MLLP connection: read a frame, hand it to `ingest`, write its ACKs, repeat.
//!
//! One message is in flight per connection: the next frame is read only after the ACKs of
//! the previous one are written, so a slow store slows its senders instead of filling
//! memory.
//!
//! Both timeouts are deadlines, not limits on the silence between reads, so that a peer
//! sending one byte now and then cannot keep a connection (and its permit) forever: a frame
//! must end within the frame timeout of its first byte (a `0x0B` that restarts it buys no
//! time), and outside frames the connection is closed when the idle timeout has passed since
//! the last complete frame (or the connection's start); bytes outside frames do not count.
//! Writing an ACK is bounded by the frame timeout too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hl7::mllp::{MllpCodec, MllpItem, MllpStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::config::Limits;
use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// How much to read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection ended, for its log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    PeerClosed,
    IdleTimeout,
    FrameTimeout,
    WriteTimeout,
    Shutdown,
    ReadError,
    WriteError,
}

impl Close {
    fn as_str(self) -> &'static str {
        match self {
            Close::PeerClosed => "peer closed",
            Close::IdleTimeout => "idle timeout",
            Close::FrameTimeout => "frame timeout",
            Close::WriteTimeout => "write timeout",
            Close::Shutdown => "shutdown",
            Close::ReadError => "read error",
            Close::WriteError => "write error",
        }
    }
}

/// Serves one connection until the peer closes, a timeout fires, or shutdown is asked for
/// (then the message in hand is finished and answered first).
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    ingest: Arc<Ingest>,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut codec = MllpCodec::with_max_frame_len(limits.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut counted = MllpStats::default();
    let mut n_frames = 0u64;
    // Set by each complete frame; the frame deadline by the first byte of an unfinished one.
    let mut idle_deadline = Instant::now() + limits.idle_timeout;
    let mut frame_deadline: Option<Instant> = None;
    let close = 'connection: loop {
        // Everything already buffered first: a read may have brought several frames.
        loop {
            let decoded = codec.decode(&mut buffer);
            // Counted before the answer goes out, so a sender that reads its ACK and then
            // the metrics sees them.
            count_framing(&codec, &mut counted, &metrics);
            let item = match decoded {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%peer, %error, "framing failed");
                    break 'connection Close::ReadError;
                }
            };
            n_frames += 1;
            frame_deadline = None;
            let acks = match item {
                MllpItem::Frame(frame) => ingest.frame(&frame, peer).await,
                MllpItem::Oversized { len, head } => {
                    ingest
                        .oversized(len, &head, limits.max_frame_bytes, peer)
                        .await
                }
            };
            if let Err(close) = write_acks(&mut stream, &acks, limits.frame_timeout).await {
                break 'connection close;
            }
            Metrics::add(&metrics.acks_sent, acks.len() as u64);
            // From the frame's answer: a slow store does not eat the sender's idle time.
            idle_deadline = Instant::now() + limits.idle_timeout;
            if *shutdown.borrow() {
                break 'connection Close::Shutdown;
            }
        }
        if *shutdown.borrow() {
            break Close::Shutdown;
        }
        let (deadline, on_timeout) = if codec.in_frame() {
            // A frame's first byte was read by now; a restart inside it keeps the deadline.
            let deadline =
                *frame_deadline.get_or_insert_with(|| Instant::now() + limits.frame_timeout);
            (deadline, Close::FrameTimeout)
        } else {
            frame_deadline = None;
            (idle_deadline, Close::IdleTimeout)
        };
        buffer.reserve(READ_CHUNK);
        tokio::select! {
            changed = shutdown.changed() => {
                // A dropped sender means the server is going away too.
                if changed.is_err() || *shutdown.borrow() {
                    break Close::Shutdown;
                }
            }
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buffer)) => match read {
                Err(_) => {
                    Metrics::inc(&metrics.connections_timed_out);
                    break on_timeout;
                }
                Ok(Ok(0)) => break Close::PeerClosed,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break Close::ReadError,
            }
        }
    };
    count_framing(&codec, &mut counted, &metrics);
    let partial = codec.in_frame();
    tracing::info!(
        %peer,
        n_frames,
        reason = close.as_str(),
        partial_frame_dropped = partial,
        "connection closed"
    );
}

async fn write_acks(
    stream: &mut TcpStream,
    acks: &[Vec<u8>],
    timeout: Duration,
) -> Result<(), Close> {
    if acks.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(acks.iter().map(|a| a.len() + 3).sum());
    for ack in acks {
        out.extend_from_slice(&hl7::mllp::frame(ack));
    }
    match tokio::time::timeout(timeout, stream.write_all(&out)).await {
        Err(_) => Err(Close::WriteTimeout),
        Ok(Err(_)) => Err(Close::WriteError),
        Ok(Ok(())) => Ok(()),
    }
}

/// Adds what the codec counted since the last call to the shared metrics.
fn count_framing(codec: &MllpCodec, counted: &mut MllpStats, metrics: &Metrics) {
    let now = codec.stats();
    Metrics::add(
        &metrics.mllp_bytes_skipped,
        now.n_bytes_skipped - counted.n_bytes_skipped,
    );
    Metrics::add(
        &metrics.mllp_frames_without_cr,
        now.n_frames_without_cr - counted.n_frames_without_cr,
    );
    Metrics::add(
        &metrics.mllp_frames_restarted,
        now.n_frames_restarted - counted.n_frames_restarted,
    );
    *counted = now;
}
