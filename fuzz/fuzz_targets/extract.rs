//! Extraction on any parsed message: `extract` never panics and every observation, the header,
//! the patient and the location can be formatted; `Header::missing_required` never panics; and
//! every time value extracted prints to an HL7 string that parses back to the same value.
#![no_main]

use hl7::extract::{self, Extract, sex_name};
use hl7::timestamp::Timestamp;
use hl7::{Message, parse, parse_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = parse(data) {
        check(&message);
    }
    if let Ok(batch) = parse_batch(data) {
        for message in batch.messages() {
            check(message);
        }
    }
    // The whole input as a DTM: mostly an error, which must not panic either.
    if let Ok(time) = Timestamp::parse_bytes(data) {
        check_time(&time);
    }
});

fn check(message: &Message<'_>) {
    let extract: Extract<'_> = extract::extract(message);
    let _ = format!("{:?}", extract.header);
    let _ = extract.header.missing_required();
    let _ = extract.is_patient_update();
    if let Some(time) = &extract.header.time {
        check_time(time);
    }
    if let Some(patient) = &extract.patient {
        let _ = format!("{patient:?}");
        let _ = patient.primary_id();
        let _ = patient.name.display();
        let _ = sex_name(&patient.sex);
    }
    let _ = format!("{:?}", extract.location);
    let n_obx = message.segments_by_id("OBX").count();
    assert_eq!(extract.observations.len(), n_obx, "one observation per OBX");
    for observation in &extract.observations {
        let _ = format!("{observation:?}");
        let segment = message
            .segment_at(observation.segment_index)
            .expect("an observation's segment index is in the message");
        assert_eq!(segment.id().as_str(), "OBX");
        if let Some(time) = &observation.time {
            check_time(time);
        }
        if let Some(numeric) = observation.numeric {
            let _ = numeric.to_string();
        }
    }
    let _ = format!("{extract:?}");
}

/// A parsed time formats, converts, and prints to an HL7 string that reads back the same.
fn check_time(time: &Timestamp) {
    let _ = time.to_iso_string();
    let _ = time.to_civil();
    let _ = time.precision();
    assert_eq!(
        time.to_jiff_timestamp().is_some(),
        time.offset().is_some(),
        "a time with an offset is an instant: {time:?}"
    );
    let hl7 = time.to_hl7_string();
    match Timestamp::parse(&hl7) {
        Ok(back) => assert_eq!(&back, time, "{hl7} reads back differently"),
        Err(err) => panic!("{hl7}, printed from {time:?}, does not parse: {err}"),
    }
}
