//! Text decoding by MSH-18, as the README lists it.
//!
//! Values are decoded one field (or component) at a time, so a message that is almost all ASCII
//! costs a UTF-8 validation and no copy.

use std::borrow::Cow;

/// The character set a message declares in MSH-18 (first repetition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Charset {
    /// MSH-18 empty or unknown: UTF-8, with Windows-1252 for bytes that are not valid UTF-8.
    #[default]
    Default,
    /// `ASCII` or `ISO IR6`; bytes above 0x7F are read as Windows-1252, as senders who say
    /// ASCII but send accented names mean.
    Ascii,
    /// `UNICODE UTF-8` or `ISO IR192`; invalid bytes fall back to Windows-1252 like the default.
    Utf8,
    /// `8859/1` or `ISO IR100`: every byte is the code point of the same value.
    Latin1,
    /// `8859/2` to `8859/15` (the number is the part); 9 and 11 are read through their
    /// Windows supersets (1254 and 874), as the WHATWG encoding standard does.
    Iso8859(u8),
}

/// What MSH-18 said and whether it was understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharsetChoice {
    /// The charset used for decoding.
    pub charset: Charset,
    /// False when MSH-18 named a charset this crate does not know (then `charset` is the
    /// default); the application counts these in a metric.
    pub known: bool,
}

impl Charset {
    /// Reads an MSH-18 value (its first repetition, raw bytes).
    ///
    /// Matching ignores ASCII case and surrounding spaces. Common non-standard spellings
    /// (`UTF-8`, `ISO-8859-1`) are understood too.
    pub fn from_msh18(value: &[u8]) -> CharsetChoice {
        let value = value.trim_ascii();
        let known = |charset| CharsetChoice {
            charset,
            known: true,
        };
        if value.is_empty() {
            return known(Charset::Default);
        }
        let mut upper = [0u8; 24];
        if value.len() > upper.len() {
            return CharsetChoice {
                charset: Charset::Default,
                known: false,
            };
        }
        let upper = &mut upper[..value.len()];
        upper.copy_from_slice(value);
        upper.make_ascii_uppercase();
        let upper: &[u8] = upper;
        match upper {
            b"ASCII" | b"ISO IR6" | b"US-ASCII" => known(Charset::Ascii),
            b"UNICODE UTF-8" | b"ISO IR192" | b"UTF-8" | b"UTF8" => known(Charset::Utf8),
            b"ISO IR100" => known(Charset::Latin1),
            b"ISO IR101" => known(Charset::Iso8859(2)),
            b"ISO IR109" => known(Charset::Iso8859(3)),
            b"ISO IR110" => known(Charset::Iso8859(4)),
            b"ISO IR144" => known(Charset::Iso8859(5)),
            b"ISO IR127" => known(Charset::Iso8859(6)),
            b"ISO IR126" => known(Charset::Iso8859(7)),
            b"ISO IR138" => known(Charset::Iso8859(8)),
            b"ISO IR148" => known(Charset::Iso8859(9)),
            _ => {
                let part = upper
                    .strip_prefix(b"8859/")
                    .or_else(|| upper.strip_prefix(b"ISO-8859-"))
                    .and_then(|digits| std::str::from_utf8(digits).ok())
                    .and_then(|digits| digits.parse::<u8>().ok());
                match part {
                    Some(1) => known(Charset::Latin1),
                    Some(n @ (2..=11 | 13..=15)) => known(Charset::Iso8859(n)),
                    _ => CharsetChoice {
                        charset: Charset::Default,
                        known: false,
                    },
                }
            }
        }
    }

    /// Decodes bytes of this charset to text, borrowing when they are already valid UTF-8
    /// and mean the same in this charset.
    pub fn decode<'a>(self, bytes: &'a [u8]) -> Cow<'a, str> {
        // ASCII means the same in every charset listed here.
        if bytes.is_ascii()
            && let Ok(text) = std::str::from_utf8(bytes)
        {
            return Cow::Borrowed(text);
        }
        match self {
            Charset::Default | Charset::Utf8 | Charset::Ascii => decode_utf8_or_cp1252(bytes),
            Charset::Latin1 => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Iso8859(part) => {
                let encoding = match part {
                    2 => encoding_rs::ISO_8859_2,
                    3 => encoding_rs::ISO_8859_3,
                    4 => encoding_rs::ISO_8859_4,
                    5 => encoding_rs::ISO_8859_5,
                    6 => encoding_rs::ISO_8859_6,
                    7 => encoding_rs::ISO_8859_7,
                    8 => encoding_rs::ISO_8859_8,
                    9 => encoding_rs::WINDOWS_1254,
                    10 => encoding_rs::ISO_8859_10,
                    11 => encoding_rs::WINDOWS_874,
                    13 => encoding_rs::ISO_8859_13,
                    14 => encoding_rs::ISO_8859_14,
                    15 => encoding_rs::ISO_8859_15,
                    _ => encoding_rs::WINDOWS_1252,
                };
                let (text, _) = encoding.decode_without_bom_handling(bytes);
                Cow::Owned(text.into_owned())
            }
        }
    }
}

/// Valid UTF-8 runs stay UTF-8; each byte of an invalid run is read as Windows-1252.
fn decode_utf8_or_cp1252(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        let invalid = chunk.invalid();
        if !invalid.is_empty() {
            let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(invalid);
            out.push_str(&text);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_values_are_understood() {
        assert_eq!(Charset::from_msh18(b"").charset, Charset::Default);
        assert_eq!(Charset::from_msh18(b"8859/1").charset, Charset::Latin1);
        assert_eq!(Charset::from_msh18(b"ISO IR100").charset, Charset::Latin1);
        assert_eq!(Charset::from_msh18(b"unicode utf-8").charset, Charset::Utf8);
        assert_eq!(Charset::from_msh18(b"ISO IR192").charset, Charset::Utf8);
        assert_eq!(Charset::from_msh18(b"ASCII").charset, Charset::Ascii);
        assert_eq!(
            Charset::from_msh18(b"8859/15").charset,
            Charset::Iso8859(15)
        );
        let unknown = Charset::from_msh18(b"EBCDIC");
        assert_eq!((unknown.charset, unknown.known), (Charset::Default, false));
        assert!(!Charset::from_msh18(b"8859/12").known);
        assert!(!Charset::from_msh18(&[b'x'; 100]).known);
    }

    #[test]
    fn default_falls_back_to_cp1252_per_invalid_run() {
        // 0x96 is an en dash in Windows-1252 and invalid on its own in UTF-8.
        assert_eq!(Charset::Default.decode(b"ELAB\x963"), "ELAB\u{2013}3");
        assert_eq!(Charset::Default.decode("Zoë".as_bytes()), "Zoë");
        assert_eq!(
            Charset::Default.decode(b"M\xfcller \xc3\xa9"),
            "M\u{fc}ller \u{e9}"
        );
    }

    #[test]
    fn latin1_and_8859_parts_decode() {
        assert_eq!(Charset::Latin1.decode(b"M\xfcller"), "Müller");
        // 0xA4 is the euro sign in 8859-15 and the currency sign in 8859-1.
        assert_eq!(Charset::Iso8859(15).decode(b"\xa4"), "€");
        assert_eq!(Charset::Latin1.decode(b"\xa4"), "¤");
        assert_eq!(Charset::Iso8859(2).decode(b"\xb1"), "ą");
        assert!(matches!(
            Charset::Latin1.decode(b"plain"),
            Cow::Borrowed("plain")
        ));
    }
}
