//! The stored form of a frame's bytes (`messages.raw`): zstd with a dictionary embedded in
//! the program, marked per row in `raw_encoding` (schema version 9), so that the rows
//! written before (the bytes as received, `raw_encoding` NULL) still read as they are.
//!
//! A vitals message's 1.4 KB become about 110 bytes: most of an HL7 message is the same
//! segment and code text every time, which the dictionary holds once. Compressing runs in
//! `Row::new` on the caller's thread, never in the writer; reading decompresses wherever
//! `raw` is read (the message detail and lists, the API, `show`, `messages`).

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// `raw_encoding` of a row whose `raw` is zstd with [`DICTIONARY`]. NULL: the bytes as
/// received. Another dictionary would be another number: a stored row names the one it
/// needs, so this one never changes.
pub(super) const ZSTD_DICTIONARY_1: i64 = 1;

/// Dictionary 1: trained (`zstd --train --maxdict=2048`) on 1,500 messages of the
/// simulator's vitals scenario (synthetic patients; IHE PCD-01 ORU^R01 with MDC codes).
/// Never edited: the rows compressed with it need exactly these bytes (a test checks their
/// hash).
const DICTIONARY: &[u8] = include_bytes!("raw_dictionary.zstd");

/// zstd's level 3 (its default): with the dictionary, levels up to 9 gain a few bytes a
/// message at several times the time.
const LEVEL: i32 = 3;

/// Frames shorter than this are kept as they are: nothing to gain.
const MIN_COMPRESSED: usize = 64;

/// The largest frame a row is decompressed to (its size is in the zstd frame header): far
/// above any frame the receiver takes, so only a damaged row reaches it.
const MAX_DECODED: u64 = 1 << 30;

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static DICT: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| EncoderDictionary::copy(DICTIONARY, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static DICT: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| DecoderDictionary::copy(DICTIONARY))
}

thread_local! {
    // One context per thread: making one costs more than compressing a vitals message.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// What to store for these bytes: the compressed form and its `raw_encoding`, or the bytes
/// themselves and NULL when compressing does not make them smaller (or fails, which zstd
/// does only when out of memory).
pub(in crate::store) fn encode(raw: Vec<u8>) -> (Vec<u8>, Option<i64>) {
    if raw.len() < MIN_COMPRESSED {
        return (raw, None);
    }
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let mut compressor = Compressor::with_prepared_dictionary(encoder_dictionary()).ok()?;
            // The content size goes in the frame header (zstd's default), the checksum
            // does not: the hash column holds the bytes' SHA-256.
            compressor
                .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))
                .ok()?;
            *cell = Some(compressor);
        }
        cell.as_mut()?.compress(&raw).ok()
    });
    match compressed {
        Some(compressed) if compressed.len() < raw.len() => (compressed, Some(ZSTD_DICTIONARY_1)),
        _ => (raw, None),
    }
}

/// A stored `raw` could not be decoded: an encoding this program does not know, or damaged
/// bytes. Says which, never what: the column holds patient data.
#[derive(Debug, thiserror::Error)]
pub(in crate::store) enum Undecodable {
    /// `raw_encoding` holds a number no version of this program wrote.
    #[error("unknown raw encoding {0}")]
    Unknown(i64),
    /// The compressed bytes are damaged.
    #[error("damaged compressed message bytes")]
    Damaged,
}

/// The bytes as received, from `raw` and `raw_encoding` as stored.
pub(in crate::store) fn decode(
    stored: Vec<u8>,
    encoding: Option<i64>,
) -> Result<Vec<u8>, Undecodable> {
    match encoding {
        None => Ok(stored),
        Some(ZSTD_DICTIONARY_1) => {
            let size = match zstd::zstd_safe::get_frame_content_size(&stored) {
                Ok(Some(size)) if size <= MAX_DECODED => size as usize,
                _ => return Err(Undecodable::Damaged),
            };
            DECOMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = Decompressor::with_prepared_dictionary(decoder_dictionary()).ok();
                }
                let decompressor = cell.as_mut().ok_or(Undecodable::Damaged)?;
                let decoded = decompressor
                    .decompress(&stored, size)
                    .map_err(|_| Undecodable::Damaged)?;
                if decoded.len() == size {
                    Ok(decoded)
                } else {
                    Err(Undecodable::Damaged)
                }
            })
        }
        Some(other) => Err(Undecodable::Unknown(other)),
    }
}

/// [`decode`] for a reader: the bytes of a row's `raw` (column `raw`) and `raw_encoding`
/// (column `encoding`), NULL when `raw` is.
pub(super) fn read(
    row: &rusqlite::Row<'_>,
    raw: usize,
    encoding: usize,
) -> rusqlite::Result<Option<Vec<u8>>> {
    let Some(stored) = row.get::<_, Option<Vec<u8>>>(raw)? else {
        return Ok(None);
    };
    decode(stored, row.get(encoding)?).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(raw, rusqlite::types::Type::Blob, e.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_dictionary_is_the_one_rows_were_written_with() {
        // Rows with raw_encoding 1 need exactly these bytes: a new dictionary is a new
        // encoding number, never an edit of this one.
        let hash = Sha256::digest(DICTIONARY);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ea61e05b76938b2ed60a54f0a04a1d2fe43bda75eacb98691f7b8c4da84cb507"
        );
    }

    /// An ORU^R01 of the simulator's vitals scenario (the time in it is today's: a test of
    /// the dictionary on messages it was not trained on).
    fn vitals() -> Vec<u8> {
        use crate::sender::simulator::{Scenario, Source};
        let mut source = Source::new(Scenario::Vitals { patients: 10 }, "RAW001", 0, 1);
        loop {
            let message = source.next_message();
            if message.bytes.windows(7).any(|w| w == b"ORU^R01") {
                return message.bytes;
            }
        }
    }

    fn round_trip(raw: &[u8]) -> Option<i64> {
        let (stored, encoding) = encode(raw.to_vec());
        assert_eq!(decode(stored, encoding).unwrap(), raw);
        encoding
    }

    #[test]
    fn bytes_come_back_identical_whatever_they_are() {
        assert_eq!(round_trip(b""), None);
        assert_eq!(round_trip(b"MSH|^~\\&|short"), None);
        let vitals = vitals();
        assert_eq!(round_trip(&vitals), Some(ZSTD_DICTIONARY_1));
        // Binary, incompressible: kept as it is.
        let mut rng = crate::sender::simulator::Rng::new(7);
        let noise: Vec<u8> = (0..10_000).map(|_| rng.next_u64() as u8).collect();
        assert_eq!(round_trip(&noise), None);
        // Large and repetitive, with every byte value.
        let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&large), Some(ZSTD_DICTIONARY_1));
    }

    #[test]
    fn a_vitals_message_shrinks_to_under_a_fifth() {
        let vitals = vitals();
        let (stored, _) = encode(vitals.clone());
        assert!(
            stored.len() * 5 < vitals.len(),
            "{} of {}",
            stored.len(),
            vitals.len()
        );
    }

    #[test]
    fn damaged_and_unknown_encodings_are_errors() {
        let vitals = vitals();
        let (mut stored, encoding) = encode(vitals);
        assert!(matches!(
            decode(stored.clone(), Some(99)),
            Err(Undecodable::Unknown(99))
        ));
        let last = stored.len() - 1;
        stored.truncate(last);
        assert!(decode(stored, encoding).is_err());
        assert!(decode(b"not zstd".to_vec(), encoding).is_err());
    }
}
