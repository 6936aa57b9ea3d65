//! The MLLP framing codec: `0x0B` payload `0x1C 0x0D` over a byte stream, for tokio-util.
//!
//! [`MllpCodec`] is a [`Decoder`] and an [`Encoder`]. It is lenient the way devices need it to
//! be, and it counts every leniency in [`MllpStats`]:
//!
//! - bytes outside a frame (before a `0x0B`) are skipped;
//! - a `0x1C` not followed by `0x0D` still ends the frame;
//! - a `0x0B` inside a frame drops the partial frame and starts a new one;
//! - a frame whose payload is longer than the limit is discarded up to its end, keeping only its
//!   first bytes, and comes out as [`MllpItem::Oversized`] rather than as an error, so that the
//!   stream goes on (tokio-util's `FramedRead` stops after the first `Err`).
//!
//! Scanning is linear: the codec remembers how far it has looked into the buffer, so a frame that
//! arrives in many small reads is scanned once. Memory is bounded by the frame limit plus one
//! read, whatever the peer sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};
use tokio_util::codec::{Decoder, Encoder};

/// The start block byte (VT) that opens a frame.
pub const START_BLOCK: u8 = 0x0B;

/// The end block byte (FS) that closes a frame's payload.
pub const END_BLOCK: u8 = 0x1C;

/// The carriage return that follows [`END_BLOCK`] in a well-formed frame.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Default limit on a frame's payload length, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1_048_576;

/// Default number of leading payload bytes kept from an oversized frame for inspection (64 KiB,
/// see docs/acks.md).
pub const DEFAULT_HEAD_LEN: usize = 64 * 1024;

/// What the decoder yields: a frame, or the report of an oversized frame it discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MllpItem {
    /// The payload of a frame, without its `0x0B` and `0x1C 0x0D` framing bytes. It may be empty:
    /// what an empty frame means is for the caller to decide.
    Frame(Bytes),
    /// A frame whose payload was longer than the codec's limit; it was discarded as it arrived.
    Oversized {
        /// The full length of the discarded payload, in bytes.
        len: usize,
        /// The first bytes of the payload, at most the codec's head length.
        head: Bytes,
    },
}

/// Errors of the MLLP codec.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    /// Reading or writing the underlying stream failed.
    #[error("i/o error on the mllp stream")]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame; the partial frame was dropped.
    #[error("stream ended inside an mllp frame after {len} payload bytes")]
    IncompleteFrame {
        /// How many payload bytes of the partial frame had arrived.
        len: usize,
    },
    /// The encoder was given a payload containing a framing byte, which would break the framing
    /// for the receiver.
    #[error("payload contains the mllp framing byte {byte:#04x} at offset {offset}")]
    FramingByteInPayload {
        /// The framing byte found, [`START_BLOCK`] or [`END_BLOCK`].
        byte: u8,
        /// Its offset in the payload.
        offset: usize,
    },
}

/// Counters of the leniencies the decoder applied, since the codec was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MllpStats {
    /// Frames yielded as [`MllpItem::Frame`].
    pub n_frames: u64,
    /// Bytes skipped outside frames (before a `0x0B`, or after a frame's end).
    pub n_bytes_skipped: u64,
    /// Frames (of any size) ended by a `0x1C` that was not followed by `0x0D`.
    pub n_frames_without_cr: u64,
    /// Partial frames (of any size) dropped because a `0x0B` started a new frame.
    pub n_frames_restarted: u64,
    /// Oversized frames, each reported once as [`MllpItem::Oversized`].
    pub n_frames_oversized: u64,
}

/// Where the decoder stands in the stream.
#[derive(Debug)]
enum State {
    /// Between frames: the buffer holds nothing worth keeping.
    Idle,
    /// Inside a frame whose payload starts at the buffer's start. `scanned` bytes of it hold
    /// neither framing byte; at `scanned` there is either nothing yet or a `0x1C` that is the
    /// buffer's last byte, waiting to learn whether `0x0D` follows.
    Frame { scanned: usize },
    /// Inside an oversized frame: `len` payload bytes were already dropped from the buffer, and
    /// `head` holds the first of them. The buffer is empty, or holds a lone `0x1C` waiting for
    /// the byte after it.
    Discard { len: usize, head: Vec<u8> },
}

/// How a `0x1C` at a given offset ends the frame.
enum FrameEnd {
    /// The buffer ends right after the `0x1C`: more bytes are needed to know.
    Pending,
    /// The frame ends, and this many framing bytes (1 or 2) follow the payload.
    Ends { n_framing_bytes: usize },
}

/// The MLLP framing codec, see the [module documentation](self).
#[derive(Debug)]
pub struct MllpCodec {
    max_frame_len: usize,
    head_len: usize,
    state: State,
    stats: MllpStats,
}

impl MllpCodec {
    /// A codec with the default limits, [`DEFAULT_MAX_FRAME_LEN`] and [`DEFAULT_HEAD_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that reports payloads longer than `max_frame_len` bytes as
    /// [`MllpItem::Oversized`], keeping their first [`DEFAULT_HEAD_LEN`] bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        MllpCodec {
            max_frame_len,
            head_len: DEFAULT_HEAD_LEN,
            state: State::Idle,
            stats: MllpStats::default(),
        }
    }

    /// The same codec, keeping the first `head_len` bytes of each oversized frame.
    #[must_use]
    pub fn with_head_len(mut self, head_len: usize) -> Self {
        self.head_len = head_len;
        self
    }

    /// The longest payload, in bytes, yielded as [`MllpItem::Frame`].
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// How many leading bytes of an oversized frame are kept in [`MllpItem::Oversized`].
    pub fn head_len(&self) -> usize {
        self.head_len
    }

    /// True while a frame has started and not ended: the receiver's mid-frame timeout
    /// applies then, its idle timeout otherwise.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// The counters so far.
    pub fn stats(&self) -> MllpStats {
        self.stats
    }

    /// Reads how the `0x1C` at `buf[at]` ends the frame, counting a missing `0x0D`.
    fn frame_end(&mut self, buf: &[u8], at: usize) -> FrameEnd {
        match buf.get(at + 1) {
            None => FrameEnd::Pending,
            Some(&CARRIAGE_RETURN) => FrameEnd::Ends { n_framing_bytes: 2 },
            Some(_) => {
                self.stats.n_frames_without_cr += 1;
                FrameEnd::Ends { n_framing_bytes: 1 }
            }
        }
    }

    /// Moves the first `n` payload bytes of the buffer into the discard state, entering it if
    /// needed.
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
        buf.advance(n);
    }

    /// Ends the current oversized frame and returns its report.
    fn finish_oversized(&mut self) -> MllpItem {
        self.stats.n_frames_oversized += 1;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Discard { len, head } => MllpItem::Oversized {
                len,
                head: Bytes::from(head),
            },
            // Only called in the discard state; an empty report is the harmless answer anyway.
            State::Idle | State::Frame { .. } => MllpItem::Oversized {
                len: 0,
                head: Bytes::new(),
            },
        }
    }
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for MllpCodec {
    type Item = MllpItem;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<MllpItem>, MllpError> {
        loop {
            match &self.state {
                State::Idle => match memchr(START_BLOCK, buf) {
                    Some(at) => {
                        self.stats.n_bytes_skipped += at as u64;
                        buf.advance(at + 1);
                        self.state = State::Frame { scanned: 0 };
                    }
                    None => {
                        self.stats.n_bytes_skipped += buf.len() as u64;
                        buf.clear();
                        return Ok(None);
                    }
                },
                &State::Frame { scanned } => {
                    // Only a caller that shrank the buffer between calls could make this bite.
                    let scanned = scanned.min(buf.len());
                    let Some(found) = memchr2(START_BLOCK, END_BLOCK, &buf[scanned..]) else {
                        self.state = State::Frame { scanned: buf.len() };
                        if buf.len() > self.max_frame_len {
                            self.discard(buf, buf.len());
                        }
                        return Ok(None);
                    };
                    let at = scanned + found;
                    if buf[at] == START_BLOCK {
                        self.stats.n_frames_restarted += 1;
                        buf.advance(at + 1);
                        self.state = State::Frame { scanned: 0 };
                        continue;
                    }
                    match self.frame_end(buf, at) {
                        FrameEnd::Pending => {
                            self.state = State::Frame { scanned: at };
                            if at > self.max_frame_len {
                                self.discard(buf, at);
                            }
                            return Ok(None);
                        }
                        FrameEnd::Ends { n_framing_bytes } => {
                            if at > self.max_frame_len {
                                self.discard(buf, at);
                                buf.advance(n_framing_bytes);
                                return Ok(Some(self.finish_oversized()));
                            }
                            let payload = buf.split_to(at).freeze();
                            buf.advance(n_framing_bytes);
                            self.state = State::Idle;
                            self.stats.n_frames += 1;
                            return Ok(Some(MllpItem::Frame(payload)));
                        }
                    }
                }
                State::Discard { .. } => {
                    let Some(at) = memchr2(START_BLOCK, END_BLOCK, buf) else {
                        self.discard(buf, buf.len());
                        return Ok(None);
                    };
                    if buf[at] == START_BLOCK {
                        self.stats.n_frames_restarted += 1;
                        buf.advance(at + 1);
                        self.state = State::Frame { scanned: 0 };
                        continue;
                    }
                    self.discard(buf, at);
                    match self.frame_end(buf, 0) {
                        FrameEnd::Pending => return Ok(None),
                        FrameEnd::Ends { n_framing_bytes } => {
                            buf.advance(n_framing_bytes);
                            return Ok(Some(self.finish_oversized()));
                        }
                    }
                }
            }
        }
    }

    /// Like [`decode`](Decoder::decode), and then: a frame whose `0x1C` is the stream's last
    /// byte ends there (counted as missing its `0x0D`); a frame still open at the end of the
    /// stream is dropped and reported as [`MllpError::IncompleteFrame`]. Bytes outside frames
    /// are only counted.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<MllpItem>, MllpError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        let ends_with_end_block = buf.last() == Some(&END_BLOCK);
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => Ok(None),
            State::Frame { .. } if ends_with_end_block => {
                self.stats.n_frames_without_cr += 1;
                self.stats.n_frames += 1;
                let payload = buf.split_to(buf.len() - 1).freeze();
                buf.clear();
                Ok(Some(MllpItem::Frame(payload)))
            }
            State::Discard { len, head } if ends_with_end_block => {
                self.stats.n_frames_without_cr += 1;
                self.state = State::Discard { len, head };
                buf.clear();
                Ok(Some(self.finish_oversized()))
            }
            State::Frame { .. } => {
                let len = buf.len();
                buf.clear();
                Err(MllpError::IncompleteFrame { len })
            }
            State::Discard { len, .. } => {
                let len = len.saturating_add(buf.len());
                buf.clear();
                Err(MllpError::IncompleteFrame { len })
            }
        }
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = MllpError;

    /// Writes `0x0B`, the payload and `0x1C 0x0D`; a payload containing `0x0B` or `0x1C` is
    /// refused, since the receiver would cut the frame there.
    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), MllpError> {
        if let Some(offset) = memchr2(START_BLOCK, END_BLOCK, payload) {
            return Err(MllpError::FramingByteInPayload {
                byte: payload[offset],
                offset,
            });
        }
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        Ok(())
    }
}

impl Encoder<Bytes> for MllpCodec {
    type Error = MllpError;

    /// As for `&[u8]`.
    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), MllpError> {
        self.encode(&payload[..], dst)
    }
}

/// The MLLP frame of `payload`: `0x0B`, the payload, `0x1C 0x0D`. Unlike the [`Encoder`], it
/// does not check the payload for framing bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(payload.len() + 3);
    framed.push(START_BLOCK);
    framed.extend_from_slice(payload);
    framed.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    framed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` one after the other, decoding all it can after each, then ends the stream.
    /// Returns the items and the result of the end of the stream.
    fn decode_chunks(
        codec: &mut MllpCodec,
        chunks: &[&[u8]],
    ) -> (Vec<MllpItem>, Result<(), MllpError>) {
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).expect("decode never fails") {
                items.push(item);
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return (items, Ok(())),
                Err(err) => return (items, Err(err)),
            }
        }
    }

    /// Decodes `input` in one chunk with a default codec, expecting a clean end of stream.
    fn decode_all(input: &[u8]) -> (Vec<MllpItem>, MllpStats) {
        let mut codec = MllpCodec::new();
        let (items, end) = decode_chunks(&mut codec, &[input]);
        end.expect("clean end of stream");
        (items, codec.stats())
    }

    fn frame_item(payload: &[u8]) -> MllpItem {
        MllpItem::Frame(Bytes::copy_from_slice(payload))
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = frame(b"MSH|^~\\&|A\rPID|1\r");
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let mut codec = MllpCodec::new();
        let (items, end) = decode_chunks(&mut codec, &chunks);
        end.unwrap();
        assert_eq!(items, [frame_item(b"MSH|^~\\&|A\rPID|1\r")]);
        assert_eq!(
            codec.stats(),
            MllpStats {
                n_frames: 1,
                ..MllpStats::default()
            }
        );
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut input = frame(b"first");
        input.extend(frame(b"second"));
        let (items, stats) = decode_all(&input);
        assert_eq!(items, [frame_item(b"first"), frame_item(b"second")]);
        assert_eq!(stats.n_frames, 2);
        assert_eq!(stats.n_bytes_skipped, 0);
    }

    #[test]
    fn frames_are_split_off_without_copying() {
        let mut buf = BytesMut::from(&frame(b"payload")[..]);
        let start = buf.as_ptr();
        let item = MllpCodec::new().decode(&mut buf).unwrap();
        let Some(MllpItem::Frame(payload)) = item else {
            panic!("expected a frame, got {item:?}");
        };
        assert_eq!(payload.as_ptr(), start.wrapping_add(1));
    }

    #[test]
    fn garbage_outside_frames_is_skipped_and_counted() {
        let mut input = b"\r\nnoise".to_vec();
        input.extend(frame(b"one"));
        input.extend(b"\n");
        input.extend(frame(b"two"));
        input.extend(b"tail");
        let (items, stats) = decode_all(&input);
        assert_eq!(items, [frame_item(b"one"), frame_item(b"two")]);
        assert_eq!(stats.n_bytes_skipped, 7 + 1 + 4);
    }

    #[test]
    fn end_block_without_cr_ends_the_frame_and_is_counted() {
        let input = b"\x0bone\x1c\x0btwo\x1cX\x0bthree\x1c\x0d";
        let (items, stats) = decode_all(input);
        assert_eq!(
            items,
            [frame_item(b"one"), frame_item(b"two"), frame_item(b"three")]
        );
        assert_eq!(stats.n_frames_without_cr, 2);
        assert_eq!(stats.n_bytes_skipped, 1);
    }

    #[test]
    fn end_block_at_buffer_end_waits_for_the_cr() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&b"\x0bone\x1c"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\x0d");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame_item(b"one")));
        assert!(buf.is_empty());
        assert_eq!(codec.stats().n_frames_without_cr, 0);
    }

    #[test]
    fn end_block_at_buffer_end_then_another_byte_is_counted() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&b"\x0bone\x1c"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\x0btwo\x1c\x0d");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame_item(b"one")));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame_item(b"two")));
        assert_eq!(codec.stats().n_frames_without_cr, 1);
    }

    #[test]
    fn start_block_inside_a_frame_restarts_it() {
        let input = b"\x0bpartial\x0bwhole\x1c\x0d";
        let (items, stats) = decode_all(input);
        assert_eq!(items, [frame_item(b"whole")]);
        assert_eq!(stats.n_frames_restarted, 1);
        assert_eq!(stats.n_frames, 1);
    }

    #[test]
    fn empty_frame_yields_an_empty_payload() {
        let (items, stats) = decode_all(b"\x0b\x1c\x0d");
        assert_eq!(items, [MllpItem::Frame(Bytes::new())]);
        assert_eq!(stats.n_frames, 1);
    }

    #[test]
    fn frame_at_the_limit_is_accepted() {
        let payload = vec![b'a'; 16];
        let mut codec = MllpCodec::with_max_frame_len(16);
        let (items, end) = decode_chunks(&mut codec, &[&frame(&payload)]);
        end.unwrap();
        assert_eq!(items, [frame_item(&payload)]);
    }

    #[test]
    fn oversized_frame_in_one_buffer_then_a_good_one() {
        let payload: Vec<u8> = (0..100u8).map(|i| b'0' + i % 75).collect();
        let mut input = frame(&payload);
        input.extend(frame(b"good"));
        let mut codec = MllpCodec::with_max_frame_len(50).with_head_len(10);
        let (items, end) = decode_chunks(&mut codec, &[&input]);
        end.unwrap();
        assert_eq!(
            items,
            [
                MllpItem::Oversized {
                    len: 100,
                    head: Bytes::copy_from_slice(&payload[..10]),
                },
                frame_item(b"good"),
            ]
        );
        assert_eq!(codec.stats().n_frames_oversized, 1);
        assert_eq!(codec.stats().n_frames, 1);
    }

    #[test]
    fn oversized_stream_keeps_memory_bounded() {
        const MAX: usize = 64 * 1024;
        const CHUNK: usize = 4096;
        const LEN: usize = 5 * 1024 * 1024;
        let payload: Vec<u8> = (0..LEN).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = frame(&payload);
        input.extend(frame(b"good"));

        let mut codec = MllpCodec::with_max_frame_len(MAX);
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for chunk in input.chunks(CHUNK) {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            assert!(buf.len() <= MAX + CHUNK, "buffer holds {} bytes", buf.len());
        }
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert_eq!(
            items,
            [
                MllpItem::Oversized {
                    len: LEN,
                    head: Bytes::copy_from_slice(&payload[..DEFAULT_HEAD_LEN]),
                },
                frame_item(b"good"),
            ]
        );
        assert_eq!(codec.stats().n_frames_oversized, 1);
    }

    #[test]
    fn oversized_frame_ended_by_end_block_at_buffer_end() {
        let mut codec = MllpCodec::with_max_frame_len(4).with_head_len(2);
        let mut buf = BytesMut::from(&b"\x0babcdefgh\x1c"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"\x1c");
        buf.extend_from_slice(b"\x0d");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(MllpItem::Oversized {
                len: 8,
                head: Bytes::from_static(b"ab"),
            })
        );
        assert_eq!(codec.stats().n_frames_without_cr, 0);
    }

    #[test]
    fn start_block_inside_an_oversized_frame_restarts_it() {
        let mut codec = MllpCodec::with_max_frame_len(4);
        let (items, end) = decode_chunks(&mut codec, &[b"\x0babcdefgh", b"ij\x0bok\x1c\x0d"]);
        end.unwrap();
        assert_eq!(items, [frame_item(b"ok")]);
        assert_eq!(codec.stats().n_frames_restarted, 1);
        assert_eq!(codec.stats().n_frames_oversized, 0);
    }

    #[test]
    fn eof_with_a_partial_frame_is_an_incomplete_frame() {
        let mut codec = MllpCodec::new();
        let (items, end) = decode_chunks(&mut codec, &[b"\x0bdone\x1c\x0d\x0bpart"]);
        assert_eq!(items, [frame_item(b"done")]);
        assert!(matches!(end, Err(MllpError::IncompleteFrame { len: 4 })));
    }

    #[test]
    fn eof_with_a_partial_oversized_frame_is_an_incomplete_frame() {
        let mut codec = MllpCodec::with_max_frame_len(4);
        let (items, end) = decode_chunks(&mut codec, &[b"\x0babcdefgh", b"ij"]);
        assert_eq!(items, []);
        assert!(matches!(end, Err(MllpError::IncompleteFrame { len: 10 })));
    }

    #[test]
    fn eof_right_after_the_end_block_ends_the_frame() {
        let (items, stats) = decode_all(b"\x0bone\x1c");
        assert_eq!(items, [frame_item(b"one")]);
        assert_eq!(stats.n_frames_without_cr, 1);

        let mut codec = MllpCodec::with_max_frame_len(2).with_head_len(1);
        let (items, end) = decode_chunks(&mut codec, &[b"\x0bone\x1c"]);
        end.unwrap();
        assert_eq!(
            items,
            [MllpItem::Oversized {
                len: 3,
                head: Bytes::from_static(b"o"),
            }]
        );
    }

    #[test]
    fn eof_outside_a_frame_only_counts_the_bytes() {
        let (items, stats) = decode_all(b"\x0bone\x1c\x0djunk");
        assert_eq!(items, [frame_item(b"one")]);
        assert_eq!(stats.n_bytes_skipped, 4);
    }

    #[test]
    fn encoder_round_trip() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::new();
        codec.encode(&b"MSH|one\r"[..], &mut buf).unwrap();
        codec
            .encode(Bytes::from_static(b"MSH|two\r"), &mut buf)
            .unwrap();
        let mut expected = frame(b"MSH|one\r");
        expected.extend(frame(b"MSH|two\r"));
        assert_eq!(&buf[..], &expected[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(frame_item(b"MSH|one\r"))
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(frame_item(b"MSH|two\r"))
        );
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn encoder_refuses_framing_bytes_in_the_payload() {
        let mut buf = BytesMut::new();
        let err = MllpCodec::new()
            .encode(&b"ab\x1ccd"[..], &mut buf)
            .unwrap_err();
        assert!(matches!(
            err,
            MllpError::FramingByteInPayload {
                byte: END_BLOCK,
                offset: 2
            }
        ));
        assert_eq!(
            err.to_string(),
            "payload contains the mllp framing byte 0x1c at offset 2"
        );
        assert!(buf.is_empty());
    }

    /// One frame of a generated stream: garbage before it, its payload, and whether its `0x0D`
    /// is there.
    fn stream_part() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, bool)> {
        let garbage = prop::collection::vec(
            any::<u8>().prop_filter("not a start block or cr", |b| {
                *b != START_BLOCK && *b != CARRIAGE_RETURN
            }),
            0..4,
        );
        let payload = prop::collection::vec(
            any::<u8>().prop_filter("not a framing byte", |b| {
                *b != START_BLOCK && *b != END_BLOCK
            }),
            0..40,
        );
        (garbage, payload, any::<bool>())
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_items(
            parts in prop::collection::vec(stream_part(), 0..8),
            chunk_lens in prop::collection::vec(1..20usize, 1..10),
        ) {
            const MAX: usize = 16;
            const HEAD: usize = 5;
            let mut input = Vec::new();
            let mut expected = Vec::new();
            let mut expected_stats = MllpStats::default();
            for (garbage, payload, with_cr) in &parts {
                input.extend(garbage);
                input.push(START_BLOCK);
                input.extend(payload);
                input.push(END_BLOCK);
                if *with_cr {
                    input.push(CARRIAGE_RETURN);
                } else {
                    expected_stats.n_frames_without_cr += 1;
                }
                expected_stats.n_bytes_skipped += garbage.len() as u64;
                if payload.len() > MAX {
                    expected_stats.n_frames_oversized += 1;
                    expected.push(MllpItem::Oversized {
                        len: payload.len(),
                        head: Bytes::copy_from_slice(&payload[..HEAD]),
                    });
                } else {
                    expected_stats.n_frames += 1;
                    expected.push(frame_item(payload));
                }
            }

            let mut chunks = Vec::new();
            let mut rest = &input[..];
            for len in chunk_lens.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*len).min(rest.len()));
                chunks.push(chunk);
                rest = tail;
            }

            let mut codec = MllpCodec::with_max_frame_len(MAX).with_head_len(HEAD);
            let (items, end) = decode_chunks(&mut codec, &chunks);
            prop_assert!(end.is_ok(), "end of stream: {:?}", end);
            prop_assert_eq!(items, expected);
            prop_assert_eq!(codec.stats(), expected_stats);
        }
    }
}
