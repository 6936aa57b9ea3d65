//! The parser: one pass over the bytes that records where segments and fields are.
//!
//! Rules: delimiters come from MSH-1 and MSH-2 whatever they are;
//! MSH-2 holds 2 to 5 distinct characters; segments end at CR, LF or CRLF; blank lines are
//! skipped; a UTF-8 byte order mark at the very start is ignored; the last segment needs no
//! terminator; a segment id is three letters or digits of any case, the first a letter,
//! kept as sent, but only the upper-case header ids start a message or a batch. Batches
//! (FHS/BHS … BTS/FTS, or several MSH in a row) go through [`parse_batch`].

use memchr::{memchr, memchr2};

use crate::charset::Charset;
use crate::error::{ParseError, ParseErrorKind, Position, SegmentId};
use crate::message::{Ctx, Delimiters, Message, SegmentEntry, Span, is_header_id};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses exactly one message.
///
/// A second `MSH`, or a batch segment, is an error ([`ParseErrorKind::UnexpectedSegment`]);
/// use [`parse_batch`] for input that may hold several messages.
pub fn parse(input: &[u8]) -> Result<Message<'_>, ParseError> {
    check_size(input)?;
    let start = skip_blank_lines(input, skip_bom(input));
    if start >= input.len() {
        return Err(ParseError::new(ParseErrorKind::Empty, at(0, start)));
    }
    let (message, stop) = parse_message_at(input, start, 0)?;
    let stop = skip_blank_lines(input, stop);
    if stop < input.len() {
        let id =
            segment_id(&input[stop..], message.delimiters().field).unwrap_or(SegmentId(*b"MSH"));
        let position = Position {
            segment: message.segment_count() + 1,
            segment_id: Some(id),
            field: None,
            offset: stop,
        };
        return Err(ParseError::new(
            ParseErrorKind::UnexpectedSegment(id),
            position,
        ));
    }
    Ok(message)
}

/// A batch or file: the messages, and the FHS/BHS/BTS/FTS segments around them.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    envelope: Message<'a>,
    messages: Vec<Message<'a>>,
}

impl<'a> Batch<'a> {
    /// The messages in order.
    pub fn messages(&self) -> &[Message<'a>] {
        &self.messages
    }

    /// Takes the messages out.
    pub fn into_messages(self) -> Vec<Message<'a>> {
        self.messages
    }

    /// The FHS, BHS, BTS and FTS segments in the order they came, parsed with the delimiters
    /// of the first FHS or BHS (or of the first message when there is neither). It has no
    /// segments when the input was plain messages.
    pub fn envelope(&self) -> &Message<'a> {
        &self.envelope
    }
}

/// Parses one message, a batch (BHS … BTS), a file (FHS … FTS) or several messages in a row.
pub fn parse_batch(input: &[u8]) -> Result<Batch<'_>, ParseError> {
    check_size(input)?;
    let mut pos = skip_blank_lines(input, skip_bom(input));
    if pos >= input.len() {
        return Err(ParseError::new(ParseErrorKind::Empty, at(0, pos)));
    }
    let mut envelope: Option<Message<'_>> = None;
    let mut messages: Vec<Message<'_>> = Vec::new();
    let mut n_segments = 0usize;
    let mut batch_open = false;
    let mut content_started = false;
    while pos < input.len() {
        let line_end = line_end(input, pos);
        let line = &input[pos..line_end];
        // Every header segment starts with its id and then its field separator.
        let field_separator = line
            .get(3)
            .copied()
            .or_else(|| envelope.as_ref().map(|e| e.delimiters().field))
            .unwrap_or(b'|');
        let id = segment_id(line, field_separator);
        let position = Position {
            segment: n_segments + 1,
            segment_id: id,
            field: None,
            offset: pos,
        };
        match id.as_ref().map(|id| &id.0) {
            Some(id_bytes @ (b"FHS" | b"BHS")) => {
                if id_bytes == b"FHS" {
                    let seen = envelope.as_ref().is_some_and(|e| e.segment_count() > 0);
                    if seen || content_started {
                        return Err(ParseError::new(
                            ParseErrorKind::RepeatedFileHeader,
                            position,
                        ));
                    }
                } else {
                    if batch_open {
                        return Err(ParseError::new(ParseErrorKind::NestedBatchHeader, position));
                    }
                    batch_open = true;
                }
                let (delimiters, rest) = read_header_delimiters(input, pos, line_end, position)?;
                let envelope = envelope.get_or_insert_with(|| {
                    let mut e = Message::empty(input, delimiters);
                    e.span = Span::new(pos, pos);
                    e
                });
                push_segment(envelope, input, pos, line_end, Some(rest), position)?;
                content_started |= id_bytes == b"BHS";
            }
            Some(id_bytes @ (b"BTS" | b"FTS")) => {
                if id_bytes == b"BTS" {
                    batch_open = false;
                }
                let delimiters = messages.last().map(|m| m.delimiters()).unwrap_or_default();
                let envelope = envelope.get_or_insert_with(|| {
                    let mut e = Message::empty(input, delimiters);
                    e.span = Span::new(pos, pos);
                    e
                });
                let rest = pos + 3;
                push_segment(envelope, input, pos, line_end, Some(rest), position)?;
                content_started = true;
            }
            Some(b"MSH") => {
                let (message, stop) = parse_message_at(input, pos, n_segments)?;
                n_segments += message.segment_count();
                messages.push(message);
                content_started = true;
                pos = skip_blank_lines(input, stop);
                continue;
            }
            _ if messages.is_empty() && envelope.is_none() => {
                // Whatever stands first, it is not a header: the same error `parse` gives.
                return Err(ParseError::new(ParseErrorKind::NotAMessage, position));
            }
            Some(_) => {
                return Err(ParseError::new(
                    ParseErrorKind::SegmentOutsideMessage,
                    position,
                ));
            }
            None => {
                return Err(ParseError::new(ParseErrorKind::InvalidSegmentId, position));
            }
        }
        n_segments += 1;
        pos = skip_blank_lines(input, next_line(input, line_end));
    }
    let mut envelope = envelope.unwrap_or_else(|| {
        let delimiters = messages.first().map(|m| m.delimiters()).unwrap_or_default();
        Message::empty(input, delimiters)
    });
    if let Some(last) = envelope.segments.last() {
        envelope.span.end = last.span.end;
    }
    Ok(Batch { envelope, messages })
}

fn check_size(input: &[u8]) -> Result<(), ParseError> {
    if input.len() > u32::MAX as usize {
        return Err(ParseError::new(ParseErrorKind::TooLarge, at(0, 0)));
    }
    Ok(())
}

fn at(segment: usize, offset: usize) -> Position {
    Position {
        segment,
        segment_id: None,
        field: None,
        offset,
    }
}

fn skip_bom(input: &[u8]) -> usize {
    if input.starts_with(BOM) { BOM.len() } else { 0 }
}

/// End of the line that starts at `pos`: the next CR or LF, or the end of the input.
fn line_end(input: &[u8], pos: usize) -> usize {
    memchr2(b'\r', b'\n', &input[pos..]).map_or(input.len(), |i| pos + i)
}

fn next_line(input: &[u8], line_end: usize) -> usize {
    (line_end + 1).min(input.len())
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

/// Skips empty and whitespace-only lines; returns the start of the next line with content.
fn skip_blank_lines(input: &[u8], mut pos: usize) -> usize {
    while pos < input.len() {
        let end = line_end(input, pos);
        if !is_blank(&input[pos..end]) {
            return pos;
        }
        pos = next_line(input, end);
    }
    input.len()
}

/// The id of a segment line, if it is a valid one: three ASCII letters or digits of any
/// case, the first a letter, followed by the field separator or the end of the line.
///
/// HL7 writes segment ids in upper case, but python-hl7 and HAPI take `bar` or `Zxy` as
/// they come, and a device's data is not refused for a cosmetic fault. The id is kept as
/// sent, not upper-cased, so it reads back as the device wrote it. Only the exact
/// upper-case `MSH`, `FHS`, `BHS`, `BTS` and `FTS` start a message or shape a batch: an
/// `msh` line is an ordinary segment of the message it stands in.
fn segment_id(line: &[u8], field_separator: u8) -> Option<SegmentId> {
    let id: [u8; 3] = line.get(..3)?.try_into().ok()?;
    let valid = id[0].is_ascii_alphabetic() && id[1..].iter().all(u8::is_ascii_alphanumeric);
    let ends = match line.get(3) {
        None => true,
        Some(&b) => b == field_separator || b == b'\r' || b == b'\n',
    };
    (valid && ends).then_some(SegmentId(id))
}

fn valid_delimiter(b: u8) -> bool {
    b.is_ascii_punctuation()
}

/// Reads MSH-1 and MSH-2 (or FHS/BHS) of the header line at `pos..line_end`; returns the
/// delimiters and the offset just after MSH-2.
fn read_header_delimiters(
    input: &[u8],
    pos: usize,
    line_end: usize,
    position: Position,
) -> Result<(Delimiters, usize), ParseError> {
    let line = &input[pos..line_end];
    let error = |kind, field: usize, offset: usize| {
        ParseError::new(
            kind,
            Position {
                field: Some(field),
                offset,
                ..position
            },
        )
    };
    let Some(&field_separator) = line.get(3) else {
        return Err(error(ParseErrorKind::HeaderTooShort, 1, pos + line.len()));
    };
    if !valid_delimiter(field_separator) {
        return Err(error(ParseErrorKind::InvalidDelimiter, 1, pos + 3));
    }
    let encoding = &line[4..];
    let n = memchr(field_separator, encoding).unwrap_or(encoding.len());
    let encoding = &encoding[..n];
    match n {
        0 => return Err(error(ParseErrorKind::MissingEncodingCharacters, 2, pos + 4)),
        2..=5 => {}
        _ => {
            return Err(error(
                ParseErrorKind::EncodingCharactersLength(n),
                2,
                pos + 4,
            ));
        }
    }
    for (i, &c) in encoding.iter().enumerate() {
        if !valid_delimiter(c) {
            return Err(error(ParseErrorKind::InvalidDelimiter, 2, pos + 4 + i));
        }
        if c == field_separator || encoding[..i].contains(&c) {
            return Err(error(ParseErrorKind::DuplicateDelimiter, 2, pos + 4 + i));
        }
    }
    let delimiters = Delimiters {
        field: field_separator,
        component: encoding[0],
        repetition: encoding[1],
        escape: encoding.get(2).copied(),
        subcomponent: encoding.get(3).copied(),
        truncation: encoding.get(4).copied(),
    };
    Ok((delimiters, pos + 4 + n))
}

/// Records one segment line. `fixed_end` is where the fields split on the field separator
/// start: after MSH-2 for header segments, after the id otherwise.
fn push_segment(
    message: &mut Message<'_>,
    input: &[u8],
    pos: usize,
    line_end: usize,
    fixed_end: Option<usize>,
    position: Position,
) -> Result<(), ParseError> {
    let field_separator = message.ctx.delimiters.field;
    let Some(id) = segment_id(&input[pos..line_end], field_separator) else {
        return Err(ParseError::new(ParseErrorKind::InvalidSegmentId, position));
    };
    let header = is_header_id(id) && fixed_end.is_some_and(|end| end > pos + 3);
    let first_field = message.fields.len();
    message.fields.push(Span::new(pos, pos + 3));
    let mut rest = pos + 3;
    if header {
        message.fields.push(Span::new(pos + 3, pos + 4));
        let msh2_end = fixed_end.unwrap_or(pos + 4);
        message.fields.push(Span::new(pos + 4, msh2_end));
        rest = msh2_end;
    }
    if rest < line_end {
        // input[rest] is the field separator.
        // A plain loop: fields are short, and restarting a vectorised search at every
        // separator costs more than looking at each byte once.
        let base = rest + 1;
        let mut field_start = base;
        for (at, &byte) in input[base..line_end].iter().enumerate() {
            if byte == field_separator {
                let end = base + at;
                message.fields.push(Span::new(field_start, end));
                field_start = end + 1;
            }
        }
        message.fields.push(Span::new(field_start, line_end));
    }
    message.segments.push(SegmentEntry {
        id,
        span: Span::new(pos, line_end),
        first_field: first_field as u32,
        n_fields: (message.fields.len() - first_field) as u32,
        header,
    });
    Ok(())
}

/// Parses the message whose MSH line starts at `start`; stops before the next MSH or batch
/// segment and returns where it stopped.
fn parse_message_at(
    input: &[u8],
    start: usize,
    segment_base: usize,
) -> Result<(Message<'_>, usize), ParseError> {
    let first_end = line_end(input, start);
    let first_line = &input[start..first_end];
    let position = Position {
        segment: segment_base + 1,
        segment_id: None,
        field: None,
        offset: start,
    };
    if !first_line.starts_with(b"MSH") {
        return Err(ParseError::new(ParseErrorKind::NotAMessage, position));
    }
    let position = Position {
        segment_id: Some(SegmentId(*b"MSH")),
        ..position
    };
    let (delimiters, msh2_end) = read_header_delimiters(input, start, first_end, position)?;
    let mut message = Message::empty(input, delimiters);
    // Typical messages have about one field per 8 bytes and one segment per 80; a batch's
    // later messages are not counted, so cap the guess.
    let expected = input.len().saturating_sub(start).min(64 * 1024);
    message.fields.reserve(expected / 8 + 16);
    message.segments.reserve(expected / 80 + 4);
    push_segment(
        &mut message,
        input,
        start,
        first_end,
        Some(msh2_end),
        position,
    )?;
    let mut pos = next_line(input, first_end);
    let mut end = first_end;
    while pos < input.len() {
        let line_end = line_end(input, pos);
        let line = &input[pos..line_end];
        if is_blank(line) {
            pos = next_line(input, line_end);
            continue;
        }
        let position = Position {
            segment: segment_base + message.segments.len() + 1,
            segment_id: segment_id(line, delimiters.field),
            field: None,
            offset: pos,
        };
        if let Some(id) = position.segment_id
            && matches!(&id.0, b"MSH" | b"BHS" | b"FHS" | b"BTS" | b"FTS")
        {
            break;
        }
        push_segment(&mut message, input, pos, line_end, None, position)?;
        end = line_end;
        pos = next_line(input, line_end);
    }
    message.span = Span::new(start, end);
    let msh18 = message
        .segment_at(0)
        .map(|msh| msh.field(18).repetition(1).raw())
        .unwrap_or(b"");
    let choice = Charset::from_msh18(msh18);
    let body = &input[start..end];
    // Which optional delimiters occur at all after MSH-2: most device messages use none of
    // them, and then values need no unescaping and fields no splitting into repetitions.
    let after_msh2 = &input[msh2_end.min(end)..end];
    let occurs = |byte: Option<u8>| byte.is_some_and(|b| memchr(b, after_msh2).is_some());
    message.ctx = Ctx {
        delimiters,
        charset: choice.charset,
        has_escape: occurs(delimiters.escape),
        has_repetition: occurs(Some(delimiters.repetition)),
        has_subcomponent: occurs(delimiters.subcomponent),
    };
    message.charset_known = choice.known;
    // One validation for the whole message instead of one per value read.
    let reads_as_utf8 =
        matches!(choice.charset, Charset::Default | Charset::Utf8) || body.is_ascii();
    if reads_as_utf8 {
        message.text = std::str::from_utf8(body).ok();
        message.text_base = start;
    }
    Ok((message, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLUCOSE: &[u8] = b"MSH|^~|GHH LAB|ELAB-3|GHH OE|BLDG4|200202150930||ORU^R01|CNTRL-3456|P|2.4\rPID|||555-44-4444||EVERYWOMAN^EVE^E^^^^L|JONES|196203520|F\rOBX|1|SN|1554-5^GLUCOSE||^182|mg/dl|70_105|H|||F\r";

    fn kind(input: &[u8]) -> ParseErrorKind {
        parse(input).expect_err("should not parse").kind
    }

    #[test]
    fn short_msh2_makes_backslash_and_ampersand_text() {
        let message = parse(b"MSH|^~|A\\B&C|X\rPID|1||a&b^c\\T\\d").unwrap();
        let d = message.delimiters();
        assert_eq!((d.escape, d.subcomponent), (None, None));
        assert_eq!(message.get("MSH-3").unwrap(), b"A\\B&C");
        assert_eq!(message.get_text("PID-3.2").unwrap(), "c\\T\\d");
        assert_eq!(message.get("PID-3.1.1").unwrap(), b"a&b");
        assert_eq!(message.get("MSH-2").unwrap(), b"^~");
    }

    #[test]
    fn terminators_blank_lines_and_bom() {
        for input in [
            &b"MSH|^~\\&|A\rPID|1\rOBX|1"[..],
            b"MSH|^~\\&|A\nPID|1\nOBX|1\n",
            b"MSH|^~\\&|A\r\nPID|1\r\n\r\nOBX|1\r\n",
            b"\xEF\xBB\xBFMSH|^~\\&|A\r\rPID|1\n  \nOBX|1\r",
            b"\n\nMSH|^~\\&|A\rPID|1\rOBX|1",
        ] {
            let message = parse(input).unwrap();
            let ids: Vec<_> = message.segments().map(|s| s.id().to_string()).collect();
            assert_eq!(ids, ["MSH", "PID", "OBX"], "{input:?}");
            assert_eq!(message.get("MSH-3").unwrap(), b"A");
        }
    }

    #[test]
    fn fields_components_and_repetitions() {
        let message = parse(GLUCOSE).unwrap();
        assert_eq!(message.get("MSH-1").unwrap(), b"|");
        assert_eq!(message.get("MSH-9.2").unwrap(), b"R01");
        assert_eq!(message.get("MSH-10").unwrap(), b"CNTRL-3456");
        assert_eq!(message.get("PID-5.2").unwrap(), b"EVE");
        assert_eq!(message.get("OBX-5.2").unwrap(), b"182");
        assert_eq!(message.get("MSH-20").unwrap(), b"");
        assert!(message.get("ZZZ-1").is_none());
        let msh = message.segment("MSH").unwrap();
        assert_eq!(msh.field_count(), 12);
        let pid = message.segment("PID").unwrap();
        assert_eq!(pid.field(5).repetitions().count(), 1);
        assert_eq!(pid.field(5).repetition(1).components().count(), 7);
    }

    #[test]
    fn encoding_character_errors() {
        assert_eq!(kind(b"MSH|||||"), ParseErrorKind::MissingEncodingCharacters);
        assert_eq!(
            kind(b"MSH|^~\\&#$|A"),
            ParseErrorKind::EncodingCharactersLength(6)
        );
        assert_eq!(
            kind(b"MSH|^|A"),
            ParseErrorKind::EncodingCharactersLength(1)
        );
        assert_eq!(kind(b"MSH|^&&^|A"), ParseErrorKind::DuplicateDelimiter);
        assert_eq!(
            kind(b"MSH|^|~&|A"),
            ParseErrorKind::EncodingCharactersLength(1)
        );
        assert_eq!(kind(b"MSHA^~\\&A"), ParseErrorKind::InvalidDelimiter);
        assert_eq!(kind(b"MSH"), ParseErrorKind::HeaderTooShort);
        assert_eq!(kind(b"PID|1"), ParseErrorKind::NotAMessage);
        assert_eq!(kind(b""), ParseErrorKind::Empty);
        assert_eq!(kind(b"\r\n \r"), ParseErrorKind::Empty);
        let error = parse(b"MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B").unwrap_err();
        assert_eq!(
            error.kind,
            ParseErrorKind::UnexpectedSegment(SegmentId(*b"MSH"))
        );
        assert_eq!(error.position.segment, 3);
        assert_eq!(error.position.offset, 17);
    }

    #[test]
    fn segment_ids_of_any_case_are_kept_as_sent() {
        let message = parse(b"MSH|^~\\&|A\rbar|1|x\rZxy|2\rOBX|1").unwrap();
        let ids: Vec<_> = message.segments().map(|s| s.id().to_string()).collect();
        assert_eq!(ids, ["MSH", "bar", "Zxy", "OBX"]);
        let bar = message.segment("bar").unwrap();
        assert_eq!(bar.id(), SegmentId(*b"bar"));
        assert_eq!(bar.field(2).raw(), b"x");
        // Kept as sent, so an upper-case lookup does not find it.
        assert!(message.segment("BAR").is_none());
        // python-hl7's own samples: a bare `bar` line after the header, CRLF and LF.
        for input in [&b"MSH|^~\\&|foo\r\nbar\r\n"[..], b"MSH|^~\\&|foo\nbar\n"] {
            let message = parse(input).unwrap();
            assert_eq!(message.segment_at(1).unwrap().id().as_str(), "bar");
        }
    }

    #[test]
    fn only_upper_case_header_ids_start_a_message_or_batch() {
        // A lower-case `msh` is an ordinary segment: its fields split at every separator.
        let message = parse(b"MSH|^~\\&|A\rmsh|^~\\&|B").unwrap();
        assert_eq!(message.segment_count(), 2);
        let msh = message.segment_at(1).unwrap();
        assert_eq!(msh.id().as_str(), "msh");
        assert_eq!(msh.field(1).raw(), b"^~\\&");
        assert_eq!(msh.field(2).raw(), b"B");
        assert_eq!(kind(b"msh|^~\\&|A"), ParseErrorKind::NotAMessage);
        let batch_kind = |input: &[u8]| parse_batch(input).unwrap_err().kind;
        assert_eq!(batch_kind(b"msh|^~\\&|A"), ParseErrorKind::NotAMessage);
        assert_eq!(batch_kind(b"bhs|^~\\&|A"), ParseErrorKind::NotAMessage);
        // A lower-case `bts` does not close the batch: it belongs to the message before it.
        let batch = parse_batch(b"BHS|^~\\&|B\rMSH|^~\\&|1\rbts|1").unwrap();
        let ids: Vec<_> = batch.messages()[0]
            .segments()
            .map(|s| s.id().to_string())
            .collect();
        assert_eq!(ids, ["MSH", "bts"]);
        assert_eq!(batch.envelope().segment_count(), 1);
    }

    #[test]
    fn segment_ids_not_three_letters_or_digits_are_errors() {
        for input in [
            &b"MSH|^~\\&|A\rb@r|1"[..],
            b"MSH|^~\\&|A\rba|1",
            b"MSH|^~\\&|A\rba",
            b"MSH|^~\\&|A\rbarr|1",
            b"MSH|^~\\&|A\rbar r|1",
            b"MSH|^~\\&|A\r\xC3\xA9ab|1",
            // The first character stays a letter, as every HL7 id (and every Z id) has one.
            b"MSH|^~\\&|A\r0ab|1",
        ] {
            let error = parse(input).unwrap_err();
            assert_eq!(error.kind, ParseErrorKind::InvalidSegmentId, "{input:?}");
            assert_eq!(error.position.segment, 2, "{input:?}");
        }
    }

    #[test]
    fn truncation_character_is_read() {
        let message = parse(b"MSH|^~\\&#|A|B||||RSP^K22|1|P|2.7").unwrap();
        assert_eq!(message.delimiters().truncation, Some(b'#'));
        assert_eq!(message.get("MSH-2").unwrap(), b"^~\\&#");
    }

    #[test]
    fn batches_yield_their_messages() {
        let input = b"FHS|^~\\&|F\rBHS|^~\\&|B\rMSH|^~\\&|1\rPID|1\rMSH|^~\\&|2\rBTS|2\rFTS|1";
        let batch = parse_batch(input).unwrap();
        assert_eq!(batch.messages().len(), 2);
        assert_eq!(batch.messages()[1].get("MSH-3").unwrap(), b"2");
        let envelope = batch.envelope();
        let ids: Vec<_> = envelope.segments().map(|s| s.id().to_string()).collect();
        assert_eq!(ids, ["FHS", "BHS", "BTS", "FTS"]);
        assert_eq!(envelope.get("BHS-3").unwrap(), b"B");
        assert_eq!(envelope.get("BTS-1").unwrap(), b"2");
        assert_eq!(parse(input).unwrap_err().kind, ParseErrorKind::NotAMessage);
        let plain = parse_batch(GLUCOSE).unwrap();
        assert_eq!(plain.messages().len(), 1);
        assert_eq!(plain.envelope().segment_count(), 0);
    }

    #[test]
    fn batch_structure_errors() {
        let kind = |input: &[u8]| parse_batch(input).unwrap_err().kind;
        assert_eq!(
            kind(b"BHS|^~\\&|B\rPID|1\rBTS|1"),
            ParseErrorKind::SegmentOutsideMessage
        );
        assert_eq!(
            kind(b"BHS|^~\\&|B\rMSH|^~\\&|1\rBHS|^~\\&|C\rBTS|1"),
            ParseErrorKind::NestedBatchHeader
        );
        assert_eq!(
            kind(b"FHS|^~\\&|F\rMSH|^~\\&|1\rFHS|^~\\&|G"),
            ParseErrorKind::RepeatedFileHeader
        );
        assert_eq!(kind(b"PID|^~\\&|x"), ParseErrorKind::NotAMessage);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"MSH|^~\\&\r\nPIDOBX0123#\xEF\xBB\xBF";
        for _ in 0..20_000 {
            let mut input = b"MSH|".to_vec();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            for i in 0..len {
                input.push(alphabet[((seed >> (i % 50)) as usize + i) % alphabet.len()]);
            }
            if let Ok(message) = parse(&input) {
                for segment in message.segments() {
                    for field in segment.fields() {
                        for repetition in field.repetitions() {
                            for component in repetition.components() {
                                let _ = component.text();
                            }
                        }
                    }
                }
            }
            let _ = parse_batch(&input);
        }
    }
}
