//! MLLP decoder on any stream: frames hold no framing byte, the buffer stays within the limit
//! plus one read, the end of stream never panics, the cut into reads changes nothing, and
//! re-encoded frames decode to the same payloads.
//!
//! Input layout: byte 0 picks how many chunk sizes follow (1 to 4); each of those bytes `b`
//! is a chunk size `b + 1`, used in turn; the rest is the stream. `run.sh mllp` seeds the
//! corpus with the HL7 corpus files wrapped in MLLP frames behind such a header.
#![no_main]

use bytes::BytesMut;
use hl7::mllp::{END_BLOCK, MllpCodec, MllpError, MllpItem, MllpStats, START_BLOCK};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// A small frame limit, so that the oversized path is reached by short inputs.
const MAX: usize = 256;
/// A head shorter than the limit, so that the head is always cut.
const HEAD: usize = 16;

/// What decoding a whole stream gave.
#[derive(Debug, PartialEq)]
struct Decoded {
    items: Vec<MllpItem>,
    /// `Err(len)` when the stream ended inside a frame of `len` payload bytes.
    end: Result<(), usize>,
    stats: MllpStats,
}

fn has_framing_byte(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == START_BLOCK || b == END_BLOCK)
}

/// Feeds `stream` in chunks of `chunk_lens` (cycled), decoding all it can after each chunk,
/// then ends the stream; checks the per-step invariants on the way.
fn decode(stream: &[u8], chunk_lens: &[usize]) -> Decoded {
    let mut codec = MllpCodec::with_max_frame_len(MAX).with_head_len(HEAD);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = stream;
    let mut lens = chunk_lens.iter().cycle();
    while !rest.is_empty() {
        let len = lens.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                // Oversized frames are items, not errors: `decode` has no error to give.
                Err(err) => panic!("decode failed: {err}"),
            }
        }
        assert!(
            buf.len() <= MAX + len,
            "buffer holds {} bytes after a read of {len} (limit {MAX})",
            buf.len()
        );
    }
    // Each item of the end consumes bytes, so this ends; the bound only guards the fuzzer.
    let mut n_calls = 0usize;
    let end = loop {
        n_calls += 1;
        assert!(n_calls <= stream.len() + 2, "decode_eof does not end");
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break Ok(()),
            Err(MllpError::IncompleteFrame { len }) => break Err(len),
            Err(err) => panic!("decode_eof failed with {err}"),
        }
    };
    // tokio-util's FramedRead reports bytes left after the end as an error of its own.
    assert!(buf.is_empty(), "{} bytes left after the end", buf.len());

    let stats = codec.stats();
    let mut n_frames = 0u64;
    let mut n_oversized = 0u64;
    for item in &items {
        match item {
            MllpItem::Frame(payload) => {
                n_frames += 1;
                assert!(payload.len() <= MAX, "frame of {} bytes", payload.len());
                assert!(
                    !has_framing_byte(payload),
                    "frame payload holds a framing byte: {payload:?}"
                );
            }
            MllpItem::Oversized { len, head } => {
                n_oversized += 1;
                assert!(*len > MAX, "oversized report of {len} bytes");
                assert_eq!(head.len(), (*len).min(HEAD), "head of an oversized frame");
                assert!(
                    !has_framing_byte(head),
                    "oversized head holds a framing byte"
                );
            }
        }
    }
    assert_eq!(stats.n_frames, n_frames, "n_frames counts the frames");
    assert_eq!(
        stats.n_frames_oversized, n_oversized,
        "n_frames_oversized counts the reports"
    );
    assert!(stats.n_bytes_skipped <= stream.len() as u64);
    Decoded { items, end, stats }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n_lens = usize::from(first % 4) + 1;
    if rest.len() < n_lens {
        return;
    }
    let (lens, stream) = rest.split_at(n_lens);
    let chunk_lens: Vec<usize> = lens.iter().map(|&b| usize::from(b) + 1).collect();

    let chunked = decode(stream, &chunk_lens);

    // The codec keeps its place across reads: how the stream is cut changes nothing.
    let whole = decode(stream, &[stream.len().max(1)]);
    assert_eq!(chunked, whole, "chunked and whole decoding differ");

    // The payloads framed again, back to back, decode to the same payloads and nothing else.
    let payloads: Vec<&[u8]> = chunked
        .items
        .iter()
        .filter_map(|item| match item {
            MllpItem::Frame(payload) => Some(&payload[..]),
            MllpItem::Oversized { .. } => None,
        })
        .collect();
    let mut encoder = MllpCodec::with_max_frame_len(MAX);
    let mut framed = BytesMut::new();
    for payload in &payloads {
        encoder
            .encode(*payload, &mut framed)
            .expect("a decoded payload is encodable");
    }
    let again = decode(&framed, &chunk_lens);
    let again_payloads: Vec<&[u8]> = again
        .items
        .iter()
        .map(|item| match item {
            MllpItem::Frame(payload) => &payload[..],
            MllpItem::Oversized { len, .. } => {
                panic!("re-encoded frame of {len} bytes is oversized")
            }
        })
        .collect();
    assert_eq!(
        again_payloads, payloads,
        "re-encoded frames decode differently"
    );
    assert_eq!(again.end, Ok(()));
    assert_eq!(
        again.stats,
        MllpStats {
            n_frames: payloads.len() as u64,
            ..MllpStats::default()
        }
    );
});
