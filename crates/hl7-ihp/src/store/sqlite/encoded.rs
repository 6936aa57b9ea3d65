//! The `observations` column read in place: each OBX's fifteen values as slices of the
//! column's JSON, turned into text or numbers only when a read needs them. A marked OBX
//! (`crate::marks`) has a sixteenth, its mark's name; the others (and every row written
//! before marks existed) have fifteen.
//!
//! A trend over a day of one-second vitals reads 600,000 observations; building each one's
//! ten strings (what deserializing the whole array does) would cost most of the read. Here
//! a read that wants a code, a number and a time looks at those three values and skips the
//! others' bytes. The column is what the writer (`serde_json`, compact) or migration 2
//! (SQLite's `json_array`) wrote: an array of arrays of strings, numbers and nulls; the
//! reader also takes whitespace between tokens.

use std::borrow::Cow;
use std::ops::ControlFlow;

use super::ObservationData;

/// Values per observation, in the order migration 2 documents.
const N_FIELDS: usize = 15;

/// The position of each value in an observation's array.
pub(super) mod field {
    pub const VALUE_TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CODE_TEXT: usize = 2;
    pub const CODE_SYSTEM: usize = 3;
    pub const SUB_ID: usize = 4;
    pub const VALUE: usize = 5;
    pub const NUMERIC: usize = 6;
    pub const UNITS: usize = 7;
    pub const UNITS_TEXT: usize = 8;
    pub const REFERENCE_RANGE: usize = 9;
    pub const ABNORMAL_FLAGS: usize = 10;
    pub const STATUS: usize = 11;
    pub const OBSERVED_AT: usize = 12;
    pub const OBSERVED_MS: usize = 13;
    pub const EQUIPMENT: usize = 14;
}

/// The column is not what the writer writes (changed by hand, or damaged). Says where,
/// never what: the column holds patient data.
#[derive(Debug, thiserror::Error)]
#[error("malformed observations column at byte {position}")]
pub(in crate::store) struct Malformed {
    position: usize,
}

/// One observation of the column: each value's JSON token (a string with its quotes, a
/// number, or `null`).
pub(super) struct Encoded<'a> {
    tokens: [&'a [u8]; N_FIELDS],
    /// The optional sixteenth value, the mark's name (a string token).
    mark: Option<&'a [u8]>,
    /// Where the observation starts in the column, for errors.
    position: usize,
}

impl<'a> Encoded<'a> {
    fn malformed(&self) -> Malformed {
        Malformed {
            position: self.position,
        }
    }

    /// A value's JSON text as stored (a string with its quotes): equal texts are equal
    /// values, which a read can compare without decoding (the converse may not hold, so
    /// on a mismatch it compares the decoded values).
    pub(super) fn token(&self, field: usize) -> &'a [u8] {
        self.tokens[field]
    }

    /// A string value, borrowed from the column unless it has escapes.
    pub(super) fn text(&self, field: usize) -> Result<Cow<'a, str>, Malformed> {
        let token = self.tokens[field];
        let inner = string_inner(token).ok_or_else(|| self.malformed())?;
        if !inner.contains(&b'\\') {
            return std::str::from_utf8(inner)
                .map(Cow::Borrowed)
                .map_err(|_| self.malformed());
        }
        serde_json::from_slice::<String>(token)
            .map(Cow::Owned)
            .map_err(|_| self.malformed())
    }

    /// Whether a string value is `wanted`, without building it in the common case.
    pub(super) fn text_is(&self, field: usize, wanted: &str) -> Result<bool, Malformed> {
        let inner = string_inner(self.tokens[field]).ok_or_else(|| self.malformed())?;
        if !inner.contains(&b'\\') {
            return Ok(inner == wanted.as_bytes());
        }
        Ok(self.text(field)? == wanted)
    }

    /// A number value; `None` for `null`.
    pub(super) fn number(&self, field: usize) -> Result<Option<f64>, Malformed> {
        let token = self.tokens[field];
        if token == b"null" {
            return Ok(None);
        }
        if let Some(n) = plain_decimal(token) {
            return Ok(Some(n));
        }
        std::str::from_utf8(token)
            .ok()
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| self.malformed())
    }

    /// An integer value (SQLite may have written a whole number as `1.0e12`).
    pub(super) fn integer(&self, field: usize) -> Result<i64, Malformed> {
        let token = self.tokens[field];
        if let Some(n) = plain_integer(token) {
            return Ok(n);
        }
        let text = std::str::from_utf8(token).map_err(|_| self.malformed())?;
        if let Ok(n) = text.parse::<i64>() {
            return Ok(n);
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() && n.fract() == 0.0 => Ok(n as i64),
            _ => Err(self.malformed()),
        }
    }

    /// The whole observation, the `index`-th of its message.
    pub(super) fn to_data(&self, index: u32) -> Result<ObservationData, Malformed> {
        let text = |field| self.text(field).map(Cow::into_owned);
        Ok(ObservationData {
            index,
            value_type: text(field::VALUE_TYPE)?,
            code: text(field::CODE)?,
            code_text: text(field::CODE_TEXT)?,
            code_system: text(field::CODE_SYSTEM)?,
            sub_id: text(field::SUB_ID)?,
            value: text(field::VALUE)?,
            numeric: self.number(field::NUMERIC)?,
            units: text(field::UNITS)?,
            units_text: text(field::UNITS_TEXT)?,
            reference_range: text(field::REFERENCE_RANGE)?,
            abnormal_flags: text(field::ABNORMAL_FLAGS)?,
            status: text(field::STATUS)?,
            observed_at: text(field::OBSERVED_AT)?,
            observed_ms: self.integer(field::OBSERVED_MS)?,
            equipment: text(field::EQUIPMENT)?,
            mark: self.mark()?,
        })
    }

    /// The observation's mark; a name this version does not know reads as no mark.
    pub(super) fn mark(&self) -> Result<Option<crate::marks::Mark>, Malformed> {
        let Some(token) = self.mark else {
            return Ok(None);
        };
        let inner = string_inner(token).ok_or_else(|| self.malformed())?;
        let name = std::str::from_utf8(inner).map_err(|_| self.malformed())?;
        Ok(crate::marks::Mark::from_name(name))
    }
}

/// A token of at most 18 digits with an optional minus: every time the writer writes, read
/// without the general parser (a trend reads 600,000 of them).
fn plain_integer(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Some(if negative { -n } else { n })
}

/// Powers of ten a double holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal without an exponent and with at most 15 digits (`72.0`, `-0.25`: what
/// vitals are), read without the general parser. The digits make an integer below 2^53
/// and the point a power of ten that a double holds exactly, so one division rounds
/// correctly, as the general parser does.
fn plain_decimal(token: &[u8]) -> Option<f64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let mut mantissa: u64 = 0;
    let mut n_digits = 0;
    let mut decimals = None;
    for (position, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                n_digits += 1;
            }
            b'.' if decimals.is_none() && position > 0 => decimals = Some(position),
            _ => return None,
        }
    }
    if n_digits == 0 || n_digits > 15 || decimals == Some(digits.len() - 1) {
        return None;
    }
    let scale = decimals.map_or(0, |point| digits.len() - 1 - point);
    let value = mantissa as f64 / EXACT_POWERS_OF_TEN[scale];
    Some(if negative { -value } else { value })
}

/// A string token's bytes between its quotes.
fn string_inner(token: &[u8]) -> Option<&[u8]> {
    token.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// Calls `each` with every observation of a column, in order, with its index, until it
/// breaks. Only the array's structure is checked here; a value is checked when read.
pub(super) fn each_observation<'a, E: From<Malformed>>(
    column: &'a [u8],
    mut each: impl FnMut(u32, &Encoded<'a>) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    // What is not in the writer's exact form (whitespace: SQLite's, or a hand's) the
    // general scanner reads, from where the compact reader stopped.
    let mut scanner = Scanner {
        bytes: column,
        at: 0,
    };
    let mut index = 0;
    match compact(column, &mut each)? {
        Compact::Done => return Ok(()),
        Compact::Start => {
            scanner.open()?;
            if scanner.closes()? {
                return Ok(());
            }
        }
        Compact::Observation { at, index: next } => (scanner.at, index) = (at, next),
        Compact::After { at, index: next } => {
            (scanner.at, index) = (at, next);
            if scanner.closes()? {
                return Ok(());
            }
            scanner.comma()?;
        }
    }
    loop {
        let position = scanner.at;
        scanner.open()?;
        let mut tokens: [&[u8]; N_FIELDS] = [&[]; N_FIELDS];
        for (n, token) in tokens.iter_mut().enumerate() {
            if n > 0 {
                scanner.comma()?;
            }
            *token = scanner.scalar()?;
        }
        let mut mark = None;
        if !scanner.closes()? {
            scanner.comma()?;
            mark = Some(scanner.scalar()?);
            if !scanner.closes()? {
                return Err(scanner.malformed().into());
            }
        }
        let encoded = Encoded {
            tokens,
            mark,
            position,
        };
        if each(index, &encoded)?.is_break() {
            return Ok(());
        }
        index = index.saturating_add(1);
        if scanner.closes()? {
            return Ok(());
        }
        scanner.comma()?;
    }
}

/// Which values are bare tokens (numbers or `null`) in the writer's form; the others are
/// strings.
const BARE: [bool; N_FIELDS] = {
    let mut bare = [false; N_FIELDS];
    bare[field::NUMERIC] = true;
    bare[field::OBSERVED_MS] = true;
    bare
};

/// How far [`compact`] got.
enum Compact {
    /// Through the end of the column, or `each` broke.
    Done,
    /// The first observation is not in the writer's form: nothing was read.
    Start,
    /// At the start of an observation (the `index`-th, at byte `at`) not in the writer's
    /// form.
    Observation { at: usize, index: u32 },
    /// After an observation, where what follows is not in the writer's form.
    After { at: usize, index: u32 },
}

/// The column in exactly the form `serde_json` writes it (no whitespace, strings and bare
/// tokens where the writer puts them), read with fewer checks per byte than the general
/// scanner: each string is one search for its end, each separator one comparison. Stops
/// at the first observation in another form, before calling `each` with it.
fn compact<'a, E: From<Malformed>>(
    column: &'a [u8],
    each: &mut impl FnMut(u32, &Encoded<'a>) -> Result<ControlFlow<()>, E>,
) -> Result<Compact, E> {
    let stopped = |at, index| {
        Ok(if index == 0 {
            Compact::Start
        } else {
            Compact::Observation { at, index }
        })
    };
    match column {
        [b'[', b']'] => return Ok(Compact::Done),
        [b'[', ..] => {}
        _ => return Ok(Compact::Start),
    }
    let mut at = 1;
    let mut index = 0u32;
    loop {
        let position = at;
        if column.get(at) != Some(&b'[') {
            return stopped(position, index);
        }
        at += 1;
        let mut tokens: [&[u8]; N_FIELDS] = [&[]; N_FIELDS];
        for (n, token) in tokens.iter_mut().enumerate() {
            let rest = column.get(at..).unwrap_or_default();
            let len = if BARE[n] {
                rest.iter()
                    .position(|&b| b == b',' || b == b']')
                    .filter(|&len| len > 0)
            } else if rest.first() == Some(&b'"') {
                string_len(rest)
            } else {
                None
            };
            let Some(len) = len else {
                return stopped(position, index);
            };
            *token = &rest[..len];
            at += len;
            if n + 1 < N_FIELDS {
                if column.get(at) != Some(&b',') {
                    return stopped(position, index);
                }
                at += 1;
            }
        }
        // Fifteen values, or a sixteenth string (the mark).
        let mut mark = None;
        if column.get(at) == Some(&b',') {
            let rest = column.get(at + 1..).unwrap_or_default();
            let Some(len) = (rest.first() == Some(&b'"'))
                .then(|| string_len(rest))
                .flatten()
            else {
                return stopped(position, index);
            };
            mark = Some(&rest[..len]);
            at += 1 + len;
        }
        if column.get(at) != Some(&b']') {
            return stopped(position, index);
        }
        at += 1;
        let encoded = Encoded {
            tokens,
            mark,
            position,
        };
        if each(index, &encoded)?.is_break() {
            return Ok(Compact::Done);
        }
        index = index.saturating_add(1);
        match column.get(at) {
            Some(b',') => at += 1,
            Some(b']') if at + 1 == column.len() => return Ok(Compact::Done),
            // The general scanner reads on or reports what is wrong.
            _ => return Ok(Compact::After { at, index }),
        }
    }
}

/// The length of the string token at the start of `bytes` (quotes included).
fn string_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        let rest = bytes.get(at..)?;
        // A plain loop rather than memchr: the values are mostly a few bytes long, shorter
        // than what a vectorised search gains on.
        let n = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        if rest[n] == b'"' {
            return Some(at + n + 1);
        }
        // An escape: the next byte is never the string's end.
        at += n + 2;
    }
}

/// One observation in the `observations` column, in the order the migration documents.
pub(in crate::store) type EncodedObservation<S> =
    (S, S, S, S, S, S, Option<f64>, S, S, S, S, S, S, i64, S);

/// An observation as written: its fifteen values, and a marked one's mark after them
/// (`encoded`'s sixteenth value).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Written<'a> {
    Plain(EncodedObservation<&'a str>),
    Marked(
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<f64>,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        i64,
        &'a str,
        &'static str,
    ),
}

/// The column of a message's observations, as both stores write it (`None` without any).
pub(in crate::store) fn encode_observations(observations: &[ObservationData]) -> Option<String> {
    if observations.is_empty() {
        return None;
    }
    let encoded: Vec<Written<'_>> = observations
        .iter()
        .map(|o| {
            // JSON has no infinities; a value that overflowed a double is no number, and a
            // marked value is none either (`crate::marks`).
            let numeric = o.numeric.filter(|n| n.is_finite() && o.mark.is_none());
            let plain = (
                o.value_type.as_str(),
                o.code.as_str(),
                o.code_text.as_str(),
                o.code_system.as_str(),
                o.sub_id.as_str(),
                o.value.as_str(),
                numeric,
                o.units.as_str(),
                o.units_text.as_str(),
                o.reference_range.as_str(),
                o.abnormal_flags.as_str(),
                o.status.as_str(),
                o.observed_at.as_str(),
                o.observed_ms,
                o.equipment.as_str(),
            );
            match o.mark {
                None => Written::Plain(plain),
                Some(mark) => {
                    let (a, b, c, d, e, f, g, h, i, j, k, l, m, n, p) = plain;
                    Written::Marked(a, b, c, d, e, f, g, h, i, j, k, l, m, n, p, mark.name())
                }
            }
        })
        .collect();
    // Strings, numbers and arrays only: serializing cannot fail.
    Some(serde_json::to_string(&encoded).expect("observations serialize"))
}

/// Decodes a whole column: every observation, in order.
pub(in crate::store) fn decode(column: &[u8]) -> Result<Vec<ObservationData>, Malformed> {
    let mut observations = Vec::new();
    each_observation(column, |index, encoded| {
        observations.push(encoded.to_data(index)?);
        Ok::<_, Malformed>(ControlFlow::Continue(()))
    })?;
    Ok(observations)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn malformed(&self) -> Malformed {
        Malformed { position: self.at }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    fn expect(&mut self, wanted: u8) -> Result<(), Malformed> {
        if self.peek() == Some(wanted) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.malformed())
        }
    }

    fn open(&mut self) -> Result<(), Malformed> {
        self.expect(b'[')
    }

    fn comma(&mut self) -> Result<(), Malformed> {
        self.expect(b',')
    }

    /// Consumes a `]` if one comes next.
    fn closes(&mut self) -> Result<bool, Malformed> {
        match self.peek() {
            Some(b']') => {
                self.at += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(self.malformed()),
        }
    }

    /// A string (with its quotes) or a bare token (a number, `null`, `true`, `false`).
    fn scalar(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.at;
        match self.peek() {
            Some(b'"') => {
                let start = self.at;
                let mut at = start + 1;
                // A plain loop rather than memchr: the values are mostly a few bytes long,
                // shorter than what a vectorised search gains on.
                loop {
                    let rest = self.bytes.get(at..).unwrap_or_default();
                    match rest.iter().position(|&b| b == b'"' || b == b'\\') {
                        Some(n) if rest[n] == b'"' => {
                            self.at = at + n + 1;
                            return Ok(&self.bytes[start..self.at]);
                        }
                        // An escape: the next byte is never the string's end.
                        Some(n) => at += n + 2,
                        None => {
                            self.at = start;
                            return Err(self.malformed());
                        }
                    }
                }
            }
            Some(b'[' | b'{' | b']' | b',') | None => Err(Malformed { position: start }),
            Some(_) => {
                let start = self.at;
                let rest = &self.bytes[start..];
                let n = rest
                    .iter()
                    .position(|b| matches!(b, b',' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(rest.len());
                self.at = start + n;
                Ok(&self.bytes[start..self.at])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::encode_observations;
    use super::*;

    fn observation(index: u32, text: &str, numeric: Option<f64>) -> ObservationData {
        ObservationData {
            index,
            value_type: "NM".into(),
            code: text.into(),
            code_text: format!("{text}\"\\/\u{1}é"),
            code_system: String::new(),
            sub_id: "1.1".into(),
            value: "72".into(),
            numeric,
            units: "/min".into(),
            units_text: "\u{2028}".into(),
            reference_range: "50-120".into(),
            abnormal_flags: String::new(),
            status: "F".into(),
            observed_at: "2026-12-01T12:00:00".into(),
            observed_ms: -1_764_590_400_000,
            equipment: "\n\t".into(),
            mark: None,
        }
    }

    #[test]
    fn what_the_writer_writes_reads_back() {
        let observations = vec![
            observation(0, "8867-4", Some(72.0)),
            observation(1, "a\"b", None),
            observation(2, "", Some(-1.5e-300)),
            observation(3, "x", Some(1e300)),
            // Times of 19 digits too.
            ObservationData {
                observed_ms: i64::MIN,
                ..observation(4, "y", None)
            },
            ObservationData {
                observed_ms: i64::MAX,
                ..observation(5, "z", Some(0.0))
            },
        ];
        let column = encode_observations(&observations).unwrap();
        assert_eq!(decode(column.as_bytes()).unwrap(), observations);
    }

    #[test]
    fn what_sqlite_writes_reads_back() {
        let column = r#" [ ["NM" , "1554-5","GLUCOSE","LN","","182",182.0,"mg/dl","","70_105","H","F","2002-02-15T07:30:00",1.0132e12,"EQ"] ] "#;
        let decoded = decode(column.as_bytes()).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].numeric, Some(182.0));
        assert_eq!(decoded[0].observed_ms, 1_013_200_000_000);
        assert!(decode(b"[]").unwrap().is_empty());
    }

    #[test]
    fn a_column_partly_in_another_form_reads_the_same() {
        let observations: Vec<_> = (0..3)
            .map(|n| observation(n, &format!("c{n}"), Some(f64::from(n) + 0.5)))
            .collect();
        let column = encode_observations(&observations).unwrap();
        // Whitespace after the first, inside the second, and at the end.
        let first_end = column.find("],[").unwrap() + 1;
        let spaced = format!("{} ,{} ", &column[..first_end], &column[first_end + 1..]);
        let spaced = spaced.replacen(",\"c1\"", ", \"c1\"", 1);
        for column in [spaced.clone(), format!(" {column}"), format!("{column}\n")] {
            assert_eq!(decode(column.as_bytes()).unwrap(), observations, "{column}");
        }
        assert!(decode(b"[ ]").unwrap().is_empty());
        assert!(decode(b" [] ").unwrap().is_empty());
    }

    #[test]
    fn plain_numbers_read_as_the_general_parser_reads_them() {
        for text in [
            "0",
            "-0",
            "72",
            "72.0",
            "-0.25",
            "98.6",
            "0.1",
            "123456789012345",
            "1.00000000000001",
            "37.299999999999997",
            "1e5",
            "1.5E-3",
            "12345678901234567",
            "-",
            ".5",
            "5.",
            "1.2.3",
        ] {
            assert_eq!(
                plain_decimal(text.as_bytes()).map(f64::to_bits),
                plain_decimal(text.as_bytes()).and(text.parse::<f64>().ok().map(f64::to_bits)),
                "{text}"
            );
        }
        assert_eq!(plain_decimal(b"98.6"), Some(98.6));
        assert_eq!(plain_decimal(b"1e5"), None);
        assert_eq!(plain_decimal(b"5."), None);
        assert_eq!(plain_integer(b"-1800000000000"), Some(-1_800_000_000_000));
        assert_eq!(plain_integer(b"1.0"), None);
    }

    #[test]
    fn a_malformed_column_is_an_error_that_names_a_position_only() {
        for column in [
            "",
            "[",
            "[[\"a\"]]",
            "[[\"a\",\"b\"",
            "{}",
            "[[\"unterminated]]",
            "[[\"NM\",\"c\",\"t\",\"s\",\"\",\"v\",\"x\",\"u\",\"\",\"\",\"\",\"F\",\"t\",1,\"e\"]]",
            "[[\"NM\",\"c\",\"t\",\"s\",\"\",\"v\",null,\"u\",\"\",\"\",\"\",\"F\",\"t\",1,\"e\",\"demo\",\"more\"]]",
            "[[\"NM\",\"c\",\"t\",\"s\",\"\",\"v\",null,\"u\",\"\",\"\",\"\",\"F\",\"t\",1,\"e\"],]",
        ] {
            let error = decode(column.as_bytes()).expect_err(column);
            assert!(
                error
                    .to_string()
                    .starts_with("malformed observations column at byte")
            );
        }
    }

    #[test]
    fn a_mark_is_a_sixteenth_value_only_when_there_is_one() {
        use crate::marks::Mark;
        let mut marked = observation(1, "c1", Some(-999.0));
        marked.mark = Some(Mark::Placeholder);
        let plain = observation(2, "c2", Some(72.0));
        let column = encode_observations(&[marked.clone(), plain.clone()]).unwrap();
        assert!(column.contains(r#","placeholder"]"#), "{column}");
        let decoded = decode(column.as_bytes()).unwrap();
        // The writer drops a marked value's number.
        assert_eq!(decoded[0].mark, Some(Mark::Placeholder));
        assert_eq!(decoded[0].numeric, None);
        assert_eq!(decoded[1], ObservationData { index: 1, ..plain });
        // The general scanner (whitespace) reads the same, and an unknown name is no mark.
        let spaced = column.replace(',', ", ");
        assert_eq!(decode(spaced.as_bytes()).unwrap(), decoded);
        let unknown = column.replace("placeholder", "later");
        assert_eq!(decode(unknown.as_bytes()).unwrap()[0].mark, None);
        let numbered = column.replace(r#""placeholder""#, "7");
        assert!(decode(numbered.as_bytes()).is_err());
    }

    #[test]
    fn a_read_stops_when_asked_and_compares_codes_in_place() {
        let observations: Vec<_> = (0..5)
            .map(|n| observation(n, &format!("c{n}"), Some(f64::from(n))))
            .collect();
        let column = encode_observations(&observations).unwrap();
        let mut seen = Vec::new();
        each_observation(column.as_bytes(), |index, encoded| {
            seen.push((index, encoded.text_is(field::CODE, "c1")?));
            Ok::<_, Malformed>(if index == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
        assert_eq!(seen, [(0, false), (1, true), (2, false)]);
    }

    proptest! {
        #[test]
        fn plain_decimals_read_exactly(mantissa in 0u64..1_000_000_000_000_000, scale in 0usize..16, negative: bool) {
            let digits = mantissa.to_string();
            let text = if scale == 0 || scale >= digits.len() {
                digits
            } else {
                format!("{}.{}", &digits[..digits.len() - scale], &digits[digits.len() - scale..])
            };
            let text = if negative { format!("-{text}") } else { text };
            if let Some(n) = plain_decimal(text.as_bytes()) {
                prop_assert_eq!(n.to_bits(), text.parse::<f64>().unwrap().to_bits(), "{}", text);
            }
        }

        #[test]
        fn any_observations_read_back(
            texts in proptest::collection::vec(any::<String>(), 1..4),
            numeric in proptest::option::of(any::<f64>().prop_filter("finite", |n| n.is_finite())),
            observed_ms in any::<i64>(),
        ) {
            let observations: Vec<_> = texts
                .iter()
                .enumerate()
                .map(|(n, text)| ObservationData {
                    value: text.clone(),
                    observed_ms,
                    ..observation(n as u32, text, numeric)
                })
                .collect();
            let column = encode_observations(&observations).unwrap();
            prop_assert_eq!(decode(column.as_bytes()).unwrap(), observations.clone());
            let mut found = 0;
            each_observation(column.as_bytes(), |index, encoded| {
                if encoded.text_is(field::CODE, &texts[index as usize])? {
                    found += 1;
                }
                Ok::<_, Malformed>(ControlFlow::Continue(()))
            })
            .unwrap();
            prop_assert_eq!(found, texts.len());
        }
    }
}
