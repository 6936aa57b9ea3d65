//! HL7 acknowledgements: which one a message asks for (original or enhanced mode, MSH-15/16)
//! and its bytes (docs/acks.md).
//!
//! The ACK answers in the sender's delimiters, swaps MSH-3/4 with MSH-5/6, carries
//! `ACK^<trigger>^ACK`, MSH-11 and MSH-12 of the original, a fresh MSH-10 and MSA-2 = the
//! original MSH-10. An error is reported in ERR: ERR-2/3/4 (and ERR-8 for the text) from
//! v2.5 on, ERR-1 and MSA-3 before. This module reads no clock: the caller passes the time
//! and the fresh control id.

use std::fmt;

use crate::error::{ParseError, SegmentId};
use crate::escape::escape;
use crate::message::{Delimiters, Message};

/// The acknowledgment code of MSA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Original mode: accepted.
    AA,
    /// Original mode: error.
    AE,
    /// Original mode: rejected.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The two letters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AA => "AA",
            Self::AE => "AE",
            Self::AR => "AR",
            Self::CA => "CA",
            Self::CE => "CE",
            Self::CR => "CR",
        }
    }

    /// The outcome this code reports.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::AA | Self::CA => Outcome::Accept,
            Self::AE | Self::CE => Outcome::Error,
            Self::AR | Self::CR => Outcome::Reject,
        }
    }

    /// Reads MSA-1.
    pub fn parse(text: &str) -> Option<AckCode> {
        Some(match text.trim() {
            "AA" => Self::AA,
            "AE" => Self::AE,
            "AR" => Self::AR,
            "CA" => Self::CA,
            "CE" => Self::CE,
            "CR" => Self::CR,
            _ => return None,
        })
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The family of an answer, decided before the mode picks the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Stored durably, or a retransmission of a stored message.
    Accept,
    /// The message is wrong (a required field is missing).
    Error,
    /// The message cannot be taken now or here (store down, type not allowed, unreadable).
    Reject,
}

/// How the receiver answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// Original mode when MSH-15 and MSH-16 are empty, enhanced mode otherwise.
    #[default]
    Auto,
    /// Original mode for every message, for devices that expect AA whatever their MSH-15 says.
    Original,
}

/// When an enhanced-mode field asks for an acknowledgment (HL7 table 0155).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCondition {
    /// `AL`: always.
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: on error or reject.
    OnError,
    /// `SU`: on success.
    OnSuccess,
}

impl AckCondition {
    /// Reads MSH-15 or MSH-16: `None` when empty. A value outside table 0155 counts as `AL`,
    /// since a device that gets no answer retransmits forever.
    pub fn parse(text: &str) -> Option<AckCondition> {
        Some(match text.trim() {
            "" => return None,
            "NE" => Self::Never,
            "ER" => Self::OnError,
            "SU" => Self::OnSuccess,
            _ => Self::Always,
        })
    }

    fn asks_for(self, outcome: Outcome) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::OnError => outcome != Outcome::Accept,
            Self::OnSuccess => outcome == Outcome::Accept,
        }
    }
}

/// Which ACK, if any, answers a message with this MSH-15 and MSH-16 and this outcome.
pub fn choose_ack(
    accept_ack_type: &str,
    application_ack_type: &str,
    outcome: Outcome,
    mode: AckMode,
) -> Option<AckCode> {
    let original = match outcome {
        Outcome::Accept => AckCode::AA,
        Outcome::Error => AckCode::AE,
        Outcome::Reject => AckCode::AR,
    };
    let accept = AckCondition::parse(accept_ack_type);
    let application = AckCondition::parse(application_ack_type);
    if mode == AckMode::Original || (accept.is_none() && application.is_none()) {
        return Some(original);
    }
    if accept.is_some_and(|c| c.asks_for(outcome)) {
        return Some(match outcome {
            Outcome::Accept => AckCode::CA,
            Outcome::Error => AckCode::CE,
            Outcome::Reject => AckCode::CR,
        });
    }
    application
        .is_some_and(|c| c.asks_for(outcome))
        .then_some(original)
}

/// HL7 table 0357, message error condition codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: segment sequence error (also: no readable message header).
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error.
    DataType,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 204: unknown key identifier (e.g. a patient a merge names is not known as needed).
    UnknownKeyIdentifier,
    /// 207: application internal error.
    ApplicationInternal,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::SegmentSequence => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataType => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEventCode => 201,
            Self::UnsupportedProcessingId => 202,
            Self::UnsupportedVersionId => 203,
            Self::UnknownKeyIdentifier => 204,
            Self::ApplicationInternal => 207,
        }
    }

    /// The table's text for the code.
    pub fn text(self) -> &'static str {
        match self {
            Self::SegmentSequence => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataType => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing ID",
            Self::UnsupportedVersionId => "Unsupported version ID",
            Self::UnknownKeyIdentifier => "Unknown key identifier",
            Self::ApplicationInternal => "Application internal error",
        }
    }
}

/// Where an error is: segment, its occurrence, and field (HL7 ERL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorLocation {
    /// The segment id.
    pub segment: SegmentId,
    /// Which occurrence of that segment, 1-based.
    pub sequence: usize,
    /// The field number, when the error is in one.
    pub field: Option<usize>,
}

impl ErrorLocation {
    /// The location of a parse error, when it can be stated as an ERL: errors in the
    /// header segment (`MSH^1^2`). Elsewhere the segment's occurrence is not known to the
    /// parser, so the position goes into the error text instead.
    pub fn of_parse_error(error: &ParseError) -> Option<ErrorLocation> {
        let segment = error.position.segment_id?;
        (error.position.segment == 1).then_some(ErrorLocation {
            segment,
            sequence: 1,
            field: error.position.field,
        })
    }
}

/// What goes into ERR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckError {
    /// The table 0357 code.
    pub code: ErrorCode,
    /// Where, when known.
    pub location: Option<ErrorLocation>,
    /// A diagnostic for the sender's support staff; it must never hold patient data.
    pub text: String,
}

/// What the receiver says about itself in an ACK.
#[derive(Clone, Copy, Debug)]
pub struct AckOptions<'x> {
    /// Our MSH-3 where the sender left MSH-5 empty (default setting: `HL7IHP`).
    pub application: &'x str,
    /// Our MSH-4 where the sender left MSH-6 empty.
    pub facility: &'x str,
    /// MSH-10 of the ACK: fresh for every ACK.
    pub control_id: &'x str,
    /// MSH-7 of the ACK, an HL7 DTM.
    pub time: &'x str,
}

/// The ACK for a parsed message.
pub fn build_ack(
    message: &Message<'_>,
    code: AckCode,
    error: Option<&AckError>,
    options: &AckOptions<'_>,
) -> Vec<u8> {
    let delimiters = message.delimiters();
    let msh = message.segment_at(0);
    let field = |n: usize| msh.map_or(&b""[..], |msh| msh.field(n).raw());
    let version = field(12);
    let mut out = Writer::new(delimiters, message.raw().len().min(256) + 128);
    // MSH-3/4 of the ACK are MSH-5/6 of the message, ours where the sender left them empty.
    out.header_start();
    out.raw_or_text(field(5), options.application);
    out.separator();
    out.raw_or_text(field(6), options.facility);
    out.separator();
    out.raw(field(3));
    out.separator();
    out.raw(field(4));
    out.separator();
    out.text(options.time);
    out.separator();
    out.separator();
    out.message_type(msh.map_or(&b""[..], |msh| msh.field(9).component(2).raw()));
    out.separator();
    out.text(options.control_id);
    out.separator();
    out.raw(field(11));
    out.separator();
    out.raw(field(12));
    let charset = field(18);
    if !charset.is_empty() {
        out.separators(6);
        out.raw(charset);
    }
    out.msa_and_err(code, field(10), error, modern_err(version));
    out.finish()
}

/// The reject for a frame with no readable MSH: our own minimal header (version 2.5.1,
/// standard delimiters) and MSA-2 = the control id when one could be salvaged, else empty.
pub fn build_reject_without_header(
    control_id: Option<&[u8]>,
    error: &AckError,
    options: &AckOptions<'_>,
) -> Vec<u8> {
    let mut out = Writer::new(Delimiters::STANDARD, 192);
    out.header_start();
    out.text(options.application);
    out.separator();
    out.text(options.facility);
    out.separators(3);
    out.text(options.time);
    out.separators(2);
    out.message_type(b"");
    out.separator();
    out.text(options.control_id);
    out.separator();
    out.text("P");
    out.separator();
    out.text("2.5.1");
    let control_id = control_id.unwrap_or(b"");
    // A salvaged id may hold anything; keep it only when it cannot break the segment.
    let control_id = if control_id.iter().all(|&b| {
        b.is_ascii_graphic() && b != b'|' && b != b'^' && b != b'~' && b != b'\\' && b != b'&'
    }) {
        control_id
    } else {
        b""
    };
    out.msa_and_err(AckCode::AR, control_id, Some(error), true);
    out.finish()
}

/// ERR-2/3/4 exist from v2.5 on; an unreadable version gets the modern form.
fn modern_err(version: &[u8]) -> bool {
    let text = std::str::from_utf8(version).unwrap_or("");
    let mut parts = text.trim().split(['.', '^']);
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    match major {
        Some(major) => (major, minor) >= (2, 5),
        None => true,
    }
}

/// Builds ACK bytes in one set of delimiters.
struct Writer {
    delimiters: Delimiters,
    out: Vec<u8>,
}

impl Writer {
    fn new(delimiters: Delimiters, capacity: usize) -> Self {
        Self {
            delimiters,
            out: Vec::with_capacity(capacity),
        }
    }

    fn header_start(&mut self) {
        self.out.extend_from_slice(b"MSH");
        self.out.push(self.delimiters.field);
        self.out
            .extend_from_slice(self.delimiters.encoding_characters().as_bytes());
        self.separator();
    }

    fn separator(&mut self) {
        self.out.push(self.delimiters.field);
    }

    fn separators(&mut self, n: usize) {
        for _ in 0..n {
            self.separator();
        }
    }

    fn component(&mut self) {
        self.out.push(self.delimiters.component);
    }

    fn raw(&mut self, raw: &[u8]) {
        self.out.extend_from_slice(raw);
    }

    fn text(&mut self, text: &str) {
        self.out
            .extend_from_slice(escape(text, &self.delimiters).as_bytes());
    }

    fn raw_or_text(&mut self, raw: &[u8], fallback: &str) {
        if raw.is_empty() {
            self.text(fallback);
        } else {
            self.raw(raw);
        }
    }

    /// `ACK^<trigger>^ACK`.
    fn message_type(&mut self, trigger: &[u8]) {
        self.out.extend_from_slice(b"ACK");
        self.component();
        self.raw(trigger);
        self.component();
        self.out.extend_from_slice(b"ACK");
    }

    fn location(&mut self, location: &ErrorLocation) {
        self.raw(&location.segment.0);
        self.component();
        self.text(&location.sequence.to_string());
        if let Some(field) = location.field {
            self.component();
            self.text(&field.to_string());
        }
    }

    fn msa_and_err(
        &mut self,
        code: AckCode,
        control_id: &[u8],
        error: Option<&AckError>,
        modern: bool,
    ) {
        self.out.push(b'\r');
        self.out.extend_from_slice(b"MSA");
        self.separator();
        self.text(code.as_str());
        self.separator();
        self.raw(control_id);
        let Some(error) = error else {
            self.out.push(b'\r');
            return;
        };
        if !modern {
            // MSA-3, the text message, is where receivers before v2.5 look.
            self.separator();
            self.text(&error.text);
        }
        self.out.push(b'\r');
        self.out.extend_from_slice(b"ERR");
        self.separator();
        let code = error.code.code().to_string();
        if modern {
            self.separator();
            if let Some(location) = &error.location {
                self.location(location);
            }
            self.separator();
            self.text(&code);
            self.component();
            self.text(error.code.text());
            self.component();
            self.text("HL70357");
            self.separator();
            self.text("E");
            self.separators(4);
            self.text(&error.text);
        } else {
            // ERR-1 (ELD): segment^sequence^field^code&text&HL70357.
            match &error.location {
                Some(location) => {
                    self.raw(&location.segment.0);
                    self.component();
                    self.text(&location.sequence.to_string());
                    self.component();
                    if let Some(field) = location.field {
                        self.text(&field.to_string());
                    }
                }
                None => {
                    self.component();
                    self.component();
                }
            }
            self.component();
            self.text(&code);
            let sub = self.delimiters.subcomponent;
            if let Some(sub) = sub {
                self.out.push(sub);
                self.text(error.code.text());
                self.out.push(sub);
                self.text("HL70357");
            }
        }
        self.out.push(b'\r');
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    const OPTIONS: AckOptions<'static> = AckOptions {
        application: "HL7IHP",
        facility: "",
        control_id: "ACK-1",
        time: "20261126101500+0100",
    };

    fn lines(bytes: &[u8]) -> Vec<String> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .split_terminator('\r')
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn original_and_enhanced_mode() {
        use AckCode::*;
        use Outcome::*;
        let auto = AckMode::Auto;
        assert_eq!(choose_ack("", "", Accept, auto), Some(AA));
        assert_eq!(choose_ack("", "", Reject, auto), Some(AR));
        assert_eq!(choose_ack("AL", "NE", Accept, auto), Some(CA));
        assert_eq!(choose_ack("AL", "NE", Error, auto), Some(CE));
        assert_eq!(choose_ack("NE", "AL", Accept, auto), Some(AA));
        assert_eq!(choose_ack("NE", "NE", Accept, auto), None);
        assert_eq!(choose_ack("ER", "NE", Accept, auto), None);
        assert_eq!(choose_ack("ER", "NE", Reject, auto), Some(CR));
        assert_eq!(choose_ack("SU", "ER", Error, auto), Some(AE));
        assert_eq!(choose_ack("SU", "ER", Accept, auto), Some(CA));
        assert_eq!(choose_ack("", "AL", Accept, auto), Some(AA));
        assert_eq!(choose_ack("NE", "NE", Accept, AckMode::Original), Some(AA));
        assert_eq!(choose_ack("AL", "", Error, AckMode::Original), Some(AE));
        assert_eq!(choose_ack("XX", "", Accept, auto), Some(CA));
    }

    #[test]
    fn accept_uses_the_senders_delimiters_and_swaps_applications() {
        let message = parse(
            b"MSH|^~|GHH LAB|ELAB-3|GHH OE|BLDG4|200202150930||ORU^R01|CNTRL-3456|P|2.4\rPID|||1",
        )
        .unwrap();
        let ack = build_ack(&message, AckCode::AA, None, &OPTIONS);
        assert_eq!(
            lines(&ack),
            [
                "MSH|^~|GHH OE|BLDG4|GHH LAB|ELAB-3|20261126101500+0100||ACK^R01^ACK|ACK-1|P|2.4",
                "MSA|AA|CNTRL-3456",
            ]
        );
        let ack_message = parse(&ack).unwrap();
        assert_eq!(ack_message.get("MSA-2").unwrap(), b"CNTRL-3456");
    }

    #[test]
    fn empty_receiver_gets_our_name_and_charset_is_kept() {
        let message = parse(b"MSH#$%\\&#MON#ICU###2026##ORU$R01#X1#P#2.6###AL#NE##8859/1").unwrap();
        let ack = build_ack(&message, AckCode::CA, None, &OPTIONS);
        assert_eq!(
            lines(&ack),
            [
                "MSH#$%\\&#HL7IHP##MON#ICU#20261126101500+0100##ACK$R01$ACK#ACK-1#P#2.6######8859/1",
                "MSA#CA#X1",
            ]
        );
    }

    #[test]
    fn errors_from_v25_use_err_2_3_4() {
        let message = parse(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01||P|2.5.1").unwrap();
        let error = AckError {
            code: ErrorCode::RequiredFieldMissing,
            location: Some(ErrorLocation {
                segment: SegmentId(*b"MSH"),
                sequence: 1,
                field: Some(10),
            }),
            text: "MSH-10 (message control id) is empty".into(),
        };
        let ack = build_ack(&message, AckCode::AE, Some(&error), &OPTIONS);
        assert_eq!(
            lines(&ack)[1..],
            [
                "MSA|AE|",
                "ERR||MSH^1^10|101^Required field missing^HL70357|E||||MSH-10 (message control id) is empty",
            ]
        );
    }

    #[test]
    fn errors_before_v25_use_err_1_and_msa_3() {
        let message = parse(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|M1|P|2.3.1").unwrap();
        let error = AckError {
            code: ErrorCode::ApplicationInternal,
            location: None,
            text: "store unavailable | try again".into(),
        };
        let ack = build_ack(&message, AckCode::AR, Some(&error), &OPTIONS);
        assert_eq!(
            lines(&ack)[1..],
            [
                "MSA|AR|M1|store unavailable \\F\\ try again",
                "ERR|^^^207&Application internal error&HL70357",
            ]
        );
    }

    #[test]
    fn reject_without_header() {
        let error = AckError {
            code: ErrorCode::SegmentSequence,
            location: None,
            text: "does not start with an MSH segment at byte 0".into(),
        };
        let ack = build_reject_without_header(None, &error, &OPTIONS);
        assert_eq!(
            lines(&ack),
            [
                "MSH|^~\\&|HL7IHP||||20261126101500+0100||ACK^^ACK|ACK-1|P|2.5.1",
                "MSA|AR|",
                "ERR|||100^Segment sequence error^HL70357|E||||does not start with an MSH segment at byte 0",
            ]
        );
        let ack = build_reject_without_header(Some(b"ID|1"), &error, &OPTIONS);
        assert_eq!(lines(&ack)[1], "MSA|AR|");
        let ack = build_reject_without_header(Some(b"ID-7"), &error, &OPTIONS);
        assert_eq!(lines(&ack)[1], "MSA|AR|ID-7");
        assert!(parse(&ack).is_ok());
    }

    #[test]
    fn version_decides_the_err_form() {
        assert!(modern_err(b"2.5"));
        assert!(modern_err(b"2.5.1"));
        assert!(modern_err(b"2.6"));
        assert!(modern_err(b""));
        assert!(!modern_err(b"2.4"));
        assert!(!modern_err(b"2.3.1"));
        assert!(modern_err(b"3"));
    }
}
