//! HL7 paths such as `PID-5.1`, `OBX[2]-3.1` and `PID-3[2].4`.
//!
//! `SEG[occurrence]-field[repetition].component.subcomponent`, every number 1-based; the
//! occurrence defaults to 1. Without a repetition or component the path names the whole
//! field; a component without a repetition is read from the first repetition.
//!
//! Path segment ids are upper case, as HL7 writes them, so that a mistyped `pid-5` is an
//! error and not a silent miss. A segment a device sent with a lower-case id (which the
//! parser keeps as sent) is reached with [`crate::Message::segment`] instead.

use std::fmt;
use std::str::FromStr;

use crate::error::SegmentId;

/// A parsed HL7 path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// The segment id.
    pub segment: SegmentId,
    /// Which occurrence of the segment, 1-based.
    pub occurrence: usize,
    /// The field number, 1-based (MSH-1 is the field separator).
    pub field: usize,
    /// The repetition, 1-based, when given.
    pub repetition: Option<usize>,
    /// The component, 1-based, when given.
    pub component: Option<usize>,
    /// The subcomponent, 1-based, when given (only with a component).
    pub subcomponent: Option<usize>,
}

/// Why a path did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid HL7 path: {0}")]
pub struct PathError(&'static str);

impl FromStr for Path {
    type Err = PathError;

    fn from_str(text: &str) -> Result<Self, PathError> {
        let (segment_part, rest) = text
            .split_once('-')
            .ok_or(PathError("expected SEG-field"))?;
        let (id, occurrence) = split_index(segment_part)?;
        let id: [u8; 3] = id
            .as_bytes()
            .try_into()
            .map_err(|_| PathError("segment id must have three characters"))?;
        if !id
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(PathError("segment id must be upper-case letters or digits"));
        }
        let mut parts = rest.split('.');
        let (field, repetition) = split_index(parts.next().unwrap_or(""))?;
        let field = number(field)?;
        let component = parts.next().map(number).transpose()?;
        let subcomponent = parts.next().map(number).transpose()?;
        if parts.next().is_some() {
            return Err(PathError("too many parts"));
        }
        Ok(Path {
            segment: SegmentId(id),
            occurrence: occurrence.unwrap_or(1),
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

/// Splits `NAME[n]` into the name and n.
fn split_index(text: &str) -> Result<(&str, Option<usize>), PathError> {
    match text.split_once('[') {
        None => Ok((text, None)),
        Some((name, index)) => {
            let index = index
                .strip_suffix(']')
                .ok_or(PathError("unclosed bracket"))?;
            Ok((name, Some(number(index)?)))
        }
    }
}

fn number(text: &str) -> Result<usize, PathError> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(PathError("numbers are 1-based integers")),
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.occurrence != 1 {
            write!(f, "[{}]", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(repetition) = self.repetition {
            write!(f, "[{repetition}]")?;
        }
        if let Some(component) = self.component {
            write!(f, ".{component}")?;
        }
        if let Some(subcomponent) = self.subcomponent {
            write!(f, ".{subcomponent}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_print() {
        for text in ["PID-5.1", "OBX[2]-3.1", "PID-3[2].4", "MSH-9", "PID-3.2.1"] {
            let path: Path = text.parse().unwrap();
            assert_eq!(path.to_string(), text);
        }
        let path: Path = "OBX[2]-3[1].1.2".parse().unwrap();
        assert_eq!(path.occurrence, 2);
        assert_eq!(path.field, 3);
        assert_eq!(path.repetition, Some(1));
        assert_eq!((path.component, path.subcomponent), (Some(1), Some(2)));
    }

    #[test]
    fn bad_paths_are_errors() {
        for text in [
            "",
            "PID",
            "PID-0",
            "PID-x",
            "pid-1",
            "PIDX-1",
            "PID[0]-1",
            "PID-1.2.3.4",
            "PID-1[2",
        ] {
            assert!(text.parse::<Path>().is_err(), "{text}");
        }
    }
}
