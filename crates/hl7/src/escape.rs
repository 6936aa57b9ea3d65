//! HL7 escape sequences: decoding what senders write, and escaping what we write back.
//!
//! Decoded: `\F\ \S\ \T\ \R\ \E\` (and `\P\`, the v2.7 truncation character) to the
//! delimiter they stand for, `\Xhh…\` to its bytes, `\.br\` to a line break (`\n`). Other
//! formatting and charset escapes (`\H\ \N\ \.sp\ \Zxx\ \Cxxxx\ \Mxxxxxx\ …`) and anything
//! malformed stay as sent, so no text is lost.

use std::borrow::Cow;

use crate::message::Delimiters;

/// Decodes escape sequences to bytes (still in the message's charset).
///
/// Borrows when there is nothing to decode. Without an escape character (`MSH|^~|`) every
/// byte is text.
pub fn unescape<'a>(raw: &'a [u8], delimiters: &Delimiters) -> Cow<'a, [u8]> {
    let Some(escape) = delimiters.escape else {
        return Cow::Borrowed(raw);
    };
    let Some(first) = memchr::memchr(escape, raw) else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut pos = first;
    while pos < raw.len() {
        let Some(open) = memchr::memchr(escape, &raw[pos..]).map(|i| pos + i) else {
            out.extend_from_slice(&raw[pos..]);
            break;
        };
        out.extend_from_slice(&raw[pos..open]);
        let Some(close) = memchr::memchr(escape, &raw[open + 1..]).map(|i| open + 1 + i) else {
            // An escape character with no closing one: text.
            out.extend_from_slice(&raw[open..]);
            break;
        };
        let body = &raw[open + 1..close];
        if !decode_sequence(body, delimiters, &mut out) {
            out.extend_from_slice(&raw[open..=close]);
        }
        pos = close + 1;
    }
    Cow::Owned(out)
}

/// Appends what one sequence body stands for; false when it is kept as text.
fn decode_sequence(body: &[u8], delimiters: &Delimiters, out: &mut Vec<u8>) -> bool {
    let single = match body {
        b"F" => Some(delimiters.field),
        b"S" => Some(delimiters.component),
        b"R" => Some(delimiters.repetition),
        b"E" => delimiters.escape,
        b"T" => delimiters.subcomponent,
        b"P" => delimiters.truncation,
        _ => None,
    };
    if let Some(byte) = single {
        out.push(byte);
        return true;
    }
    if body == b".br" {
        out.push(b'\n');
        return true;
    }
    if let Some(hex) = body.strip_prefix(b"X")
        && !hex.is_empty()
        && hex.len() % 2 == 0
        && hex.iter().all(u8::is_ascii_hexdigit)
    {
        out.extend(
            hex.chunks_exact(2)
                .map(|pair| hex_value(pair[0]) << 4 | hex_value(pair[1])),
        );
        return true;
    }
    false
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Escapes text for a field we write with these delimiters: each delimiter becomes its
/// sequence, CR and LF become `\X0D\` and `\X0A\`.
///
/// Without an escape character nothing can be escaped, so delimiters, CR and LF become
/// spaces: a lossy but safe choice for the short texts (error messages) we write back.
pub fn escape<'a>(text: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    // Delimiters are ASCII; a character outside one byte is never special. (Comparing
    // `Option`s instead once matched every such character against an absent delimiter.)
    let special = |c: char| -> bool {
        let Ok(b) = u8::try_from(c) else {
            return false;
        };
        b == b'\r'
            || b == b'\n'
            || b == delimiters.field
            || b == delimiters.component
            || b == delimiters.repetition
            || Some(b) == delimiters.escape
            || Some(b) == delimiters.subcomponent
            || Some(b) == delimiters.truncation
    };
    if !text.chars().any(special) {
        return Cow::Borrowed(text);
    }
    let Some(escape) = delimiters.escape.map(char::from) else {
        return Cow::Owned(
            text.chars()
                .map(|c| if special(c) { ' ' } else { c })
                .collect(),
        );
    };
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !special(c) {
            out.push(c);
            continue;
        }
        let byte = u8::try_from(c).ok();
        let code = if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else if byte == Some(delimiters.field) {
            "F"
        } else if byte == Some(delimiters.component) {
            "S"
        } else if byte == Some(delimiters.repetition) {
            "R"
        } else if byte == delimiters.escape {
            "E"
        } else if byte == delimiters.subcomponent {
            "T"
        } else {
            "P"
        };
        out.push(escape);
        out.push_str(code);
        out.push(escape);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(raw: &str) -> String {
        String::from_utf8(unescape(raw.as_bytes(), &Delimiters::STANDARD).into_owned()).unwrap()
    }

    #[test]
    fn delimiter_escapes_decode() {
        assert_eq!(un(r"Smith\F\\S\\R\\E\\T\"), r"Smith|^~\&");
        assert_eq!(un("plain"), "plain");
        assert!(matches!(
            unescape(b"plain", &Delimiters::STANDARD),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn hex_and_line_breaks_decode() {
        assert_eq!(un(r"a\X0D\b\X0A\c"), "a\rb\nc");
        assert_eq!(un(r"line 1\.br\line 2"), "line 1\nline 2");
        assert_eq!(un(r"\X4142\"), "AB");
        // NHapi: an escaped escape character around X0A is the literal text \X0A\.
        assert_eq!(un(r"\E\X0A\E\"), r"\X0A\");
    }

    #[test]
    fn unknown_and_malformed_sequences_stay_as_text() {
        assert_eq!(un(r"\H\bold\N\"), r"\H\bold\N\");
        assert_eq!(un(r"\.sp2\"), r"\.sp2\");
        assert_eq!(un(r"\ZZ1\"), r"\ZZ1\");
        assert_eq!(un(r"\X4\"), r"\X4\");
        assert_eq!(un(r"\XZZ\"), r"\XZZ\");
        assert_eq!(un(r"C:\temp"), r"C:\temp");
        assert_eq!(un(r"\\"), r"\\");
        assert_eq!(un(r"end\"), r"end\");
    }

    #[test]
    fn truncation_escape_needs_a_truncation_character() {
        let v27 = Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::STANDARD
        };
        assert_eq!(unescape(br"a\P\b", &v27).as_ref(), b"a#b");
        assert_eq!(un(r"a\P\b"), r"a\P\b");
    }

    #[test]
    fn escaping_round_trips() {
        let d = Delimiters::STANDARD;
        let text = "a|b^c~d\\e&f\rg\nh";
        let escaped = escape(text, &d);
        assert_eq!(escaped, r"a\F\b\S\c\R\d\E\e\T\f\X0D\g\X0A\h");
        assert_eq!(un(&escaped), text);
        assert!(matches!(escape("plain", &d), Cow::Borrowed(_)));
    }

    #[test]
    fn text_beyond_latin1_is_kept() {
        // Found by the `ack` fuzz target: U+FFFD was written as `\P\`.
        let text = "Zoë \u{FFFD} 日本 ✓";
        assert_eq!(escape(text, &Delimiters::STANDARD), text);
        let short = Delimiters {
            escape: None,
            subcomponent: None,
            ..Delimiters::STANDARD
        };
        assert_eq!(escape(text, &short), text);
    }

    #[test]
    fn escaping_without_an_escape_character_blanks_delimiters() {
        let short = Delimiters {
            escape: None,
            subcomponent: None,
            ..Delimiters::STANDARD
        };
        assert_eq!(escape("a|b^c\\d&e", &short), "a b c\\d&e");
    }
}
