//! Bare HL7 over a byte stream, without MLLP framing: what some monitors and their simulators
//! write on the socket.
//!
//! [`BareCodec`] is a tokio-util [`Decoder`] yielding the same [`MllpItem`]s as the MLLP codec,
//! with the same bounds:
//!
//! - a message starts at `MSH` at a segment start (the stream's start, or after a CR or LF),
//!   a batch at `FHS` or `BHS`; bytes before the first one are skipped and counted;
//! - a message ends where the next `MSH` (or `FHS`, `BHS`) begins at a segment start, a batch
//!   where the next batch begins (its own `MSH`s do not end it), or when the caller says
//!   the line went quiet ([`BareCodec::end_by_gap`]: the stream has no end marker, so only a
//!   timer can tell that the last message is whole), or at the end of the stream;
//! - a message longer than the limit is discarded as it arrives, keeping only its first bytes,
//!   and comes out as [`MllpItem::Oversized`] when it ends.
//!
//! Scanning is linear, as in [`MllpCodec`](crate::mllp::MllpCodec): the codec remembers how far
//! it looked. Memory is bounded by the limit plus one read.
//!
//! [`sniff`] decides from a connection's first bytes whether it speaks MLLP or bare HL7.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr2;
use tokio_util::codec::Decoder;

use crate::mllp::{DEFAULT_HEAD_LEN, DEFAULT_MAX_FRAME_LEN, MllpError, MllpItem, START_BLOCK};

/// How a connection's messages are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// MLLP only: bytes outside frames are skipped and counted.
    Mllp,
    /// Decided from the first bytes: `0x0B` is MLLP, `MSH`, `FHS` or `BHS` bare HL7.
    Auto,
    /// Bare HL7 only.
    None,
}

/// What a connection's first bytes say, see [`sniff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// MLLP (a `0x0B`, or anything that is not the start of a bare message).
    Mllp,
    /// Bare HL7: the stream starts with `MSH`, `FHS` or `BHS` (after CR, LF, spaces or tabs).
    Bare,
    /// Not enough bytes yet to tell.
    Undecided,
}

/// The segment ids that open a bare stream.
const OPENERS: [&[u8; 3]; 3] = [b"MSH", b"FHS", b"BHS"];

/// Decides from the first bytes of a connection how it is framed. Leading CR, LF, spaces and
/// tabs are passed over; anything else that does not start `MSH`, `FHS` or `BHS` is MLLP, so
/// that noise on an MLLP line stays skipped and counted, never taken as a message.
pub fn sniff(first: &[u8]) -> Sniffed {
    let start = first
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'));
    let Some(start) = start else {
        return Sniffed::Undecided;
    };
    let rest = &first[start..];
    if rest[0] == START_BLOCK {
        return Sniffed::Mllp;
    }
    let n = rest.len().min(3);
    if OPENERS.iter().any(|id| id[..n] == rest[..n]) {
        if n == 3 {
            Sniffed::Bare
        } else {
            Sniffed::Undecided
        }
    } else {
        Sniffed::Mllp
    }
}

/// Counters of the bare decoder, since the codec was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BareStats {
    /// Messages yielded as [`MllpItem::Frame`].
    pub n_messages: u64,
    /// Bytes skipped before a message's `MSH`.
    pub n_bytes_skipped: u64,
    /// Messages (of any size) ended by the quiet gap rather than by the next `MSH`.
    pub n_ended_by_gap: u64,
    /// Oversized messages, each reported once as [`MllpItem::Oversized`].
    pub n_oversized: u64,
}

/// Where the decoder stands.
#[derive(Debug)]
enum State {
    /// Between messages: looking for `MSH` at a segment start.
    Idle,
    /// Inside a message (or batch, by `opened`) starting at the buffer's start; `scanned`
    /// bytes were looked at and hold no boundary.
    Message { scanned: usize, opened: usize },
    /// Inside an oversized message: `len` bytes were dropped, `head` holds the first of them.
    Discard { len: usize, head: Vec<u8> },
}

/// The bare HL7 decoder, see the [module documentation](self).
#[derive(Debug)]
pub struct BareCodec {
    max_len: usize,
    head_len: usize,
    state: State,
    /// The byte before the buffer's start was a CR or LF (or the stream starts there).
    at_segment_start: bool,
    stats: BareStats,
}

impl Default for BareCodec {
    fn default() -> Self {
        Self::with_max_len(DEFAULT_MAX_FRAME_LEN)
    }
}

/// Which message or batch opener, if any, starts `buf[at..]` (as an index into [`OPENERS`]):
/// `Some(Some(i))`, `Some(None)` for none, or `None` if the buffer ends before three bytes
/// could say.
fn opener_at(buf: &[u8], at: usize) -> Option<Option<usize>> {
    let rest = &buf[at.min(buf.len())..];
    let n = rest.len().min(3);
    let mut partial = false;
    for (i, id) in OPENERS.iter().enumerate() {
        if id[..n] == rest[..n] {
            if n == 3 {
                return Some(Some(i));
            }
            partial = true;
        }
    }
    if partial { None } else { Some(None) }
}

/// The index of `MSH`, `FHS` and `BHS` in [`OPENERS`].
const MSH: usize = 0;
const FHS: usize = 1;
const BHS: usize = 2;

/// Whether an opener ends a message that `opened` opened: anything ends a message; inside a
/// batch its own `MSH`s do not, only the next batch (`FHS`, or `BHS` for a batch without a
/// file header) does.
fn ends(opened: usize, next: usize) -> bool {
    match opened {
        FHS => next == FHS,
        BHS => next != MSH,
        _ => true,
    }
}

/// Where the next boundary is in `buf` for a message opened by `opened`, looking from `from`
/// (a position after which no CR or LF was seen yet): `Ok(at)` when an opener that ends it
/// starts at `at`, a segment start; `Err(scanned)` when there is none, `scanned` being how
/// far the next call need not look again.
fn next_boundary(buf: &[u8], from: usize, opened: usize) -> Result<usize, usize> {
    let mut from = from;
    while let Some(found) = memchr2(b'\r', b'\n', &buf[from..]) {
        let at = from + found + 1;
        match opener_at(buf, at) {
            Some(Some(next)) if ends(opened, next) => return Ok(at),
            Some(_) => from = at,
            // The terminator is seen again next time, as the next bytes arrive.
            None => return Err(from + found),
        }
    }
    Err(buf.len())
}

impl BareCodec {
    /// A codec that reports messages longer than `max_len` bytes as [`MllpItem::Oversized`],
    /// keeping their first [`DEFAULT_HEAD_LEN`] bytes.
    pub fn with_max_len(max_len: usize) -> Self {
        BareCodec {
            max_len,
            head_len: DEFAULT_HEAD_LEN,
            state: State::Idle,
            at_segment_start: true,
            stats: BareStats::default(),
        }
    }

    /// The same codec, keeping the first `head_len` bytes of each oversized message.
    #[must_use]
    pub fn with_head_len(mut self, head_len: usize) -> Self {
        self.head_len = head_len;
        self
    }

    /// True while a message has started and not ended.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// The counters so far.
    pub fn stats(&self) -> BareStats {
        self.stats
    }

    fn discard(&mut self, buf: &mut BytesMut, n: usize) {
        if !matches!(self.state, State::Discard { .. }) {
            self.state = State::Discard {
                len: 0,
                head: Vec::new(),
            };
        }
        if let State::Discard { len, head } = &mut self.state {
            let n_kept = n.min(self.head_len.saturating_sub(head.len()));
            head.extend_from_slice(&buf[..n_kept]);
            *len = len.saturating_add(n);
        }
        if n > 0 {
            self.at_segment_start = matches!(buf[n - 1], b'\r' | b'\n');
        }
        buf.advance(n);
    }

    /// Ends the message in hand at `at` bytes into the buffer.
    fn finish(&mut self, buf: &mut BytesMut, at: usize) -> MllpItem {
        // A message ends before a segment start, or where the caller says the stream ended.
        self.at_segment_start = true;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Discard { len, mut head } => {
                let n_kept = at.min(self.head_len.saturating_sub(head.len()));
                head.extend_from_slice(&buf[..n_kept]);
                buf.advance(at);
                self.stats.n_oversized += 1;
                MllpItem::Oversized {
                    len: len.saturating_add(at),
                    head: Bytes::from(head),
                }
            }
            State::Idle | State::Message { .. } if at > self.max_len => {
                let head = Bytes::copy_from_slice(&buf[..at.min(self.head_len)]);
                buf.advance(at);
                self.stats.n_oversized += 1;
                MllpItem::Oversized { len: at, head }
            }
            State::Idle | State::Message { .. } => {
                self.stats.n_messages += 1;
                MllpItem::Frame(buf.split_to(at).freeze())
            }
        }
    }

    /// The line went quiet: the message in hand (everything buffered) is whole. `None` when
    /// no message has started; bytes that are not a message's start are skipped then.
    pub fn end_by_gap(&mut self, buf: &mut BytesMut) -> Option<MllpItem> {
        if !self.in_frame() {
            self.stats.n_bytes_skipped += buf.len() as u64;
            buf.clear();
            return None;
        }
        self.stats.n_ended_by_gap += 1;
        Some(self.finish(buf, buf.len()))
    }
}

impl Decoder for BareCodec {
    type Item = MllpItem;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<MllpItem>, MllpError> {
        loop {
            match self.state {
                State::Idle => {
                    // Segment terminators between messages are passed over, not counted.
                    let n_blank = buf
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    if n_blank > 0 {
                        buf.advance(n_blank);
                        self.at_segment_start = true;
                    }
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    if self.at_segment_start {
                        match opener_at(buf, 0) {
                            Some(Some(opened)) => {
                                self.state = State::Message { scanned: 0, opened };
                                continue;
                            }
                            None => return Ok(None),
                            Some(None) => {}
                        }
                    }
                    // Noise: skip to the next segment start and look again.
                    let n = memchr2(b'\r', b'\n', buf).unwrap_or(buf.len());
                    self.stats.n_bytes_skipped += n as u64;
                    buf.advance(n);
                    self.at_segment_start = false;
                    if buf.is_empty() {
                        return Ok(None);
                    }
                }
                State::Message { scanned, opened } => {
                    // Not at 0: the message's own `MSH` is not its end.
                    match next_boundary(buf, scanned.max(1).min(buf.len()), opened) {
                        Ok(at) => return Ok(Some(self.finish(buf, at))),
                        Err(scanned) => {
                            if scanned > self.max_len {
                                self.discard(buf, scanned);
                            } else {
                                self.state = State::Message { scanned, opened };
                            }
                            return Ok(None);
                        }
                    }
                }
                State::Discard { .. } => {
                    // The byte before the buffer may have been a terminator.
                    if self.at_segment_start && matches!(opener_at(buf, 0), Some(Some(_))) {
                        return Ok(Some(self.finish(buf, 0)));
                    }
                    match next_boundary(buf, 0, MSH) {
                        Ok(at) => return Ok(Some(self.finish(buf, at))),
                        Err(scanned) => {
                            self.discard(buf, scanned);
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Like [`decode`](Decoder::decode), and then the message in hand ends with the stream
    /// (not counted as ended by the gap).
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<MllpItem>, MllpError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if !self.in_frame() {
            self.stats.n_bytes_skipped += buf.len() as u64;
            buf.clear();
            return Ok(None);
        }
        Ok(Some(self.finish(buf, buf.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> MllpItem {
        MllpItem::Frame(Bytes::copy_from_slice(payload))
    }

    /// Feeds `chunks`, decoding after each, then ends by the gap (`gap`) or by the stream.
    fn run(codec: &mut BareCodec, chunks: &[&[u8]], gap: bool) -> Vec<MllpItem> {
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        if gap {
            items.extend(codec.end_by_gap(&mut buf));
        } else {
            while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
                items.push(item);
            }
        }
        assert!(buf.is_empty());
        items
    }

    const ONE: &[u8] = b"MSH|^~\\&|A|B\rPID|1||42\rOBX|1|NM|HR||80\r";
    const TWO: &[u8] = b"MSH|^~\\&|A|B\rPID|1||43\r";

    #[test]
    fn sniffing_the_first_bytes() {
        assert_eq!(sniff(b""), Sniffed::Undecided);
        assert_eq!(sniff(b"\r\n"), Sniffed::Undecided);
        assert_eq!(sniff(b"M"), Sniffed::Undecided);
        assert_eq!(sniff(b"MS"), Sniffed::Undecided);
        assert_eq!(sniff(b"MSH|"), Sniffed::Bare);
        assert_eq!(sniff(b"\r\nFHS|"), Sniffed::Bare);
        assert_eq!(sniff(b"BHS"), Sniffed::Bare);
        assert_eq!(sniff(b"\x0bMSH"), Sniffed::Mllp);
        assert_eq!(sniff(b"\r\n\x0bMSH"), Sniffed::Mllp);
        assert_eq!(sniff(b"GET / HTTP/1.1"), Sniffed::Mllp);
        assert_eq!(sniff(b"MSX"), Sniffed::Mllp);
        assert_eq!(sniff(b"msh|"), Sniffed::Mllp);
    }

    #[test]
    fn two_messages_in_one_read_then_the_gap() {
        let mut input = ONE.to_vec();
        input.extend(TWO);
        let mut codec = BareCodec::default();
        let items = run(&mut codec, &[&input], true);
        assert_eq!(items, [frame(ONE), frame(TWO)]);
        assert_eq!(codec.stats().n_messages, 2);
        assert_eq!(codec.stats().n_ended_by_gap, 1);
        assert!(!codec.in_frame());
    }

    #[test]
    fn a_message_waits_for_the_gap_or_the_next_msh() {
        let mut codec = BareCodec::default();
        let mut buf = BytesMut::from(ONE);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(codec.in_frame());
        assert_eq!(codec.end_by_gap(&mut buf), Some(frame(ONE)));
        assert_eq!(codec.end_by_gap(&mut buf), None);
    }

    #[test]
    fn one_byte_at_a_time_is_the_same() {
        let mut input = ONE.to_vec();
        input.extend(TWO);
        input.extend(ONE);
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let mut codec = BareCodec::default();
        assert_eq!(
            run(&mut codec, &chunks, false),
            [frame(ONE), frame(TWO), frame(ONE)]
        );
        for len in 2..9 {
            let chunks: Vec<&[u8]> = input.chunks(len).collect();
            let items = run(&mut BareCodec::default(), &chunks, true);
            assert_eq!(
                items,
                [frame(ONE), frame(TWO), frame(ONE)],
                "chunks of {len}"
            );
        }
    }

    #[test]
    fn lf_and_crlf_terminators() {
        let lf = b"MSH|^~\\&|A\nPID|1\nMSH|^~\\&|B\nPID|2\n";
        let items = run(&mut BareCodec::default(), &[lf], true);
        assert_eq!(
            items,
            [
                frame(b"MSH|^~\\&|A\nPID|1\n"),
                frame(b"MSH|^~\\&|B\nPID|2\n")
            ]
        );
        let crlf = b"MSH|^~\\&|A\r\nPID|1\r\nMSH|^~\\&|B\r\nPID|2\r\n";
        let chunks: Vec<&[u8]> = crlf.chunks(3).collect();
        let items = run(&mut BareCodec::default(), &chunks, true);
        assert_eq!(
            items,
            [
                frame(b"MSH|^~\\&|A\r\nPID|1\r\n"),
                frame(b"MSH|^~\\&|B\r\nPID|2\r\n")
            ]
        );
    }

    #[test]
    fn msh_inside_a_segment_is_not_a_boundary() {
        let input = b"MSH|^~\\&|A\rOBX|1|ST|X||MSH text\r";
        let items = run(&mut BareCodec::default(), &[input], true);
        assert_eq!(items, [frame(input)]);
    }

    #[test]
    fn a_batch_is_one_item_up_to_the_next_batch() {
        let batch: &[u8] = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rBTS|2\rFTS|1\r";
        let bhs: &[u8] = b"BHS|^~\\&\rMSH|^~\\&|C\rBTS|1\r";
        let mut input = bhs.to_vec();
        input.extend(bhs);
        input.extend(batch);
        input.extend(batch);
        input.extend(ONE);
        let chunks: Vec<&[u8]> = input.chunks(5).collect();
        let items = run(&mut BareCodec::default(), &chunks, true);
        // A batch ends only at the next batch (a file's only at the next file): an MSH
        // after it stays in it.
        let mut last = batch.to_vec();
        last.extend(ONE);
        assert_eq!(items, [frame(bhs), frame(bhs), frame(batch), frame(&last)]);
    }

    #[test]
    fn noise_before_the_first_msh_is_skipped_and_counted() {
        let mut codec = BareCodec::default();
        let mut input = b"\r\nnoise\r".to_vec();
        input.extend(ONE);
        let items = run(&mut codec, &[&input], true);
        assert_eq!(items, [frame(ONE)]);
        assert_eq!(codec.stats().n_bytes_skipped, 5);
        // Noise alone is never a message.
        let mut codec = BareCodec::default();
        assert_eq!(run(&mut codec, &[b"junk\rmore"], true), []);
        assert_eq!(codec.stats().n_bytes_skipped, 8);
    }

    #[test]
    fn the_end_of_the_stream_ends_the_message() {
        let mut codec = BareCodec::default();
        assert_eq!(run(&mut codec, &[ONE], false), [frame(ONE)]);
        assert_eq!(codec.stats().n_ended_by_gap, 0);
    }

    #[test]
    fn oversized_messages_are_reported_and_the_next_goes_on() {
        let mut big = b"MSH|^~\\&|A\r".to_vec();
        big.extend(std::iter::repeat_n(b'x', 100));
        big.push(b'\r');
        let mut input = big.clone();
        input.extend(TWO);
        for len in [1, 7, input.len()] {
            let mut codec = BareCodec::with_max_len(50).with_head_len(10);
            let chunks: Vec<&[u8]> = input.chunks(len).collect();
            let items = run(&mut codec, &chunks, true);
            assert_eq!(
                items,
                [
                    MllpItem::Oversized {
                        len: big.len(),
                        head: Bytes::copy_from_slice(&big[..10]),
                    },
                    frame(TWO),
                ],
                "chunks of {len}"
            );
            assert_eq!(codec.stats().n_oversized, 1);
        }
    }

    #[test]
    fn an_oversized_message_ended_by_the_gap() {
        let mut big = b"MSH|^~\\&|A\r".to_vec();
        big.extend(std::iter::repeat_n(b'y', 100));
        let mut codec = BareCodec::with_max_len(50).with_head_len(4);
        let items = run(&mut codec, &[&big[..30], &big[30..]], true);
        assert_eq!(
            items,
            [MllpItem::Oversized {
                len: big.len(),
                head: Bytes::from_static(b"MSH|"),
            }]
        );
    }

    #[test]
    fn an_oversized_stream_keeps_memory_bounded() {
        const MAX: usize = 64 * 1024;
        const CHUNK: usize = 4096;
        let mut input = b"MSH|^~\\&|A\r".to_vec();
        for i in 0..200_000 {
            input.extend(format!("OBX|{i}|NM|HR||80\r").as_bytes());
        }
        let mut codec = BareCodec::with_max_len(MAX);
        let mut buf = BytesMut::new();
        for chunk in input.chunks(CHUNK) {
            buf.extend_from_slice(chunk);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.len() <= MAX + CHUNK, "buffer holds {} bytes", buf.len());
        }
        let Some(MllpItem::Oversized { len, .. }) = codec.end_by_gap(&mut buf) else {
            panic!("expected an oversized report");
        };
        assert_eq!(len, input.len());
    }
}
