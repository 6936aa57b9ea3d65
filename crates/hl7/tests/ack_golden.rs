//! Golden ACK bytes for the project's sample messages: every outcome, both modes, and the
//! minimal reject for a frame without a readable MSH. `UPDATE_EXPECT=1` rewrites the file.

use std::fmt::Write as _;
use std::path::PathBuf;

use hl7::ack::{
    AckError, AckMode, AckOptions, ErrorCode, ErrorLocation, Outcome, build_ack,
    build_reject_without_header, choose_ack,
};
use hl7::extract::extract;

#[path = "support/golden.rs"]
mod golden;
use golden::check_golden;

const OPTIONS: AckOptions<'static> = AckOptions {
    application: "HL7IHP",
    facility: "",
    control_id: "ACK-0001",
    time: "20261126101500+0100",
};

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_terminator('\r')
        .map(|line| format!("    {line}\n"))
        .collect()
}

fn render() -> String {
    let mut out = String::new();
    let mut names: Vec<_> = std::fs::read_dir(samples_dir())
        .expect("samples folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|name| name.ends_with(".hl7"))
        .collect();
    names.sort();
    for name in names {
        let bytes = std::fs::read(samples_dir().join(&name)).expect("sample");
        match hl7::parse_batch(&bytes) {
            Err(error) => {
                let ack_error = AckError {
                    code: ErrorCode::SegmentSequence,
                    location: ErrorLocation::of_parse_error(&error),
                    text: error.to_string(),
                };
                let ack = build_reject_without_header(None, &ack_error, &OPTIONS);
                writeln!(out, "{name}: unreadable\n{}", show(&ack)).unwrap();
            }
            Ok(batch) => {
                for (index, message) in batch.messages().iter().enumerate() {
                    let header = extract(message).header;
                    for mode in [AckMode::Auto, AckMode::Original] {
                        for outcome in [Outcome::Accept, Outcome::Error, Outcome::Reject] {
                            let code = choose_ack(
                                &header.accept_ack_type,
                                &header.application_ack_type,
                                outcome,
                                mode,
                            );
                            let title = format!("{name} #{} {mode:?} {outcome:?}", index + 1);
                            let Some(code) = code else {
                                writeln!(out, "{title}: no ACK\n").unwrap();
                                continue;
                            };
                            let error = match outcome {
                                Outcome::Accept => None,
                                Outcome::Error => Some(AckError {
                                    code: ErrorCode::RequiredFieldMissing,
                                    location: Some(ErrorLocation {
                                        segment: hl7::SegmentId(*b"MSH"),
                                        sequence: 1,
                                        field: Some(10),
                                    }),
                                    text: "MSH-10 is empty".into(),
                                }),
                                Outcome::Reject => Some(AckError {
                                    code: ErrorCode::ApplicationInternal,
                                    location: None,
                                    text: "store unavailable, retry later".into(),
                                }),
                            };
                            let ack = build_ack(message, code, error.as_ref(), &OPTIONS);
                            let back = hl7::parse(&ack).expect("an ACK parses");
                            assert_eq!(back.get("MSA-1"), Some(code.as_str().as_bytes()));
                            assert_eq!(back.get("MSA-2"), message.get("MSH-10"));
                            assert_eq!(back.delimiters(), message.delimiters());
                            writeln!(out, "{title}:\n{}", show(&ack)).unwrap();
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn acks_match_golden_file() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/acks.txt");
    check_golden(&path, &render());
}
