//! `--timezone`, end to end: times without an offset take MSH-7's, else the site zone's at
//! that local time (winter and summer), in the patient file and the API; without the setting
//! they stay as written.

use std::path::Path;

use crate::common::{Client, Receiver, ack_field, run, start, wait_until};
use serde_json::Value;

/// An ORU with MSH-7 and OBX-14 as given, one heart rate for patient `TZ-1`.
fn oru(control_id: &str, msh7: &str, obx14: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|TZDEV|WARD|HL7IHP|IHP|{msh7}||ORU^R01|{control_id}|P|2.5\r\
         PID|||TZ-1^^^HOSP^MR||Doe^Jane||19700101|F\r\
         OBX|1|NM|8867-4^Heart rate^LN||72|/min|60-100|N|||F|||{obx14}\r"
    )
    .into_bytes()
}

/// Winter and summer without offsets, and one whose MSH-7 has an offset of +05:30.
fn messages() -> [Vec<u8>; 3] {
    [
        oru("TZ-WINTER", "20260115083100", "20260115083000"),
        oru("TZ-SUMMER", "20260715083100", "20260715083000"),
        oru("TZ-MSH7", "20260716090000+0530", "20260716083000"),
    ]
}

/// Sends the three messages and returns the patient file's `Timestamp`s, sorted.
fn timestamps_in_file(receiver: &Receiver) -> Vec<String> {
    let mut client = Client::connect(receiver.mllp);
    for message in messages() {
        assert_eq!(ack_field(&client.exchange(&message), "MSA-1"), "AA");
    }
    let path = receiver.data_dir.join("patients").join("patient_TZ-1.json");
    let mut timestamps = Vec::new();
    wait_until("the patient file to hold three records", || {
        timestamps = records(&path);
        timestamps.len() == 3
    });
    timestamps.sort();
    timestamps
}

fn records(path: &Path) -> Vec<String> {
    let Some(document) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
    else {
        return Vec::new();
    };
    document["Records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|record| record["Timestamp"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_site_zone_gives_times_without_an_offset_the_right_one() {
    let (_dir, receiver) = start(&["--timezone", "Europe/Zurich", "--json-min-interval", "0s"]);
    assert_eq!(
        timestamps_in_file(&receiver),
        [
            "2026-01-15T08:30:00+01:00",
            "2026-07-15T08:30:00+02:00",
            "2026-07-16T08:30:00+05:30",
        ]
    );
    // The API's observed times are the same, RFC 3339 instants.
    let (status, body) = receiver.http_get("/api/v1/patients/TZ-1/observations");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let mut instants: Vec<jiff::Timestamp> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["observed_at"].as_str().unwrap().parse().unwrap())
        .collect();
    instants.sort();
    let expected: Vec<jiff::Timestamp> = [
        "2026-01-15T07:30:00Z",
        "2026-07-15T06:30:00Z",
        "2026-07-16T03:00:00Z",
    ]
    .iter()
    .map(|t| t.parse().unwrap())
    .collect();
    assert_eq!(instants, expected);
}

#[test]
fn without_a_zone_times_stay_as_written() {
    let (_dir, receiver) = start(&["--json-min-interval", "0s"]);
    assert_eq!(
        timestamps_in_file(&receiver),
        [
            "2026-01-15T08:30:00",
            "2026-07-15T08:30:00",
            "2026-07-16T08:30:00",
        ]
    );
}

#[test]
fn an_unknown_zone_exits_2_naming_the_setting() {
    let (code, _, stderr) = run(&["receive", "--timezone", "Europe/Atlantis"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`timezone`"), "{stderr}");
    assert!(stderr.contains("IANA time zone"), "{stderr}");
    assert!(
        !stderr.contains("Atlantis"),
        "the value is not repeated: {stderr}"
    );
}
