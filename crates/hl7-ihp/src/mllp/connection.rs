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
//!
//! While a frame is unfinished, the read buffer's size is charged to the receiver-wide
//! [`PartialBudget`](crate::mllp::budget::PartialBudget); a connection told to close by it closes. The buffer grows by doubling
//! up to one largest frame plus one read, not beyond, and a buffer that a large frame grew is
//! given back once it holds little again, so memory follows what is in flight.
//!
//! The framing is `--framing`'s: MLLP, bare HL7 (no framing bytes; a message ends at the next
//! `MSH` or when the line has been quiet for `--unframed-gap`, bounded by the frame deadline),
//! or decided from the connection's first bytes (after the PROXY header and TLS). A bare
//! connection's ACKs go back bare too.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hl7::bare::{BareCodec, BareStats, Framing, Sniffed};
use hl7::mllp::{MllpCodec, MllpError, MllpItem, MllpStats};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::config::Limits;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::mllp::budget::Charge;
use crate::net::Peer;
use crate::rate_limit::Level;

/// How much to read at a time, and the buffer's size between frames.
pub const READ_CHUNK: usize = 16 * 1024;
/// A buffer larger than this that holds at most one read is given back for a fresh one: a
/// large frame's allocation should not stay with its connection after the frame.
const SHRINK_ABOVE: usize = 4 * READ_CHUNK;

/// Why a connection ended, for its log line and the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    PeerClosed,
    IdleTimeout,
    FrameTimeout,
    WriteTimeout,
    Shutdown,
    ReadError,
    WriteError,
    OverBudget,
}

impl Close {
    /// The reason as logs and the audit trail say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Close::PeerClosed => "peer closed",
            Close::IdleTimeout => "idle timeout",
            Close::FrameTimeout => "frame timeout",
            Close::WriteTimeout => "write timeout",
            Close::Shutdown => "shutdown",
            Close::ReadError => "read error",
            Close::WriteError => "write error",
            Close::OverBudget => "over the budget for unfinished frames",
        }
    }
}

/// The decoder of one connection: chosen by the setting, or by its first bytes.
#[derive(Debug)]
enum Framer {
    /// `auto`, before the first bytes said which.
    Sniffing {
        max_frame_bytes: usize,
    },
    Mllp(MllpCodec),
    Bare(BareCodec),
}

impl Framer {
    fn new(framing: Framing, max_frame_bytes: usize) -> Framer {
        match framing {
            Framing::Mllp => Framer::Mllp(MllpCodec::with_max_frame_len(max_frame_bytes)),
            Framing::None => Framer::Bare(BareCodec::with_max_len(max_frame_bytes)),
            Framing::Auto => Framer::Sniffing { max_frame_bytes },
        }
    }

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<MllpItem>, MllpError> {
        if let Framer::Sniffing { max_frame_bytes } = *self {
            *self = match hl7::bare::sniff(buffer) {
                Sniffed::Undecided => return Ok(None),
                Sniffed::Mllp => Framer::Mllp(MllpCodec::with_max_frame_len(max_frame_bytes)),
                Sniffed::Bare => Framer::Bare(BareCodec::with_max_len(max_frame_bytes)),
            };
        }
        match self {
            Framer::Sniffing { .. } => Ok(None),
            Framer::Mllp(codec) => codec.decode(buffer),
            Framer::Bare(codec) => codec.decode(buffer),
        }
    }

    /// The line went quiet: the bare message in hand is whole.
    fn end_by_gap(&mut self, buffer: &mut BytesMut) -> Option<MllpItem> {
        match self {
            Framer::Bare(codec) => codec.end_by_gap(buffer),
            Framer::Sniffing { .. } | Framer::Mllp(_) => None,
        }
    }

    fn in_frame(&self) -> bool {
        match self {
            Framer::Sniffing { .. } => false,
            Framer::Mllp(codec) => codec.in_frame(),
            Framer::Bare(codec) => codec.in_frame(),
        }
    }

    fn is_bare(&self) -> bool {
        matches!(self, Framer::Bare(_))
    }
}

/// What the framing counters said at the last look, to add only what is new.
#[derive(Default)]
struct Counted {
    mllp: MllpStats,
    bare: BareStats,
}

/// Serves one connection (plain TCP or TLS) until the peer closes, a timeout fires, the
/// partial-frame budget tells it to close, or shutdown is asked for (then the message in
/// hand is finished and answered first). Returns why it ended and how many frames it read.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: &Peer,
    ingest: Arc<Ingest>,
    limits: Limits,
    metrics: Arc<Metrics>,
    charge: Charge,
    shutdown: watch::Receiver<bool>,
) -> (Close, u64) {
    serve_observed(
        stream,
        peer,
        ingest,
        limits,
        metrics,
        charge,
        shutdown,
        &|| {},
    )
    .await
}

/// [`serve`], calling `on_frame` for each frame read (before it is ingested): a
/// `--connect` link's message count and last message time.
#[allow(clippy::too_many_arguments)]
pub async fn serve_observed<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: &Peer,
    ingest: Arc<Ingest>,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut charge: Charge,
    mut shutdown: watch::Receiver<bool>,
    on_frame: &(dyn Fn() + Sync),
) -> (Close, u64) {
    // A frame never needs more: past the limit the codec discards what it has read.
    let most_buffered = limits.max_frame_bytes.saturating_add(READ_CHUNK + 2);
    let mut codec = Framer::new(limits.framing, limits.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut counted = Counted::default();
    // Set when a bare message's read waited out the quiet gap, or the peer closed after one:
    // the message in hand is whole.
    let mut quiet = false;
    let mut peer_closed = false;
    let mut n_frames = 0u64;
    // Set by each complete frame; the frame deadline by the first byte of an unfinished one.
    let mut idle_deadline = Instant::now() + limits.idle_timeout;
    let mut frame_deadline: Option<Instant> = None;
    let close = 'connection: loop {
        // Everything already buffered first: a read may have brought several frames.
        loop {
            let decoded = if std::mem::take(&mut quiet) {
                Ok(codec.end_by_gap(&mut buffer))
            } else {
                codec.decode(&mut buffer)
            };
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
            on_frame();
            frame_deadline = None;
            let acks = match item {
                MllpItem::Frame(frame) => ingest.frame(&frame, peer).await,
                MllpItem::Oversized { len, head } => {
                    ingest
                        .oversized(len, &head, limits.max_frame_bytes, peer)
                        .await
                }
            };
            let bare = codec.is_bare();
            if let Err(close) = write_acks(&mut stream, &acks, bare, limits.frame_timeout).await {
                break 'connection close;
            }
            Metrics::add(&metrics.acks_sent, acks.len() as u64);
            // From the frame's answer: a slow store does not eat the sender's idle time.
            idle_deadline = Instant::now() + limits.idle_timeout;
            if *shutdown.borrow() {
                break 'connection Close::Shutdown;
            }
        }
        if peer_closed {
            break Close::PeerClosed;
        }
        give_back(&mut buffer);
        // The charge covers the buffer the next read needs before it is allocated: charged
        // after the fact, a thousand connections growing at once outran the budget by one
        // doubling each.
        let grow_to = room_needed(&mut buffer, most_buffered);
        charge.set(if codec.in_frame() {
            grow_to.unwrap_or(buffer.capacity())
        } else {
            0
        });
        if charge.is_told() {
            break Close::OverBudget;
        }
        if *shutdown.borrow() {
            break Close::Shutdown;
        }
        let (deadline, on_timeout, by_gap) = if codec.in_frame() {
            // A frame's first byte was read by now; a restart inside it keeps the deadline.
            let deadline =
                *frame_deadline.get_or_insert_with(|| Instant::now() + limits.frame_timeout);
            // A bare message has no end marker: a quiet line ends it, within the deadline.
            let gap = Instant::now() + limits.unframed_gap;
            if codec.is_bare() && gap < deadline {
                (gap, Close::FrameTimeout, true)
            } else {
                (deadline, Close::FrameTimeout, false)
            }
        } else {
            frame_deadline = None;
            (idle_deadline, Close::IdleTimeout, false)
        };
        if let Some(capacity) = grow_to {
            grow(&mut buffer, capacity);
        }
        tokio::select! {
            () = charge.told() => break Close::OverBudget,
            changed = shutdown.changed() => {
                // A dropped sender means the server is going away too.
                if changed.is_err() || *shutdown.borrow() {
                    break Close::Shutdown;
                }
            }
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buffer)) => match read {
                Err(_) if by_gap => quiet = true,
                Err(_) => {
                    Metrics::inc(&metrics.connections_timed_out);
                    break on_timeout;
                }
                // A bare message in hand ends with the stream; it is answered before closing.
                Ok(Ok(0)) if codec.is_bare() && codec.in_frame() => {
                    quiet = true;
                    peer_closed = true;
                }
                Ok(Ok(0)) => break Close::PeerClosed,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break Close::ReadError,
            }
        }
    };
    count_framing(&codec, &mut counted, &metrics);
    if close == Close::OverBudget {
        Metrics::inc(&metrics.connections_closed_over_budget);
    }
    let partial = codec.in_frame();
    // A TLS peer is told the connection ends (close_notify), bounded like a write; a peer
    // that closed, or that a write already failed on, is told nothing more.
    if !matches!(
        close,
        Close::WriteTimeout | Close::WriteError | Close::PeerClosed
    ) {
        let _ = tokio::time::timeout(limits.frame_timeout, stream.shutdown()).await;
    }
    if let Some(n_suppressed) =
        ingest
            .log_limit()
            .allow(peer.addr.ip(), "connection closed", Level::Info)
    {
        tracing::info!(
            %peer,
            n_frames,
            n_suppressed,
            reason = close.as_str(),
            partial_frame_dropped = partial,
            "connection closed"
        );
    }
    (close, n_frames)
}

/// Makes room for one read, doubling the buffer like `Vec` does but never past `most` (or
/// one read more than it holds): `BytesMut::reserve` would double a 1 MiB frame's buffer to
/// 2 MiB, which the budget would then count.
#[cfg(test)]
fn make_room(buffer: &mut BytesMut, most: usize) {
    if let Some(capacity) = room_needed(buffer, most) {
        grow(buffer, capacity);
    }
}

/// The capacity `buffer` must grow to for one read, or `None` when it has room (perhaps
/// after reclaiming consumed space in place), so that the growth is charged first.
fn room_needed(buffer: &mut BytesMut, most: usize) -> Option<usize> {
    if buffer.capacity() - buffer.len() >= READ_CHUNK || buffer.try_reclaim(READ_CHUNK) {
        return None;
    }
    Some(
        buffer
            .capacity()
            .saturating_mul(2)
            .min(most)
            .max(buffer.len() + READ_CHUNK),
    )
}

/// Moves `buffer` into a new allocation of `capacity` bytes.
fn grow(buffer: &mut BytesMut, capacity: usize) {
    let mut grown = BytesMut::with_capacity(capacity);
    grown.extend_from_slice(buffer);
    *buffer = grown;
}

/// Swaps a buffer that a large frame grew, and that holds at most one read now, for a small
/// one, so that the large allocation is freed.
fn give_back(buffer: &mut BytesMut) {
    if buffer.capacity() > SHRINK_ABOVE && buffer.len() <= READ_CHUNK {
        let mut small = BytesMut::with_capacity(READ_CHUNK);
        small.extend_from_slice(buffer);
        *buffer = small;
    }
}

/// Writes the ACKs, MLLP-framed or, on a bare connection, as they are.
async fn write_acks<S: AsyncWrite + Unpin>(
    stream: &mut S,
    acks: &[Vec<u8>],
    bare: bool,
    timeout: Duration,
) -> Result<(), Close> {
    if acks.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(acks.iter().map(|a| a.len() + 3).sum());
    for ack in acks {
        if bare {
            out.extend_from_slice(ack);
        } else {
            out.extend_from_slice(&hl7::mllp::frame(ack));
        }
    }
    // A TLS stream buffers what it encrypts: flush, so the ACK leaves now.
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Err(_) => Err(Close::WriteTimeout),
        Ok(Err(_)) => Err(Close::WriteError),
        Ok(Ok(())) => Ok(()),
    }
}

/// Adds what the codec counted since the last call to the shared metrics.
fn count_framing(codec: &Framer, counted: &mut Counted, metrics: &Metrics) {
    match codec {
        Framer::Sniffing { .. } => {}
        Framer::Mllp(codec) => count_mllp(codec.stats(), &mut counted.mllp, metrics),
        Framer::Bare(codec) => {
            let now = codec.stats();
            let was = counted.bare;
            Metrics::add(
                &metrics.mllp_bytes_skipped,
                now.n_bytes_skipped - was.n_bytes_skipped,
            );
            Metrics::add(
                &metrics.unframed_messages,
                (now.n_messages + now.n_oversized) - (was.n_messages + was.n_oversized),
            );
            counted.bare = now;
        }
    }
}

fn count_mllp(now: MllpStats, counted: &mut MllpStats, metrics: &Metrics) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_to_one_largest_frame_and_shrinks_after_it() {
        let most = 1024 * 1024 + READ_CHUNK + 2;
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let mut largest = 0;
        while buffer.len() < 1024 * 1024 + 1 {
            make_room(&mut buffer, most);
            assert!(buffer.capacity() - buffer.len() >= READ_CHUNK);
            let n = (buffer.capacity() - buffer.len()).min(64 * 1024);
            buffer.extend(std::iter::repeat_n(b'x', n));
            largest = largest.max(buffer.capacity());
        }
        // `BytesMut::reserve` alone would have doubled to 2 MiB.
        assert!(largest <= most + READ_CHUNK, "grew to {largest}");
        // The frame is consumed; a little of the next one stays.
        let _frame = buffer.split_to(buffer.len() - 10);
        give_back(&mut buffer);
        assert_eq!(&buffer[..], b"xxxxxxxxxx");
        assert!(buffer.capacity() <= 2 * READ_CHUNK, "{}", buffer.capacity());
        // A small buffer is left alone.
        let before = buffer.as_ptr();
        give_back(&mut buffer);
        assert_eq!(buffer.as_ptr(), before);
    }
}
