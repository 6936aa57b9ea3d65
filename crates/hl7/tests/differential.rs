//! Differential test: our parser and hl7kit must split generated messages the same way.
//!
//! The generator writes messages with the standard delimiters `|^~\&`, CR terminators, segment
//! ids from a fixed set and fields of repetitions, components and subcomponents of printable
//! ASCII, some holding escape sequences. For every segment, field, repetition, component and
//! subcomponent the test compares the number of parts, the raw bytes and the text with escapes
//! decoded.
//!
//! Where the two libraries mean different things, the generator stays out of the way, on
//! purpose and only there:
//! - hl7kit trims ASCII whitespace from both ends of every line; ours keeps it, as a trailing
//!   space is part of the last value. Generated lines never end in a space.
//! - hl7kit takes a second MSH as an ordinary segment; ours refuses it (use `parse_batch`).
//!   The generated ids exclude MSH and the batch segments.
//! - hl7kit accepts any three letters or digits as a segment id; ours wants a letter first.
//!   The generated ids are all valid for both.
//! - hl7kit returns `None` for field 0 and for parts past the last; ours returns empty parts.
//!   The test compares counts and walks only the parts that exist.
//! - `\Xhh…\` decodes to bytes that ours reads through the message's charset (UTF-8, else
//!   Windows-1252) and hl7kit reads as lossy UTF-8, one sequence at a time; they differ for
//!   bytes that are not whole UTF-8 characters inside one sequence. Generated hex sequences
//!   are ASCII or whole UTF-8 characters.
//! - `\P\` (the v2.7 truncation character) decodes in ours only when MSH-2 declares a fifth
//!   character; the generated MSH-2 has four, so both keep it as text.

use proptest::prelude::*;

/// Segment ids that are neither MSH nor batch envelope segments.
const SEGMENT_IDS: &[&str] = &[
    "PID", "PV1", "OBR", "OBX", "NTE", "EVN", "NK1", "AL1", "ORC", "ZXY", "Z01",
];

/// Escape sequences, understood (`\F\`, `\X41\`, …) or kept as text (`\H\`, `\Zxx\`).
const ESCAPES: &[&str] = &[
    "\\F\\",
    "\\S\\",
    "\\T\\",
    "\\R\\",
    "\\E\\",
    "\\.br\\",
    "\\X41\\",
    "\\X0D0A\\",
    "\\XC3A9\\",
    "\\H\\",
    "\\N\\",
    "\\P\\",
    "\\Zab\\",
    "\\.sp2\\",
];

/// Printable ASCII without the delimiters `|^~\&`, chosen from a list rather than filtered
/// so that long runs (`PROPTEST_CASES=100000`) never hit proptest's limit on rejects.
fn plain_char() -> impl Strategy<Value = char> {
    let chars: Vec<char> = (0x20u8..=0x7e)
        .filter(|b| !b"|^~\\&".contains(b))
        .map(char::from)
        .collect();
    proptest::sample::select(chars)
}

/// A subcomponent: text, now and then with an escape sequence or a lone escape character.
fn subcomponent() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => proptest::collection::vec(plain_char(), 0..6).prop_map(String::from_iter),
        1 => proptest::sample::select(ESCAPES).prop_map(str::to_owned),
        // An escape character with no closing one is text in both.
        1 => Just("\\".to_owned()),
    ];
    proptest::collection::vec(piece, 0..3).prop_map(|pieces| pieces.concat())
}

fn joined(
    parts: impl Strategy<Value = String>,
    max: usize,
    separator: &'static str,
) -> impl Strategy<Value = String> {
    proptest::collection::vec(parts, 1..=max).prop_map(move |parts| parts.join(separator))
}

fn field() -> impl Strategy<Value = String> {
    let component = joined(subcomponent(), 3, "&");
    let repetition = joined(component, 4, "^");
    prop_oneof![
        // Many fields are empty or hold one plain value.
        2 => Just(String::new()),
        3 => subcomponent(),
        5 => joined(repetition, 3, "~"),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    let fields = proptest::collection::vec(field(), 0..12);
    (proptest::sample::select(SEGMENT_IDS), fields).prop_map(|(id, fields)| {
        let mut line = id.to_owned();
        for field in fields {
            line.push('|');
            line.push_str(&field);
        }
        line
    })
}

/// A message: MSH with random fields from MSH-3 on, then up to eight segments, each line
/// ended by CR and without trailing spaces (see the module comment).
fn message() -> impl Strategy<Value = String> {
    let msh = proptest::collection::vec(field(), 0..20).prop_map(|fields| {
        let mut line = "MSH|^~\\&".to_owned();
        for field in fields {
            line.push('|');
            line.push_str(&field);
        }
        line
    });
    (msh, proptest::collection::vec(segment(), 0..8)).prop_map(|(msh, segments)| {
        let mut out = String::new();
        for line in std::iter::once(msh).chain(segments) {
            out.push_str(line.trim_end_matches(' '));
            out.push('\r');
        }
        out
    })
}

/// Compares both parses of `input` part by part; the error names the first difference.
fn compare(input: &str) -> Result<(), TestCaseError> {
    let ours = hl7::parse(input.as_bytes())
        .map_err(|error| TestCaseError::fail(format!("ours refused it: {error}")))?;
    let theirs = hl7kit::Message::parse(input)
        .map_err(|error| TestCaseError::fail(format!("hl7kit refused it: {error}")))?;
    prop_assert_eq!(ours.segment_count(), theirs.segment_count());
    for (segment, their_segment) in ours.segments().zip(theirs.segments()) {
        let at = segment.index();
        prop_assert_eq!(
            segment.id().to_string(),
            their_segment.name(),
            "segment {}",
            at
        );
        prop_assert_eq!(
            segment.field_count(),
            their_segment.field_count(),
            "segment {}",
            at
        );
        for (field, their_field) in segment.fields().zip(their_segment.fields()) {
            let at = format!("{}-{}", segment.id(), their_field.number());
            prop_assert_eq!(field.raw(), their_field.value().as_bytes(), "{}", at);
            prop_assert_eq!(field.text(), their_field.decoded(), "{} text", at);
            let repetitions: Vec<_> = field.repetitions().collect();
            prop_assert_eq!(repetitions.len(), their_field.repetition_count(), "{}", at);
            for (repetition, their_repetition) in repetitions.iter().zip(their_field.repetitions())
            {
                let at = format!("{at}[{}]", their_repetition.index());
                prop_assert_eq!(
                    repetition.raw(),
                    their_repetition.value().as_bytes(),
                    "{}",
                    at
                );
                prop_assert_eq!(repetition.text(), their_repetition.decoded(), "{} text", at);
                let components: Vec<_> = repetition.components().collect();
                prop_assert_eq!(
                    components.len(),
                    their_repetition.component_count(),
                    "{}",
                    at
                );
                for (component, their_component) in
                    components.iter().zip(their_repetition.components())
                {
                    let at = format!("{at}.{}", their_component.index());
                    prop_assert_eq!(
                        component.raw(),
                        their_component.value().as_bytes(),
                        "{}",
                        at
                    );
                    prop_assert_eq!(component.text(), their_component.decoded(), "{} text", at);
                    let subcomponents: Vec<_> = component.subcomponents().collect();
                    prop_assert_eq!(
                        subcomponents.len(),
                        their_component.subcomponent_count(),
                        "{}",
                        at
                    );
                    for (subcomponent, their_subcomponent) in
                        subcomponents.iter().zip(their_component.subcomponents())
                    {
                        let at = format!("{at}.{}", their_subcomponent.index());
                        prop_assert_eq!(
                            subcomponent.raw(),
                            their_subcomponent.value().as_bytes(),
                            "{}",
                            at
                        );
                        prop_assert_eq!(
                            subcomponent.text(),
                            their_subcomponent.decoded(),
                            "{} text",
                            at
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn ours_and_hl7kit_split_messages_alike(input in message()) {
        compare(&input)?;
    }
}

/// A fixed message through the same comparison, so a broken generator cannot hide a test that
/// no longer compares anything.
#[test]
fn a_known_message_compares_equal() {
    let input = "MSH|^~\\&|MONITOR^0012A3FFFE45B6C7^EUI-64||||20261126101500+0100||ORU^R01^ORU_R01|1|P|2.6\r\
                 PID|||4711^^^HOSP&1.2.3&ISO^MR~X^^^Y||Doe\\S\\Smith^Jane\r\
                 OBX|1|ST|0^MDC_X^MDC|1.2.1.1|a\\F\\b\\.br\\c\\XC3A9\\||||||R\r";
    compare(input).unwrap();
    let ours = hl7::parse(input.as_bytes()).unwrap();
    assert_eq!(ours.get_text("OBX-5").unwrap(), "a|b\nc\u{e9}");
    assert_eq!(ours.get("PID-3[1].4.2").unwrap(), b"1.2.3");
}
