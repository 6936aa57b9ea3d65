//! ACK builder on any input: for every code, with and without an error of arbitrary text, the
//! ACK of a parsed message parses back, in the sender's delimiters, with MSA-1 = the code,
//! MSA-2 = the original MSH-10 and the header fields swapped; for input that does not parse,
//! the reject without a header parses back with MSA-1 = AR; escaping round-trips.
#![no_main]

use std::borrow::Cow;

use hl7::ack::{
    AckCode, AckError, AckMode, AckOptions, ErrorCode, ErrorLocation, Outcome, build_ack,
    build_reject_without_header, choose_ack,
};
use hl7::escape::{escape, unescape};
use hl7::{Delimiters, Message, SegmentId, parse};
use libfuzzer_sys::fuzz_target;

const CODES: [AckCode; 6] = [
    AckCode::AA,
    AckCode::AE,
    AckCode::AR,
    AckCode::CA,
    AckCode::CE,
    AckCode::CR,
];

const ERROR_CODES: [ErrorCode; 9] = [
    ErrorCode::SegmentSequence,
    ErrorCode::RequiredFieldMissing,
    ErrorCode::DataType,
    ErrorCode::TableValueNotFound,
    ErrorCode::UnsupportedMessageType,
    ErrorCode::UnsupportedEventCode,
    ErrorCode::UnsupportedProcessingId,
    ErrorCode::UnsupportedVersionId,
    ErrorCode::ApplicationInternal,
];

/// A slice of the input picked by two of its bytes, at most 32 bytes long.
fn pick(data: &[u8], at: usize) -> &[u8] {
    if data.len() < at + 2 {
        return b"";
    }
    let start = usize::from(data[at]) % data.len();
    let len = usize::from(data[at + 1]) % 33;
    &data[start..(start + len).min(data.len())]
}

fuzz_target!(|data: &[u8]| {
    // Texts from the input: any UTF-8, CR, LF and delimiters included, to exercise escaping.
    let error_text = String::from_utf8_lossy(&data[..data.len().min(200)]);
    let application = String::from_utf8_lossy(pick(data, 0));
    let control_id = String::from_utf8_lossy(pick(data, 2));
    let options = AckOptions {
        application: &application,
        facility: "FAC",
        control_id: &control_id,
        time: "20261126101500+0100",
    };
    let error_code =
        ERROR_CODES[usize::from(data.first().copied().unwrap_or(0)) % ERROR_CODES.len()];

    match parse(data) {
        Ok(message) => {
            check_escape(&error_text, &message.delimiters());
            check_escape(&control_id, &message.delimiters());
            for code in CODES {
                let errors = [
                    None,
                    Some(AckError {
                        code: error_code,
                        location: None,
                        text: error_text.clone().into_owned(),
                    }),
                    Some(AckError {
                        code: error_code,
                        location: Some(ErrorLocation {
                            segment: SegmentId(*b"MSH"),
                            sequence: 1,
                            field: Some(10),
                        }),
                        text: error_text.clone().into_owned(),
                    }),
                ];
                for error in &errors {
                    check_ack(&message, code, error.as_ref(), &options);
                }
            }
            check_choose_ack(&message);
        }
        Err(parse_error) => {
            check_escape(&error_text, &Delimiters::STANDARD);
            let error = AckError {
                code: error_code,
                location: ErrorLocation::of_parse_error(&parse_error),
                text: error_text.into_owned(),
            };
            for salvaged in [None, Some(pick(data, 4))] {
                let ack = build_reject_without_header(salvaged, &error, &options);
                let back = match parse(&ack) {
                    Ok(back) => back,
                    Err(err) => panic!(
                        "reject {:?} does not parse: {err}",
                        String::from_utf8_lossy(&ack)
                    ),
                };
                assert_eq!(back.delimiters(), Delimiters::STANDARD);
                assert_eq!(back.get("MSA-1"), Some(&b"AR"[..]));
                // MSA-2 is the salvaged id when it cannot break the segment, else empty.
                let msa2 = back.get("MSA-2").expect("the reject has an MSA");
                let id = salvaged.unwrap_or(b"");
                let safe = id
                    .iter()
                    .all(|&b| b.is_ascii_graphic() && !b"|^~\\&".contains(&b));
                assert_eq!(msa2, if safe { id } else { b"" }, "MSA-2 of the reject");
                assert_eq!(
                    back.get("MSH-10"),
                    Some(escape(&control_id, &Delimiters::STANDARD).as_bytes())
                );
            }
        }
    }
});

/// The ACK of a parsed message parses back and says what it must.
fn check_ack(
    message: &Message<'_>,
    code: AckCode,
    error: Option<&AckError>,
    options: &AckOptions<'_>,
) {
    let ack = build_ack(message, code, error, options);
    // The original's fields are copied raw into the ACK; they come from one segment line, so
    // they cannot hold CR or LF and cannot end the ACK's segments early.
    let field = |n: usize| -> &[u8] {
        message
            .segment_at(0)
            .map_or(&b""[..], |msh| msh.field(n).raw())
    };
    for n in [3, 4, 5, 6, 9, 10, 11, 12, 18] {
        assert!(
            !field(n).contains(&b'\r') && !field(n).contains(&b'\n'),
            "MSH-{n} of a parsed message holds a line end"
        );
    }
    let back = match parse(&ack) {
        Ok(back) => back,
        Err(err) => panic!(
            "ACK {:?} of {:?} does not parse: {err}",
            String::from_utf8_lossy(&ack),
            String::from_utf8_lossy(message.raw())
        ),
    };
    let delimiters = message.delimiters();
    assert_eq!(
        back.delimiters(),
        delimiters,
        "the ACK uses the sender's delimiters"
    );
    let back_field = |segment: &str, n: usize| -> &[u8] {
        back.segment(segment).map_or(&b""[..], |s| s.field(n).raw())
    };
    assert_eq!(back_field("MSA", 1), code.as_str().as_bytes(), "MSA-1");
    assert_eq!(
        back_field("MSA", 2),
        field(10),
        "MSA-2 is the original MSH-10"
    );
    // MSH-3/4 and MSH-5/6 swap; an empty MSH-5 becomes our application.
    let ours = escape(options.application, &delimiters);
    let expected_3: &[u8] = if field(5).is_empty() {
        ours.as_bytes()
    } else {
        field(5)
    };
    assert_eq!(back_field("MSH", 3), expected_3, "ACK MSH-3");
    let ours = escape(options.facility, &delimiters);
    let expected_4: &[u8] = if field(6).is_empty() {
        ours.as_bytes()
    } else {
        field(6)
    };
    assert_eq!(back_field("MSH", 4), expected_4, "ACK MSH-4");
    assert_eq!(back_field("MSH", 5), field(3), "ACK MSH-5");
    assert_eq!(back_field("MSH", 6), field(4), "ACK MSH-6");
    assert_eq!(
        back_field("MSH", 10),
        escape(options.control_id, &delimiters).as_bytes(),
        "ACK MSH-10"
    );
    assert_eq!(back_field("MSH", 11), field(11), "ACK MSH-11");
    assert_eq!(back_field("MSH", 12), field(12), "ACK MSH-12");
    assert_eq!(back_field("MSH", 18), field(18), "ACK MSH-18");
    let segments: Vec<String> = back.segments().map(|s| s.id().to_string()).collect();
    let expected: &[&str] = if error.is_some() {
        &["MSH", "MSA", "ERR"]
    } else {
        &["MSH", "MSA"]
    };
    assert_eq!(segments, expected, "ACK segments");
}

/// `choose_ack` on the message's MSH-15/16: original mode always answers.
fn check_choose_ack(message: &Message<'_>) {
    let text = |path: &str| message.get_text(path).unwrap_or(Cow::Borrowed(""));
    let accept = text("MSH-15");
    let application = text("MSH-16");
    for outcome in [Outcome::Accept, Outcome::Error, Outcome::Reject] {
        let original = choose_ack(&accept, &application, outcome, AckMode::Original);
        let code = original.expect("original mode always answers");
        assert_eq!(code.outcome(), outcome);
        if let Some(code) = choose_ack(&accept, &application, outcome, AckMode::Auto) {
            assert_eq!(code.outcome(), outcome);
            assert_eq!(AckCode::parse(code.as_str()), Some(code));
        }
    }
}

/// With an escape character, unescaping the escaped text gives the text back; the escaped
/// text never holds CR or LF, and holds a delimiter only as the escape character.
fn check_escape(text: &str, delimiters: &Delimiters) {
    let escaped = escape(text, delimiters);
    let bytes = escaped.as_bytes();
    assert!(
        !bytes.contains(&b'\r') && !bytes.contains(&b'\n'),
        "escaped text holds a line end"
    );
    for delimiter in [
        Some(delimiters.field),
        Some(delimiters.component),
        Some(delimiters.repetition),
        delimiters.subcomponent,
        delimiters.truncation,
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            !bytes.contains(&delimiter),
            "escaped text holds the delimiter {:?}",
            char::from(delimiter)
        );
    }
    if delimiters.escape.is_some() {
        // Characters beyond one byte must pass through untouched: an earlier `escape`
        // wrote them as `\P\` (found by this target with the single byte 0x96).
        let escaped = escape(&text, delimiters);
        let back = unescape(escaped.as_bytes(), delimiters);
        assert_eq!(
            &back[..],
            text.as_bytes(),
            "escape then unescape of {text:?}"
        );
    }
}
