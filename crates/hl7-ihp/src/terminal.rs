//! Text from devices made safe to print: control characters escaped, overlong values cut.
//!
//! A device chooses every byte of a patient id, a name or a control id, and a terminal obeys
//! some of them: ESC starts a sequence that can clear the screen, retitle the window or
//! redraw a line, BEL rings, a C1 CSI (U+009B) works like ESC `[` on some terminals, and
//! bidirectional overrides (U+202E) show text in another order than it is. Everything the
//! commands print that came from outside goes through [`escape`] or [`cell`]:
//!
//! - tab, line feed and carriage return become `\t`, `\n`, `\r`; every other C0 control and
//!   DEL become `\xNN` (ESC is `\x1b`); C1 controls and the bidirectional controls become
//!   `\u{NNNN}` (Rust's spelling);
//! - a backslash stays as it is: HL7 text is full of them (`\F\`, `^~\&`), and doubling
//!   them would make every message harder to read. The output is for reading, not for
//!   parsing back;
//! - [`cell`] also cuts a value to a column's width, ending it with `…`, so that a
//!   5,000-byte id does not make a 5,000-column table.
//!
//! Pure functions: the commands (and the sender's per-message lines) do the printing.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Widest patient id or control id a table shows.
pub const ID_WIDTH: usize = 40;
/// Widest name or sender a table shows.
pub const NAME_WIDTH: usize = 40;
/// Widest reason (a parse error) a table shows.
pub const REASON_WIDTH: usize = 60;

/// True for the characters a terminal may act on instead of showing.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if needs_escape(c) && u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// How many characters `c` takes once escaped.
fn escaped_width(c: char) -> usize {
    if !needs_escape(c) {
        1
    } else if matches!(c, '\t' | '\n' | '\r') {
        2
    } else if u32::from(c) < 0x80 {
        4
    } else {
        // `\u{` + hex digits + `}`
        4 + format!("{:x}", u32::from(c)).len()
    }
}

/// `text` with every control character escaped; borrowed when there is none (the usual case).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` escaped and, when longer than `width` characters, cut to `width` with a final `…`.
/// An escape is never cut in half.
pub fn cell(text: &str, width: usize) -> Cow<'_, str> {
    let total: usize = text.chars().map(escaped_width).sum();
    if total <= width {
        return escape(text);
    }
    let room = width.saturating_sub(1);
    let mut out = String::with_capacity(width + 8);
    let mut used = 0;
    for c in text.chars() {
        let w = escaped_width(c);
        if used + w > room {
            break;
        }
        push_escaped(&mut out, c);
        used += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// The width of a column holding `values` as [`cell`]s: the widest, at least `min` (the
/// header) and at most `max`.
pub fn column_width<'a>(
    values: impl IntoIterator<Item = &'a str>,
    min: usize,
    max: usize,
) -> usize {
    values
        .into_iter()
        .map(|v| v.chars().map(escaped_width).sum::<usize>())
        .max()
        .unwrap_or(0)
        .clamp(min, max.max(min))
}

/// A message body as lines to print: its segments (ended by CR, LF or CRLF) one per line,
/// blank ones left out, everything else escaped. Invalid UTF-8 shows as U+FFFD.
pub fn body_lines(raw: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .split(['\r', '\n'])
        .filter(|line| !line.is_empty())
        .map(|line| escape(line).into_owned())
        .collect()
}

/// JSON text with DEL, the C1 controls and the bidirectional controls written as `\uXXXX`:
/// serde_json escapes only U+0000–U+001F, `"` and `\`. The same JSON value: these characters
/// occur only inside strings, where the escape means the same character (the C0 characters
/// left are the layout's own line breaks).
pub fn json_text(json: &[u8]) -> Cow<'_, [u8]> {
    let Ok(text) = std::str::from_utf8(json) else {
        return Cow::Borrowed(json);
    };
    let escaped = |c: char| u32::from(c) >= 0x7F && needs_escape(c);
    if !text.chars().any(escaped) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("Åsa Lindqvist"), "Åsa Lindqvist");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\x1b[2J\x07\0\t\r\n\x7f\u{9b}\u{202e}b\\F\\"),
            "a\\x1b[2J\\x07\\x00\\t\\r\\n\\x7f\\u{9b}\\u{202e}b\\F\\"
        );
    }

    #[test]
    fn cells_are_cut_with_an_ellipsis_and_never_inside_an_escape() {
        assert_eq!(cell("short", 10), "short");
        assert_eq!(cell(&"X".repeat(5_000), 40).chars().count(), 40);
        assert!(cell(&"X".repeat(5_000), 40).ends_with("XX…"));
        // `ab\x1b` is 6 wide: the ellipsis takes the place of the whole escape.
        assert_eq!(cell("ab\x1bcdef", 6), "ab…");
        assert_eq!(cell("ab\x1b", 6), "ab\\x1b");
        for width in 0..12 {
            let cut = cell("\x1b\x1b\x1b\x1b", width);
            assert!(cut.chars().count() <= width.max(1), "{width}: {cut}");
        }
    }

    #[test]
    fn column_width_is_bounded() {
        assert_eq!(column_width(["a", "bcd"], 2, 40), 3);
        assert_eq!(column_width(["a"], 7, 40), 7);
        assert_eq!(column_width([&*"X".repeat(500)], 7, 40), 40);
        assert_eq!(column_width(["\x1b"], 1, 40), 4);
    }

    #[test]
    fn bodies_keep_segments_as_lines() {
        assert_eq!(
            body_lines(b"MSH|^~\\&|A\x1b\rPID|||1\r\n\nOBX|1\x07"),
            ["MSH|^~\\&|A\\x1b", "PID|||1", "OBX|1\\x07"]
        );
    }

    #[test]
    fn json_stays_the_same_value() {
        let value = serde_json::json!({"name": "a\u{7f}b\u{9b}c\u{1b}\u{202e}", "n": 1});
        let text = serde_json::to_vec_pretty(&value).unwrap();
        let safe = json_text(&text);
        assert!(
            !String::from_utf8_lossy(&safe)
                .chars()
                .any(|c| c != '\n' && needs_escape(c))
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&safe).unwrap(),
            value
        );
    }
}
