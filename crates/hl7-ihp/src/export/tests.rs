//! The JSON splice against a full render; the exporter itself is tested end to end through
//! the binary (tests/it/patients.rs, tests/it/crash.rs).

use proptest::prelude::*;

use super::json::splice;
use crate::documents::patient::tests::{glucose, prototype_patient};
use crate::documents::patient::{
    Fields, RecordSource, render_document, write_header, write_record,
};
use crate::store::{ObservationRow, PatientRecords};

fn row(message_id: i64, index: u32, value: &str) -> ObservationRow {
    ObservationRow {
        observation: glucose(index, value),
        message_id,
        control_id: format!("C-{message_id}"),
        received_at: jiff::Timestamp::from_second(1_700_000_000 + message_id).unwrap(),
        device: "LAB".into(),
    }
}

/// Records of messages `1..=n_messages`, `per_message` each, newest first as the store gives.
fn history(n_messages: i64, per_message: u32) -> Vec<ObservationRow> {
    let mut rows = Vec::new();
    for id in (1..=n_messages).rev() {
        for index in 0..per_message {
            rows.push(row(id, index, &format!("{}", id * 10 + i64::from(index))));
        }
    }
    rows
}

fn document(rows: &[ObservationRow], cap: Option<usize>, fields: Fields) -> Vec<u8> {
    let mut records = PatientRecords {
        patient: prototype_patient(),
        records: rows.to_vec(),
    };
    if let Some(cap) = cap {
        records.records.truncate(cap);
    }
    render_document(&records, fields)
}

/// The old file plus messages `old+1..=new`, spliced.
fn spliced(old: i64, new: i64, per_message: u32, cap: Option<usize>, fields: Fields) -> Vec<u8> {
    let old_file = document(&history(old, per_message), cap, fields);
    let mut blocks = Vec::new();
    let mut ends = Vec::new();
    // Oldest message first, OBX order within one, as the feed gives them.
    for id in old + 1..=new {
        for index in 0..per_message {
            if index > 0 {
                blocks.extend_from_slice(b",\n");
            }
            let row = row(id, index, &format!("{}", id * 10 + i64::from(index)));
            write_record(&mut blocks, RecordSource::from(&row), fields);
        }
        ends.push((blocks.len(), per_message as usize));
    }
    let mut header = Vec::new();
    write_header(&mut header, &prototype_patient(), fields);
    let n_new = (new - old) as usize * per_message as usize;
    match splice(&old_file, &header, &blocks, &ends, cap) {
        Some(bytes) => bytes,
        None => {
            assert!(cap.is_some_and(|cap| n_new >= cap), "refused to splice");
            document(&history(new, per_message), cap, fields)
        }
    }
}

#[test]
fn the_layout_is_one_record_a_line_and_valid_json() {
    let file = String::from_utf8(document(&history(2, 1), None, Fields::Prototype)).unwrap();
    assert_eq!(
        file,
        "{\"PatientInfo\":{\"PatientID\":\"555-44-4444\",\"PatientName\":\"EVE EVERYWOMAN\",\"DateOfBirth\":\"196203520\",\"Sex\":\"Female\"},\"Records\":[\n\
         {\"Timestamp\":\"2002-02-15T07:30:00\",\"ObservationID\":\"1554-5\",\"ObservationValue\":\"20\",\"Units\":\"mg/dl\",\"ReferenceRange\":\"70_105\",\"AbnormalFlags\":\"H\"},\n\
         {\"Timestamp\":\"2002-02-15T07:30:00\",\"ObservationID\":\"1554-5\",\"ObservationValue\":\"10\",\"Units\":\"mg/dl\",\"ReferenceRange\":\"70_105\",\"AbnormalFlags\":\"H\"}\n\
         ]}\n"
    );
    let empty = String::from_utf8(document(&[], None, Fields::Full)).unwrap();
    assert!(empty.ends_with("\"Records\":[\n]}\n"), "{empty}");
    let value: serde_json::Value = serde_json::from_str(&empty).unwrap();
    assert_eq!(value["PatientInfo"]["Identifiers"], "555-44-4444");
    assert_eq!(value["Records"].as_array().unwrap().len(), 0);
}

#[test]
fn a_splice_equals_a_full_render_at_the_edges() {
    for fields in [Fields::Prototype, Fields::Full] {
        for (old, new, per, cap) in [
            (0, 1, 1, None),
            (0, 0, 1, Some(3)),
            (3, 3, 2, Some(3)),
            (1, 5, 7, Some(7)),
            (2, 3, 7, Some(7)),
            (5, 9, 2, Some(5)),
            (5, 6, 3, Some(1)),
            (4, 4, 0, Some(2)),
            (10, 12, 3, None),
        ] {
            assert_eq!(
                String::from_utf8(spliced(old, new, per, cap, fields)).unwrap(),
                String::from_utf8(document(&history(new, per), cap, fields)).unwrap(),
                "old {old}, new {new}, {per} per message, cap {cap:?}, {fields:?}"
            );
        }
    }
}

#[test]
fn a_file_not_in_the_layout_is_not_spliced() {
    let mut header = Vec::new();
    write_header(&mut header, &prototype_patient(), Fields::Prototype);
    for old in [
        &b""[..],
        b"{}\n",
        b"{\n  \"PatientInfo\": {}\n}\n",
        b"{\"PatientInfo\":{},\"Records\":[\n{\"a\":1},\n",
    ] {
        assert_eq!(splice(old, &header, b"", &[], None), None, "{old:?}");
    }
}

proptest! {
    #[test]
    fn any_splice_equals_a_full_render(
        old in 0i64..30,
        more in 0i64..30,
        per in 0u32..8,
        cap in proptest::option::of(1usize..60),
        full in any::<bool>(),
    ) {
        let fields = if full { Fields::Full } else { Fields::Prototype };
        prop_assert_eq!(
            spliced(old, old + more, per, cap, fields),
            document(&history(old + more, per), cap, fields)
        );
    }
}
