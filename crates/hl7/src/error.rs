//! Typed parse errors that say where the input went wrong, without quoting its data.

use std::fmt;

/// A three-byte segment id such as `MSH` or `OBX`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub [u8; 3]);

impl SegmentId {
    /// The id as text; the parser only makes ids of ASCII letters and digits, of any case.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({})", self.as_str())
    }
}

/// Where in the input a problem was found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based index of the segment within the message (or batch), 0 before the first.
    pub segment: usize,
    /// The segment's id, when it has a valid one.
    pub segment_id: Option<SegmentId>,
    /// The HL7 field number (MSH-1 is the field separator), when the problem is in a field.
    pub field: Option<usize>,
    /// Byte offset from the start of the input.
    pub offset: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segment > 0 {
            write!(f, "segment {}", self.segment)?;
            if let Some(id) = self.segment_id {
                write!(f, " ({id})")?;
            }
            if let Some(field) = self.field {
                write!(f, ", field {field}")?;
            }
            write!(f, ", ")?;
        }
        write!(f, "byte {}", self.offset)
    }
}

/// What is wrong with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Nothing but blank lines (or nothing at all).
    Empty,
    /// The input is larger than 4 GiB, beyond what the offset index can address.
    TooLarge,
    /// The first segment is not `MSH` (or, for a batch, not `MSH`, `FHS` or `BHS`).
    NotAMessage,
    /// The header segment ends before its field separator and encoding characters.
    HeaderTooShort,
    /// MSH-2 (or FHS-2, BHS-2) is empty.
    MissingEncodingCharacters,
    /// MSH-2 holds this many characters; 2 to 5 are allowed.
    EncodingCharactersLength(usize),
    /// The same character serves as two delimiters.
    DuplicateDelimiter,
    /// A delimiter is a letter, a digit, a space, a control character or a line end.
    InvalidDelimiter,
    /// A segment id is not three ASCII letters or digits (of any case) starting with a
    /// letter, followed by the field separator or the end of the line.
    InvalidSegmentId,
    /// A segment that cannot stand here: a second `MSH` or a batch segment given to
    /// [`crate::parse`], which reads exactly one message (use [`crate::parse_batch`]).
    UnexpectedSegment(SegmentId),
    /// A batch holds a segment other than FHS, BHS, BTS or FTS outside any message.
    SegmentOutsideMessage,
    /// A second `BHS` while a batch is still open (no `BTS` in between).
    NestedBatchHeader,
    /// A second `FHS`, or an `FHS` after the file's content has started.
    RepeatedFileHeader,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no HL7 data"),
            Self::TooLarge => f.write_str("input larger than 4 GiB"),
            Self::NotAMessage => f.write_str("does not start with an MSH segment"),
            Self::HeaderTooShort => f.write_str(
                "header segment too short for its field separator and encoding characters",
            ),
            Self::MissingEncodingCharacters => f.write_str("encoding characters missing"),
            Self::EncodingCharactersLength(n) => {
                write!(f, "{n} encoding characters where 2 to 5 are allowed")
            }
            Self::DuplicateDelimiter => {
                f.write_str("the same character is used for two delimiters")
            }
            Self::InvalidDelimiter => {
                f.write_str("delimiter is a letter, digit, space, control character or line end")
            }
            Self::InvalidSegmentId => f.write_str("segment id is not three letters or digits"),
            Self::UnexpectedSegment(id) => write!(f, "unexpected {id} segment"),
            Self::SegmentOutsideMessage => {
                f.write_str("segment outside any message (no MSH before it)")
            }
            Self::NestedBatchHeader => f.write_str("batch cannot have more than one BHS segment"),
            Self::RepeatedFileHeader => f.write_str("file cannot have more than one FHS segment"),
        }
    }
}

/// A parse failure: what and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {position}")]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Where it is.
    pub position: Position,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, position: Position) -> Self {
        Self { kind, position }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_position_without_data() {
        let error = ParseError::new(
            ParseErrorKind::InvalidDelimiter,
            Position {
                segment: 1,
                segment_id: Some(SegmentId(*b"MSH")),
                field: Some(2),
                offset: 5,
            },
        );
        assert_eq!(
            error.to_string(),
            "delimiter is a letter, digit, space, control character or line end at segment 1 (MSH), field 2, byte 5"
        );
        let error = ParseError::new(ParseErrorKind::Empty, Position::default());
        assert_eq!(error.to_string(), "no HL7 data at byte 0");
    }
}
